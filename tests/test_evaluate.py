"""Evaluation: the report's numbers, the command, its pictures and its errors."""

from __future__ import annotations

import errno
import json
import os
import sys
import zipfile

import numpy as np
import pytest

from keras_cifar_resnet import evaluate
from keras_cifar_resnet.data.cifar10 import CLASS_NAMES, load_cifar10
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.reporting.evaluation import (
    evaluate_model,
    flip_horizontally,
    metrics_from_logits,
)
from keras_cifar_resnet.reporting.model_files import (
    ModelFileError,
    load_model,
    resolve_model_path,
)
from keras_cifar_resnet.training.steps.common import cross_entropy
from tests.backend_subprocess import (
    BACKENDS,
    CROSS_BACKEND_SESSION,
    current_backend,
    run_only_in_session,
    run_under_backend,
)

NUM_REAL = 96


def tiny_model(seed=0):
    """A TinyResNet with weights and BatchNorm statistics drawn from numpy.

    The same on every backend and every run, so a near-tie between two
    logits cannot come and go; the moving statistics are not the initial
    zeros and ones, so inference-mode BatchNorm is exercised.
    """
    model = TinyResNet()
    rng = np.random.default_rng(seed)
    values = []
    for variable in model.weights:
        shape, name = variable.shape, variable.path.split("/")[-1]
        if name == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            value = rng.normal(0.0, 0.1, shape)
        values.append(value.astype("float32"))
    model.set_weights(values)
    return model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A TinyResNet saved under the current backend, and the model itself."""
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model = tiny_model()
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def real_test_subset(real_data_dir):
    _, (images, labels) = load_cifar10(real_data_dir)
    return images[:NUM_REAL], labels[:NUM_REAL]


def _is_png(path):
    return path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------- the numbers


def test_metrics_from_hand_made_logits():
    class_names = ["a", "b", "c"]
    labels = np.array([0, 1, 2, 2])
    # Plain: right, right, wrong (predicts 0), wrong (predicts 1).
    logits = np.array(
        [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.5], [0.0, 1.0, 0.0]],
        dtype=np.float32,
    )
    # The mirror images put the third image right, and leave the rest.
    flipped = np.array(
        [[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 0.0]],
        dtype=np.float32,
    )
    report = metrics_from_logits(logits, flipped, labels, class_names)
    assert report["num_images"] == 4
    assert report["accuracy"] == 0.5
    assert report["tta_accuracy"] == 0.75
    assert report["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.0}
    assert report["tta_per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 1, 0], [1, 1, 0]]
    # The loss is the training loss without label smoothing.
    expected = float(cross_entropy(labels, logits))
    assert report["loss"] == pytest.approx(expected, rel=1e-6)
    tta_expected = float(cross_entropy(labels, (logits + flipped) / 2))
    assert report["tta_loss"] == pytest.approx(tta_expected, rel=1e-6)
    # JSON-ready as it is.
    assert json.loads(json.dumps(report)) == report


def test_class_without_images_has_no_accuracy():
    logits = np.eye(3, dtype=np.float32)[[0, 1]]
    report = metrics_from_logits(logits, logits, [0, 1], ["a", "b", "c"])
    assert report["per_class_accuracy"] == {"a": 1.0, "b": 1.0, "c": None}


def test_default_class_names_are_cifar10s():
    logits = np.zeros((2, 10), dtype=np.float32)
    report = metrics_from_logits(logits, logits, [0, 9])
    assert report["class_names"] == list(CLASS_NAMES)


def test_wrong_number_of_class_names_is_refused():
    logits = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="3 classes"):
        metrics_from_logits(logits, logits, [0, 1], ["a", "b"])


def test_flip_mirrors_the_width_axis():
    images = np.arange(2 * 2 * 3 * 1, dtype=np.uint8).reshape(2, 2, 3, 1)
    flipped = flip_horizontally(images)
    np.testing.assert_array_equal(flipped[:, :, 0], images[:, :, 2])
    np.testing.assert_array_equal(flip_horizontally(flipped), images)


def test_evaluate_model_matches_the_models_own_predictions(saved_model):
    _, model = saved_model
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 12)
    report = evaluate_model(model, images, labels, batch_size=5)
    logits = np.asarray(model.predict(images, verbose=0))
    mirrored = np.asarray(model.predict(images[:, :, ::-1], verbose=0))
    assert report["num_images"] == 12
    assert report["accuracy"] == np.mean(logits.argmax(1) == labels)
    assert report["tta_accuracy"] == np.mean(
        ((logits + mirrored) / 2).argmax(1) == labels
    )
    assert sum(map(sum, report["confusion_matrix"])) == 12


# ------------------------------------------------------------ model files


def test_a_run_folder_resolves_to_final_then_best(tmp_path):
    # A run written before final.keras was always kept has best.keras only.
    (tmp_path / "best.keras").write_bytes(b"")
    assert resolve_model_path(tmp_path) == tmp_path / "best.keras"
    # The last epoch's model, the one summary.json's test figures are of.
    (tmp_path / "final.keras").write_bytes(b"")
    assert resolve_model_path(tmp_path) == tmp_path / "final.keras"


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.keras", "model file not found"),
        ("", "folder with no .keras file"),
        ("model.h5", "not a .keras file"),
    ],
)
def test_wrong_model_paths_are_usage_errors(tmp_path, name, message):
    if name == "model.h5":
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(ModelFileError, match=message) as caught:
        resolve_model_path(tmp_path / name)
    assert caught.value.usage


def test_corrupt_model_files_say_so(tmp_path):
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ModelFileError, match="not a valid .keras file") as caught:
        load_model(garbage)
    assert not caught.value.usage
    # A zip archive without a Keras model inside.
    not_a_model = tmp_path / "zip.keras"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("hello.txt", "hello")
    with pytest.raises(ModelFileError, match="has no config.json"):
        load_model(not_a_model)


# ---------------------------------------------------------------- command


@pytest.mark.real_data
def test_command_on_real_images(
    saved_model, real_data_dir, real_test_subset, tmp_path, capsys
):
    path, model = saved_model
    output = tmp_path / "out" / "eval.json"
    status = evaluate.main(
        [
            str(path),
            "--data-dir",
            str(real_data_dir),
            "--max-examples",
            str(NUM_REAL),
            "--batch-size",
            "32",
            "--output",
            str(output),
            "--quiet",
        ]
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "flip TTA" in printed and "confusion matrix" in printed
    assert all(name in printed for name in CLASS_NAMES)

    report = json.loads(output.read_text())
    images, labels = real_test_subset
    expected = evaluate_model(model, images, labels, batch_size=32)
    assert report["backend"] == current_backend()
    assert report["num_images"] == NUM_REAL
    for key in ("accuracy", "tta_accuracy", "confusion_matrix", "per_class_accuracy"):
        assert report[key] == expected[key], key
    assert report["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert f"{100 * report['accuracy']:.2f}%" in printed

    assert _is_png(tmp_path / "out" / "eval-confusion-matrix.png")
    assert _is_png(tmp_path / "out" / "eval-mistakes.png")


@pytest.mark.real_data
def test_run_folder_default_output(saved_model, real_data_dir, tmp_path):
    path, _ = saved_model
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(path.read_bytes())
    argv = [str(run), "--data-dir", str(real_data_dir), "--max-examples", "8"]
    status = evaluate.main(argv + ["--quiet", "--mistakes", "0"])
    assert status == 0
    assert json.loads((run / "evaluation.json").read_text())["num_images"] == 8
    # --mistakes 0 draws no pictures.
    assert sorted(p.name for p in run.iterdir()) == ["best.keras", "evaluation.json"]


def test_command_errors_are_one_line(tmp_path, capsys):
    assert evaluate.main([str(tmp_path / "missing.keras")]) == 2
    error = capsys.readouterr().err
    assert error.strip().count("\n") == 0 and "model file not found" in error

    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"PK\x03\x04 not really")
    assert evaluate.main([str(corrupt)]) == 1
    error = capsys.readouterr().err
    assert error.strip().count("\n") == 0 and "not a valid .keras file" in error

    with pytest.raises(SystemExit) as caught:
        evaluate.main([str(corrupt), "--batch-size", "0"])
    assert caught.value.code == 2


def test_missing_data_is_one_line(saved_model, tmp_path, capsys):
    path, _ = saved_model
    status = evaluate.main([str(path), "--data-dir", str(tmp_path / "nothing")])
    assert status == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.strip().count("\n") == 0


@pytest.mark.slow
@pytest.mark.real_data
def test_same_predictions_under_every_backend(saved_model, real_test_subset, tmp_path):
    """A model saved under one backend predicts the same classes under all three."""
    run_only_in_session(CROSS_BACKEND_SESSION, "compares every backend itself")
    path, model = saved_model
    images, _ = real_test_subset
    images_path = tmp_path / "images.npy"
    np.save(images_path, images)
    here = np.stack(
        [
            np.asarray(model.predict(images, verbose=0)),
            np.asarray(model.predict(flip_horizontally(images), verbose=0)),
        ]
    )
    code = f"""
        import json
        import numpy as np
        from keras_cifar_resnet.reporting.evaluation import (
            flip_horizontally, predict_logits
        )
        from keras_cifar_resnet.reporting.model_files import load_model
        images = np.load({str(images_path)!r})
        model, _ = load_model({str(path)!r})
        flipped = flip_horizontally(images)
        logits = [predict_logits(model, x, 32) for x in (images, flipped)]
        print(json.dumps(np.stack(logits).tolist()))
    """
    for backend in BACKENDS:
        if backend == current_backend():
            continue
        printed = run_under_backend(backend, code).splitlines()[-1]
        # float32 -> JSON -> float32 is exact, so the TTA mean below is the
        # same float32 arithmetic as `metrics_from_logits`.
        there = np.asarray(json.loads(printed), dtype=np.float32)
        np.testing.assert_allclose(there, here, atol=1e-4, err_msg=backend)
        np.testing.assert_array_equal(there.argmax(-1), here.argmax(-1), backend)
        np.testing.assert_array_equal(
            ((there[0] + there[1]) / 2).argmax(-1),
            ((here[0] + here[1]) / 2).argmax(-1),
            backend,
        )


@pytest.mark.parametrize("where", ["a folder", "read-only"])
def test_an_output_that_cannot_be_written_exits_2_before_any_work(
    saved_model, where, tmp_path, monkeypatch, capsys
):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(evaluate, "load_model", no_work)
    output, expected = tmp_path, "is a folder; name the JSON file to write"
    if where == "read-only":
        output, expected = tmp_path / "eval.json", "(Read-only file system)"

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(
            "keras_cifar_resnet.safe_files.tempfile.TemporaryFile", read_only
        )
    assert evaluate.main([str(saved_model[0]), "--output", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.endswith(expected), error
    assert error.startswith(f"error: --output {output}")


@pytest.mark.real_data
@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "log-file"])
def test_stdout_holds_only_the_results_and_progress_goes_to_stderr(
    saved_model, real_data_dir, tmp_path, terminal, monkeypatch, capsys
):
    argv = [str(saved_model[0]), "--data-dir", str(real_data_dir)]
    argv += ["--max-examples", "8", "--mistakes", "0"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    assert evaluate.main([*argv, "--output", str(tmp_path / "eval.json")]) == 0
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out and "\b" not in captured.out
    assert "step" not in captured.out and "━" not in captured.out
    assert captured.out.startswith(" " * len("automobile") + "      plain")
    # A bar on a terminal; in a log file neither a bar nor terminal codes.
    assert ("1/1" in captured.err) == terminal
    # Each of the two bars is named: the plain pass, then the mirrored one.
    assert ("pass 2 of 2, their mirror images" in captured.err) == terminal
    assert terminal or "\x1b" not in captured.err


def test_ctrl_c_is_one_line(saved_model, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "load_cifar10", interrupted)
    assert evaluate.main([str(saved_model[0]), "--output", "x.json"]) == 130
    assert capsys.readouterr().err == "stopped by SIGINT; nothing was written\n"
