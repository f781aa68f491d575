"""Pictures: training curves, confusion matrix, most confident mistakes."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from PIL import Image

from keras_cifar_resnet.reporting import plots

LOG_WITH_VALIDATION = """\
epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds
0,1.9,0.30,1.8,0.35,0.1,12.0
1,1.4,0.50,1.3,0.52,0.1,11.5
2,1.1,0.60,1.2,0.58,0.05,11.7
"""
LOG_WITHOUT_VALIDATION = """\
epoch,loss,accuracy,val_loss,val_accuracy,learning_rate
0,1.9,0.30,,,0.1
1,1.4,0.50,,,0.1
"""


def _png_size(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_read_training_log_turns_empty_cells_into_nan(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text(LOG_WITHOUT_VALIDATION)
    columns = plots.read_training_log(log)
    np.testing.assert_array_equal(columns["loss"], [1.9, 1.4])
    assert all(math.isnan(v) for v in columns["val_loss"])
    assert "seconds" not in columns


def test_empty_log_is_refused(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("")
    with pytest.raises(ValueError, match="empty"):
        plots.read_training_log(log)


@pytest.mark.parametrize("text", [LOG_WITH_VALIDATION, LOG_WITHOUT_VALIDATION])
def test_training_curves(tmp_path, text):
    log = tmp_path / "log.csv"
    log.write_text(text)
    written = plots.plot_training_curves(log, tmp_path / "sub" / "curves.png")
    assert written == tmp_path / "sub" / "curves.png"
    width, height = _png_size(written)
    assert width > 2 * height > 300


def test_a_failed_drawing_leaves_the_previous_picture(tmp_path, monkeypatch):
    """Half a PNG must never replace a good one (a full disk, a crash)."""
    from matplotlib.figure import Figure

    from keras_cifar_resnet.training.run_folder import WriteError

    log = tmp_path / "log.csv"
    log.write_text(LOG_WITH_VALIDATION)
    picture = plots.plot_training_curves(log, tmp_path / "curves.png")
    before = picture.read_bytes()

    def half_then_full_disk(self, path, **kwargs):
        with open(path, "wb") as file:
            file.write(before[: len(before) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", half_then_full_disk)
    with pytest.raises(WriteError, match="No space left"):
        plots.plot_training_curves(log, picture)
    assert picture.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "log.csv"]


def test_curves_without_validation_columns(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("epoch,loss,accuracy\n0,2.0,0.2\n1,1.5,0.4\n")
    assert _png_size(plots.plot_training_curves(log, tmp_path / "c.png"))


def test_confusion_matrix_picture(tmp_path):
    counts = np.diag([5, 6, 7]) + 1
    written = plots.plot_confusion_matrix(
        counts, ["cat", "dog", "frog"], tmp_path / "cm.png", title="test"
    )
    width, height = _png_size(written)
    assert width > 200 and height > 200


def test_most_confident_mistakes():
    probabilities = np.array(
        [
            [0.9, 0.1],  # right
            [0.6, 0.4],  # wrong, 0.6
            [0.2, 0.8],  # wrong, 0.8
            [0.3, 0.7],  # right
            [0.8, 0.2],  # wrong, 0.8: a tie keeps test-set order
        ]
    )
    labels = np.array([0, 1, 0, 1, 1])
    np.testing.assert_array_equal(
        plots.most_confident_mistakes(probabilities, labels, 10), [2, 4, 1]
    )
    np.testing.assert_array_equal(
        plots.most_confident_mistakes(probabilities, labels, 2), [2, 4]
    )


@pytest.mark.parametrize("count", [0, 1, 7])
def test_image_grid(tmp_path, count):
    images = np.random.default_rng(0).integers(0, 256, (count, 32, 32, 3), np.uint8)
    captions = [f"true: cat\npredicted: dog {i}" for i in range(count)]
    written = plots.plot_image_grid(images, captions, tmp_path / "grid.png", columns=3)
    assert _png_size(written)


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    # None in sys.modules makes `import` raise ImportError.
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    log = tmp_path / "log.csv"
    log.write_text(LOG_WITH_VALIDATION)
    with pytest.raises(plots.PlotsUnavailableError, match=r"\[plots\]"):
        plots.plot_training_curves(log, tmp_path / "curves.png")
    assert not (tmp_path / "curves.png").exists()


@pytest.mark.parametrize("first", [0, 1])
def test_epochs_are_counted_from_1_in_old_and_new_logs(tmp_path, first):
    log = tmp_path / "log.csv"
    log.write_text(f"epoch,loss\n{first},2.0\n{first + 1},1.5\n")
    columns = plots.read_training_log(log)
    assert list(plots.epoch_numbers(columns, 2)) == [1, 2]
