"""The training command end to end: outputs, resume, signals, failures, flags.

Runs use the test-only `tiny` network on a few hundred images, in-process
through `main`/`train` (one process keeps compiled code warm), except the
SIGTERM test, which needs a real process to signal.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_cifar_resnet.config import (
    RECIPES,
    TrainConfig,
    UsageError,
    build_parser,
    config_from_flags,
    flag_fields,
    resolve_config,
)
from keras_cifar_resnet.data.input_pipeline import prepare_data
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.reporting.evaluation import evaluate_model
from keras_cifar_resnet.train import config_for_arguments, main
from keras_cifar_resnet.training import checkpoints, loop, summary as run_summary
from keras_cifar_resnet.training.build import learning_rate_schedule
from keras_cifar_resnet.training.checkpoints import (
    read_checkpoint_state,
    save_checkpoint,
)
from keras_cifar_resnet.training.loop import train
from keras_cifar_resnet.training.run_folder import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_COLUMNS,
    RunFolder,
)

ROOT = Path(__file__).resolve().parents[1]
# 128 training images in 4 batches of 32, 64 held out, 128 synthetic test images.
TINY = [
    "--synthetic",
    "--model",
    "tiny",
    "--max-train-examples",
    "128",
    "--batch-size",
    "32",
    "--validation-size",
    "64",
    "--seed",
    "3",
]
STEPS_PER_EPOCH = 4
OUTPUTS = (
    "config.json",
    "log.csv",
    "checkpoint.npz",
    "best.keras",
    "summary.json",
    "curves.png",
)


def _log_rows(folder):
    with open(Path(folder) / "log.csv", newline="") as file:
        return list(csv.DictReader(file))


def _checkpoint_arrays(folder):
    with np.load(Path(folder) / "checkpoint.npz") as contents:
        return {name: contents[name] for name in contents.files if name != "record"}


def _config(argv):
    config, resume = config_for_arguments(build_parser().parse_args(argv))
    assert not resume
    return config


class _SignalAt(keras.callbacks.Callback):
    """Sends this process `signum` after step `step` (1-based) of the first epoch.

    Listed before the run's own callbacks, so the run sees the signal at the
    end of that very step: a deterministic stand-in for a user's Ctrl-C.
    """

    def __init__(self, step, signum=signal.SIGTERM):
        super().__init__()
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, batch, logs=None):
        if not self.sent and batch + 1 == self.step:
            self.sent = True
            signal.raise_signal(self.signum)


# ---------------------------------------------------------------- config


def test_recipes_are_whole_configs_and_flags_override_them():
    assert RECIPES["default"] == TrainConfig()
    paper = RECIPES["paper"]
    assert (paper.optimizer, paper.learning_rate, paper.batch_size, paper.epochs) == (
        "adam",
        1e-4,
        512,
        100,
    )
    assert (paper.crop_padding, paper.flip, paper.cutout_size) == (0, False, 0)
    assert paper.batch_norm_momentum == 0.99
    default = RECIPES["default"]
    assert (default.optimizer, default.schedule, default.batch_norm_momentum) == (
        "sgd",
        "cosine",
        0.9,
    )
    config = resolve_config(["--recipe", "paper", "--learning-rate", "0.01"])
    assert config.learning_rate == 0.01 and config.optimizer == "adam"
    assert resolve_config(["--no-flip"]).flip is False
    assert config_from_flags({"epochs": 3}).epochs == 3


def test_the_learning_rate_follows_the_batch_size_unless_given():
    # timm's rule: the recipe's rate is for the recipe's batch size.
    scaled = config_from_flags({"batch_size": 128})
    assert scaled.learning_rate == pytest.approx(0.05)
    assert (scaled.base_learning_rate, scaled.base_batch_size) == (0.2, 512)
    paper = config_from_flags({"recipe": "paper", "batch_size": 1024})
    assert paper.learning_rate == pytest.approx(2e-4)
    # An explicit rate, or the recipe's own batch size, changes nothing.
    given = config_from_flags({"batch_size": 128, "learning_rate": 0.3})
    assert given.learning_rate == 0.3 and given.base_learning_rate is None
    assert config_from_flags({"batch_size": 512}).base_learning_rate is None
    unscaled = config_from_flags({"epochs": 3})
    assert unscaled.learning_rate == 0.2 and unscaled.base_learning_rate is None


def test_the_first_warm_up_step_learns_and_the_peak_comes_after_warm_up():
    config = TrainConfig(epochs=10, warmup_epochs=2.0)
    steps_per_epoch = 5
    schedule = learning_rate_schedule(config, steps_per_epoch)
    rates = [float(keras.ops.convert_to_numpy(schedule(step))) for step in range(51)]
    warmup = 10
    # (s + 1) / (w + 1) of the peak: above 0 from the very first step.
    assert rates[0] == pytest.approx(0.2 / (warmup + 1))
    for step in range(warmup):
        assert rates[step] == pytest.approx(0.2 * (step + 1) / (warmup + 1))
    assert rates[warmup] == pytest.approx(0.2)
    assert rates[50] == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.diff(rates[warmup:]) <= 0)


def test_help_explains_every_flag(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for field in flag_fields():
        assert "--" + field.name.replace("_", "-") in text
    assert "--resume" in text
    # Recipe-set flags say each recipe's value.
    assert "0.2 (default), 0.0001 (paper)" in " ".join(text.split())


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--epochs", "0"], "--epochs must be an int >= 1"),
        (["--model", "resnet50"], "invalid choice: 'resnet50'"),
        (["--batch-size", "many"], "invalid int value: 'many'"),
        (["--mixed-precision", "fp8"], "invalid choice: 'fp8'"),
        (["--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1)"),
        (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0"),
        (["--unknown-flag"], "unrecognized arguments: --unknown-flag"),
        (["--resume", "/nonexistent/run"], "no config.json there"),
        (
            [*TINY, "--max-train-examples", "16", "--batch-size", "64"],
            "--batch-size 64 is larger than the 16 training images",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, expected, capsys, tmp_path):
    if "--resume" not in argv:
        argv = [*argv, "--output-dir", str(tmp_path / "run")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "error: " in lines[0] and expected in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_resume_refuses_flags_that_would_change_the_run(tmp_path, capsys):
    (tmp_path / CONFIG_NAME).write_text("{}")
    assert main(["--resume", str(tmp_path), "--epochs", "5"]) == 2
    assert "drop --epochs" in capsys.readouterr().err


# ------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """Two uninterrupted epochs of the tiny network on synthetic data."""
    folder = tmp_path_factory.mktemp("straight")
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main([*TINY, "--epochs", "2", "--output-dir", str(folder)])
    assert status == 0, output.getvalue()[-2000:]
    return folder, output.getvalue()


@pytest.mark.slow
def test_a_synthetic_run_writes_every_output(straight_run):
    folder, output = straight_run
    for name in OUTPUTS:
        assert (folder / name).is_file() and (folder / name).stat().st_size > 0, name

    record = json.loads((folder / "config.json").read_text())
    assert record["config"]["model"] == "tiny" and record["config"]["epochs"] == 2
    assert record["backend"] == keras.backend.backend()
    assert record["versions"]["keras"] == keras.__version__
    assert record["device"]["tensor_device"]
    assert record["data"] == {"path": None, "given_as": "synthetic"}

    rows = _log_rows(folder)
    assert [int(row["epoch"]) for row in rows] == [1, 2]  # as the epoch lines
    assert tuple(rows[0]) == LOG_COLUMNS
    assert all(np.isfinite(float(row["val_accuracy"])) for row in rows)
    # Cosine schedule: peak after warm-up (capped at half the run), 0 at the
    # end. The peak is the recipe's 0.2 at batch 512, scaled to batch 32.
    assert float(rows[0]["learning_rate"]) == pytest.approx(0.2 * 32 / 512)
    assert record["config"]["learning_rate"] == pytest.approx(0.0125)
    assert record["config"]["base_learning_rate"] == 0.2
    assert record["config"]["base_batch_size"] == 512
    assert "the recipe's 0.2 at batch 512, scaled linearly to batch 32" in output
    assert float(rows[1]["learning_rate"]) == pytest.approx(0.0, abs=1e-7)

    summary = json.loads((folder / "summary.json").read_text())
    test = summary["test"]
    # The headline is the last epoch's model; the best-validation model's
    # figures are apart, labelled as chosen on the validation split.
    assert summary["model_file"] == "final.keras"
    assert summary["test_model"] == "the last epoch's model"
    best = summary["best_validation"]
    assert best["model_file"] == "best.keras"
    assert best["chosen_on"] == "validation split"
    assert best["epoch"] in (1, 2)
    assert best["validation_accuracy"] == summary["validation_accuracy"]
    assert best["test"]["num_images"] == 128
    assert test["num_images"] == 128
    assert 0.0 <= test["accuracy"] <= 1.0 and 0.0 <= test["tta_accuracy"] <= 1.0
    assert np.isfinite(test["loss"])
    assert len(test["per_class_accuracy"]) == 10
    assert np.asarray(test["confusion_matrix"]).sum() == 128

    assert (folder / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = keras.saving.load_model(folder / "best.keras")
    assert model.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape == (2, 10)

    state = read_checkpoint_state(folder / "checkpoint.npz")
    assert (state["epoch"], state["step"]) == (2, 0)
    # The checkpoint written at an epoch's end counts that epoch's time.
    assert state["train_seconds"] > 0
    assert summary["train_seconds"] == round(state["train_seconds"], 1)
    previous = read_checkpoint_state(folder / "checkpoint.previous.npz")
    assert (previous["epoch"], previous["step"]) == (1, 0)
    # One summary line per epoch, after Keras's progress bar.
    assert "epoch 1/2  loss" in output and "epoch 2/2  loss" in output
    assert "test accuracy" in output


@pytest.mark.slow
@pytest.mark.parametrize(
    "stop_step",
    [2, STEPS_PER_EPOCH],
    ids=["mid-epoch", "end-of-epoch"],
)
def test_stop_and_resume_gives_the_straight_run(
    straight_run, stop_step, tmp_path, capsys
):
    """SIGTERM after step `stop_step` of epoch 1, then --resume: same as straight."""
    straight, _ = straight_run
    folder = tmp_path / "run"
    config = _config([*TINY, "--epochs", "2", "--output-dir", str(folder)])
    assert train(config, callbacks=[_SignalAt(stop_step)]) == 128 + signal.SIGTERM
    # The progress bar ends where the epoch stopped, not at its full length.
    bar = capsys.readouterr().out.split("SIGTERM: stopping")[1]
    assert f"{stop_step}/{STEPS_PER_EPOCH}" in bar
    if stop_step < STEPS_PER_EPOCH:
        assert f"{STEPS_PER_EPOCH}/{STEPS_PER_EPOCH}" not in bar
    state = read_checkpoint_state(folder / "checkpoint.npz")
    if stop_step < STEPS_PER_EPOCH:
        assert (state["epoch"], state["step"]) == (0, stop_step)
        assert _log_rows(folder) == []
    else:
        assert (state["epoch"], state["step"]) == (1, 0)
        assert len(_log_rows(folder)) == 1
    assert not (folder / "summary.json").exists()

    assert main(["--resume", str(folder)]) == 0
    expected, resumed = _checkpoint_arrays(straight), _checkpoint_arrays(folder)
    assert expected.keys() == resumed.keys()
    for name in expected:
        # The same computation on the same backend: equal up to float
        # rounding (in practice bit for bit).
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-6, atol=1e-7)
    straight_rows, resumed_rows = _log_rows(straight), _log_rows(folder)
    assert len(resumed_rows) == 2
    for row, expected_row in zip(resumed_rows, straight_rows, strict=True):
        for column in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"):
            assert float(row[column]) == pytest.approx(float(expected_row[column]))
    record = json.loads((folder / "config.json").read_text())
    assert len(record["resumed"]) == 1


@pytest.mark.slow
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = self.model.get_layer("logits").kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    folder = tmp_path / "run"
    config = _config([*TINY, "--epochs", "3", "--output-dir", str(folder)])
    before = None

    class RememberCheckpoint(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            nonlocal before
            if epoch == 1:
                before = (folder / "checkpoint.npz").read_bytes()

    assert train(config, callbacks=[RememberCheckpoint(), PoisonSecondEpoch()]) == 1
    error = capsys.readouterr().err
    assert "the training loss became nan at epoch 2, step 1" in error
    assert "the last good checkpoint is" in error
    assert (folder / "checkpoint.npz").read_bytes() == before
    assert read_checkpoint_state(folder / "checkpoint.npz")["epoch"] == 1
    assert not (folder / "summary.json").exists()


@pytest.mark.slow
def test_a_huge_learning_rate_stops_with_a_clear_message(tmp_path, capsys):
    folder = tmp_path / "run"
    argv = [*TINY, "--schedule", "constant", "--learning-rate", "1e30"]
    assert main([*argv, "--epochs", "1", "--output-dir", str(folder)]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: the training loss became")
    assert "no checkpoint was written before it" in error
    assert "--learning-rate (this run: 1e+30)" in error
    assert not (folder / "checkpoint.npz").exists()


@pytest.mark.slow
def test_sigterm_to_the_command_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    folder = tmp_path / "run"
    argv = [
        *TINY,
        "--epochs",
        "6",
        "--validation-size",
        "0",
        "--output-dir",
        str(folder),
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cifar_resnet.train", *argv],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The run prints this line once its signal handlers are in place.
        for line in process.stdout:
            if line.startswith("training "):
                process.send_signal(signal.SIGTERM)
                break
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "stopped by SIGTERM" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    state = read_checkpoint_state(folder / "checkpoint.npz")
    assert (state["epoch"], state["step"]) < (6, 0)

    # The stopped run finishes from its checkpoint; without validation the
    # last epoch's model is kept as final.keras.
    assert main(["--resume", str(folder)]) == 0
    assert [int(row["epoch"]) for row in _log_rows(folder)] == list(range(1, 7))
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["model_file"] == "final.keras"
    assert (folder / "final.keras").is_file() and not (folder / "best.keras").exists()


@pytest.mark.slow
def test_the_test_figure_of_a_mixed_precision_run_is_computed_in_float32(tmp_path):
    folder = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--validation-size", "0", "--output-dir"]
    argv += [str(folder), "--mixed-precision", "mixed_bfloat16"]
    assert main(argv) == 0
    summary = json.loads((folder / "summary.json").read_text())
    # What `keras-cifar-resnet-evaluate` computes: the file in float32.
    assert keras.config.dtype_policy().name == "float32"
    model = keras.saving.load_model(folder / "final.keras")
    data = prepare_data(_config(argv[:-2] + ["--output-dir", str(tmp_path / "x")]))
    expected = evaluate_model(model, data.test_images, data.test_labels, 32)
    # The same float32 computation on the same weights: equal but for
    # rounding (in bf16 the loss differed by 2.5e-6 relative here).
    assert summary["test"]["loss"] == pytest.approx(expected["loss"], rel=1e-9)
    assert summary["test"]["accuracy"] == expected["accuracy"]


@pytest.mark.slow
@pytest.mark.real_data
def test_a_run_on_512_real_images_writes_every_output(real_data_dir, tmp_path):
    folder = tmp_path / "run"
    argv = [
        "--data-dir",
        str(real_data_dir),
        "--model",
        "tiny",
        "--max-train-examples",
        "512",
        "--validation-size",
        "512",
        "--batch-size",
        "128",
        "--epochs",
        "1",
        "--output-dir",
        str(folder),
    ]
    assert main(argv) == 0
    for name in OUTPUTS:
        assert (folder / name).is_file(), name
    record = json.loads((folder / "config.json").read_text())
    assert record["data"] == {
        "path": str(real_data_dir.resolve()),
        "given_as": "data_dir",
    }
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["train_images"] == 512 and not summary["synthetic"]
    assert summary["test"]["num_images"] == 10_000
    assert np.asarray(summary["test"]["confusion_matrix"]).sum() == 10_000


@pytest.mark.real_data
def test_a_validation_set_as_large_as_the_data_exits_2(real_data_dir, capsys, tmp_path):
    argv = ["--data-dir", str(real_data_dir), "--validation-size", "50000"]
    assert main([*argv, "--output-dir", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err.strip()
    assert "--validation-size must be below the 50000 training images" in error
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------- resuming by command


def _resumable_run(folder, argv):
    """A run folder as `argv` would start it, with a checkpoint to resume."""
    config, _ = config_for_arguments(build_parser().parse_args(argv))
    RunFolder(folder).start({"config": config.to_dict()})
    model = TinyResNet()
    model.compile(keras.optimizers.SGD(0.1))
    model.optimizer.build(model.trainable_variables)
    save_checkpoint(folder / CHECKPOINT_NAME, model, {})
    return config


def _resume(argv):
    return config_for_arguments(build_parser().parse_args(argv))


def test_resume_accepts_the_same_command_again(tmp_path):
    argv = [*TINY, "--epochs", "3", "--output-dir", str(tmp_path)]
    saved = _resumable_run(tmp_path, argv)
    # --batch-size 32 scaled the learning rate once; resuming must not again.
    assert saved.learning_rate == pytest.approx(0.2 * 32 / 512)
    for again in (
        [*argv, "--resume", str(tmp_path)],
        ["--resume", str(tmp_path)],
        ["--batch-size", "32", "--resume", str(tmp_path)],
    ):
        assert _resume(again) == (saved, True)
    config, _ = _resume([*argv, "--jit-compile", "off", "--resume", str(tmp_path)])
    assert config == dataclasses.replace(saved, jit_compile="off")


@pytest.mark.parametrize(
    "changes, named",
    [
        (["--epochs", "4"], "--epochs (saved: 3)"),
        (["--batch-size", "64"], "--batch-size (saved: 32)"),
        (["--output-dir", "elsewhere"], "--output-dir (saved: "),
    ],
)
def test_resume_refuses_a_flag_that_changes_the_run(tmp_path, changes, named):
    _resumable_run(tmp_path, [*TINY, "--epochs", "3", "--output-dir", str(tmp_path)])
    with pytest.raises(UsageError, match="drop ") as error:
        _resume([*changes, "--resume", str(tmp_path)])
    assert named in str(error.value) and "\n" not in str(error.value)


# ------------------------------------------------------------------ faults


@pytest.mark.slow
def test_a_run_stopped_before_its_first_checkpoint_resumes_from_the_start(
    tmp_path, capsys
):
    folder = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--output-dir", str(folder)]
    # What a NaN stop, a crash or a double Ctrl-C in epoch 1 leaves.
    RunFolder(folder).start({"config": _config(argv).to_dict()})
    assert main(["--resume", str(folder)]) == 0
    output = capsys.readouterr().out
    assert "starting it from the beginning" in output
    assert "1 epoch of 4 steps" in output
    assert (folder / "summary.json").is_file()


def test_a_new_run_may_replace_one_that_stopped_before_its_first_checkpoint(
    tmp_path, capsys
):
    argv = [*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]
    RunFolder(tmp_path).start({"config": _config(argv).to_dict()})
    # The next try, with a lower learning rate: accepted in the same folder.
    config = _config([*argv, "--learning-rate", "0.01"])
    assert config.learning_rate == 0.01
    assert "stopped before its first checkpoint" in capsys.readouterr().out
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"")
    with pytest.raises(UsageError, match="already holds a run"):
        _config(argv)


@pytest.mark.slow
def test_a_damaged_checkpoint_names_the_good_previous_one_and_resumes_from_it(
    straight_run, tmp_path, capsys
):
    folder = tmp_path / "run"
    shutil.copytree(straight_run[0], folder)
    # Damaged before the run finished (a finished run has nothing to resume).
    (folder / "summary.json").unlink()
    checkpoint = folder / CHECKPOINT_NAME
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["--resume", str(folder)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"error: {checkpoint} is not a readable checkpoint")
    assert "checkpoint.previous.npz (epoch 1, step 0) is good" in error
    command = error.split("continue from it with: ")[1]
    assert (
        command == f"keras-cifar-resnet-train --resume {folder} "
        "--from-previous-checkpoint"
    )

    assert main(["--resume", str(folder), "--from-previous-checkpoint"]) == 0
    assert (folder / "checkpoint.damaged.npz").is_file()
    assert read_checkpoint_state(checkpoint)["epoch"] == 2
    assert read_checkpoint_state(folder / "checkpoint.previous.npz")["epoch"] == 1
    assert json.loads((folder / "summary.json").read_text())["train_seconds"] > 0


def write_state_only_checkpoint(path, state):
    """A checkpoint file holding `state` and no variables (enough to be read)."""
    record = {"format": checkpoints.FORMAT_VERSION, "state": state, "variables": {}}
    encoded = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    np.savez(path, record=encoded)


def _refuse_work(monkeypatch):
    def prepare_data(config):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr("keras_cifar_resnet.training.loop.prepare_data", prepare_data)


@pytest.mark.parametrize("where", ["a file", "below a file", "read-only"])
def test_an_output_dir_that_cannot_take_files_exits_2_before_any_work(
    where, tmp_path, monkeypatch, capsys
):
    _refuse_work(monkeypatch)
    (tmp_path / "file").write_text("")
    output, expected = {
        "a file": (tmp_path / "file", "is a file, not a folder"),
        "below a file": (tmp_path / "file" / "run", "is a file, not a folder"),
        "read-only": (tmp_path / "run", "(Read-only file system)"),
    }[where]
    if where == "read-only":

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))

        monkeypatch.setattr(
            "keras_cifar_resnet.safe_files.tempfile.TemporaryFile", read_only
        )
    assert main([*TINY, "--output-dir", str(output)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.endswith(expected), error
    assert f"--output-dir {output}: " in error


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_what_was_written(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "run"
    real_savez = np.savez
    calls = []

    def savez_on_a_full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the checkpoint at the end of epoch 2
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_savez(*args, **kwargs)

    monkeypatch.setattr(
        "keras_cifar_resnet.training.checkpoints.np.savez", savez_on_a_full_disk
    )
    assert main([*TINY, "--epochs", "2", "--output-dir", str(folder)]) == 1
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith(f"error: cannot write {folder / CHECKPOINT_NAME}: ")
    assert "No space left on device" in error and "free some space" in error
    assert "(checkpoint.npz, best.keras) are intact" in error
    assert error.endswith(f"continue with: keras-cifar-resnet-train --resume {folder}")
    assert read_checkpoint_state(folder / CHECKPOINT_NAME)["epoch"] == 1
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def _signal_when_called(monkeypatch, owner, name, signum=signal.SIGINT):
    """Sends this process `signum` when `owner.name` is first called."""
    real = getattr(owner, name)
    sent = []

    def wrapper(*args, **kwargs):
        if not sent:
            sent.append(signum)
            os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_ctrl_c_during_setup_stops_with_one_line(tmp_path, monkeypatch, capsys):
    _signal_when_called(monkeypatch, loop, "prepare_data")
    folder = tmp_path / "run"
    assert main([*TINY, "--output-dir", str(folder)]) == 128 + signal.SIGINT
    output = capsys.readouterr().out.strip()
    assert output.endswith(
        "stopped by SIGINT; nothing was written yet; run the same command again"
    ), output
    assert not folder.exists()


@pytest.mark.slow
def test_ctrl_c_during_the_test_evaluation_says_resume_finishes_it(
    tmp_path, monkeypatch, capsys
):
    _signal_when_called(monkeypatch, run_summary, "evaluate_model")
    folder = tmp_path / "run"
    argv = [*TINY, "--epochs", "1", "--output-dir", str(folder)]
    assert main(argv) == 128 + signal.SIGINT
    output = capsys.readouterr().out.strip().splitlines()[-1]
    assert output.startswith("stopped by SIGINT; training is complete"), output
    assert output.endswith(
        f"test evaluation with: keras-cifar-resnet-train --resume {folder}"
    )
    assert not (folder / "summary.json").exists()
    monkeypatch.undo()
    assert main(["--resume", str(folder)]) == 0
    summary = json.loads((folder / "summary.json").read_text())
    # The summary of the resumed evaluation keeps the training time.
    state = read_checkpoint_state(folder / CHECKPOINT_NAME)
    assert summary["train_seconds"] == round(state["train_seconds"], 1) > 0


def test_resuming_a_finished_run_says_where_its_results_are(
    tmp_path, monkeypatch, capsys
):
    _refuse_work(monkeypatch)
    argv = [*TINY, "--epochs", "1", "--output-dir", str(tmp_path)]
    folder = RunFolder(tmp_path)
    folder.start({"config": _config(argv).to_dict()})
    write_state_only_checkpoint(
        folder.checkpoint_path, {"epoch": 1, "step": 0, "train_seconds": 2.04}
    )
    folder.write_summary({"epochs": 1, "train_seconds": 2.0, "test": {}})
    files = {path: path.read_bytes() for path in tmp_path.iterdir()}
    assert main(["--resume", str(tmp_path)]) == 0
    output = capsys.readouterr().out.strip()
    assert output == (
        f"{tmp_path} is complete: training and the test evaluation are done; "
        f"the results are in {folder.summary_path}"
    )
    assert {path: path.read_bytes() for path in tmp_path.iterdir()} == files


@pytest.mark.slow
def test_a_second_ctrl_c_while_saving_waits_for_the_checkpoint(
    tmp_path, monkeypatch, capsys
):
    folder = tmp_path / "run"
    config = _config([*TINY, "--epochs", "2", "--output-dir", str(folder)])
    # The first SIGINT after step 2 asks for a checkpoint; the second arrives
    # while numpy writes it.
    _signal_when_called(monkeypatch, checkpoints.np, "savez")
    status = train(config, callbacks=[_SignalAt(2, signal.SIGINT)])
    assert status == 128 + signal.SIGINT
    state = read_checkpoint_state(folder / CHECKPOINT_NAME)
    assert (state["epoch"], state["step"]) == (0, 2)
    output = capsys.readouterr().out
    assert "stopping once the file being saved is written" in output
    assert output.strip().endswith(
        f"is at step 2 of epoch 1; continue with: keras-cifar-resnet-train "
        f"--resume {folder}"
    )


def _run_that_read(tmp_path, data):
    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "fixtures" / "saved_run", run)
    record = json.loads((run / "config.json").read_text())
    record["config"]["synthetic"] = False
    record["data"] = data
    (run / "config.json").write_text(json.dumps(record))
    return run


def test_a_resume_reads_the_data_where_the_run_recorded_it(tmp_path, monkeypatch):
    # Started with KERAS_CIFAR_RESNET_DATA, resumed in a shell without it.
    data = tmp_path / "cifar-10-batches-bin"
    data.mkdir()
    run = _run_that_read(
        tmp_path, {"path": str(data), "given_as": "KERAS_CIFAR_RESNET_DATA"}
    )
    monkeypatch.delenv("KERAS_CIFAR_RESNET_DATA", raising=False)
    args = build_parser().parse_args(["--resume", str(run)])
    config, resume = config_for_arguments(args)
    assert resume and config.data_dir == str(data)
    # A location given now wins; a recorded folder that is gone is not used.
    args = build_parser().parse_args(["--resume", str(run), "--data-dir", "x"])
    assert config_for_arguments(args)[0].data_dir == "x"
    monkeypatch.setenv("KERAS_CIFAR_RESNET_DATA", str(tmp_path))
    assert config_for_arguments(build_parser().parse_args(["--resume", str(run)]))[
        0
    ].data_dir is None
    monkeypatch.delenv("KERAS_CIFAR_RESNET_DATA")
    data.rmdir()
    assert config_for_arguments(build_parser().parse_args(["--resume", str(run)]))[
        0
    ].data_dir is None


def test_a_start_without_data_leaves_no_empty_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["--model", "tiny", "--data-dir", str(tmp_path / "no-such-data")]
    assert main([*argv, "--output-dir", "runs/first"]) == 1
    assert "error: " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
