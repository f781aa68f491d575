"""`train --tensorboard`: event files of every epoch, continued by a resume."""

from __future__ import annotations

import signal

import numpy as np
import pytest

from keras_cifar_resnet.train import main
from keras_cifar_resnet.training.loop import train
from keras_cifar_resnet.training.tensorboard import SCALARS, TENSORBOARD_DIR
from tests.test_train import STEPS_PER_EPOCH, TINY, _config, _SignalAt


def _scalars(folder):
    """{(split, tag): [(step, value), ...]} from every event file under `folder`."""
    from tensorboard.backend.event_processing.event_file_loader import (
        EventFileLoader,
    )
    from tensorboard.util import tensor_util

    points = {}
    for path in sorted((folder / TENSORBOARD_DIR).glob("*/events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                number = float(tensor_util.make_ndarray(value.tensor))
                key = (path.parent.name, value.tag)
                points.setdefault(key, []).append((event.step, number))
    return points


@pytest.mark.slow
def test_a_stopped_and_resumed_run_writes_one_curve_per_figure(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed")
    folder = tmp_path / "run"
    argv = [*TINY, "--epochs", "2", "--tensorboard", "--output-dir", str(folder)]
    # Stopped at the end of epoch 1, then resumed for epoch 2.
    stop = _SignalAt(STEPS_PER_EPOCH)
    assert train(_config(argv), callbacks=[stop]) == 128 + signal.SIGTERM
    assert main(["--resume", str(folder)]) == 0

    points = _scalars(folder)
    assert set(points) == {(split, tag) for split, tag, _ in SCALARS}
    for key, series in points.items():
        assert [step for step, _ in series] == [1, 2], key
        assert all(np.isfinite(value) for _, value in series), key
    # Two processes wrote, each its own file, into the same folders.
    assert len(list((folder / TENSORBOARD_DIR / "train").iterdir())) == 2
    # The figures are the log's.
    with open(folder / "log.csv") as file:
        rows = [line.strip().split(",") for line in file]
    header, last = rows[0], rows[-1]
    logged = float(last[header.index("val_accuracy")])
    assert points[("validation", "accuracy")][-1][1] == pytest.approx(logged, abs=1e-6)


def test_without_the_package_the_flag_is_refused_in_one_line(
    tmp_path, monkeypatch, capsys
):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorboard" else find_spec(name, *a),
    )
    folder = tmp_path / "run"
    assert main([*TINY, "--tensorboard", "--output-dir", str(folder)]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install 'tensorboard" in error
    assert not folder.exists()
