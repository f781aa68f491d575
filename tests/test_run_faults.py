"""A hostile run folder, name or signal: one line each, nothing written through
a planted link, nothing read unbounded, no logged epoch lost.

Cheap: files made by hand, the commands called in-process; the one training
run is the tiny model for two short epochs.
"""

from __future__ import annotations

import io
import json
import os
import signal
import time
import zipfile

import numpy as np
import pytest

from keras_cifar_resnet import messages, predict
from keras_cifar_resnet.config import UsageError, build_parser
from keras_cifar_resnet.errors import CheckpointError, ModelFileError, RunFileError
from keras_cifar_resnet.reporting.model_files import (
    check_model_file,
    resolve_model_path,
)
from keras_cifar_resnet.safe_files import (
    open_regular_file,
    write_atomically,
    write_json,
)
from keras_cifar_resnet.train import config_for_arguments, main
from keras_cifar_resnet.training import checkpoints
from keras_cifar_resnet.training.run_folder import RunFolder
from keras_cifar_resnet.training.signals import StopSignals

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


def _config(argv):
    config, _ = config_for_arguments(build_parser().parse_args(argv))
    return config


def _started_run(path, epochs=2):
    folder = RunFolder(path)
    config = _config([*TINY, "--epochs", str(epochs), "--output-dir", str(path)])
    folder.start({"config": config.to_dict()})
    return folder, config


def _state_only_checkpoint(path, state):
    """A checkpoint holding `state` and no variables (enough to be read)."""
    record = {"format": checkpoints.FORMAT_VERSION, "state": state, "variables": {}}
    np.savez(path, record=np.frombuffer(json.dumps(record).encode(), np.uint8))


# ------------------------------------------------------------ writing


def test_a_link_planted_at_any_old_temporary_name_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    run = tmp_path / "run"
    run.mkdir()
    pid = os.getpid()
    # The names the writer used to take: `.<pid>.<name>` for the next pids.
    for name in ("config.json", "checkpoint.previous.npz"):
        for guess in range(pid, pid + 50):
            (run / f".{guess}.{name}").symlink_to(victim)
    write_json(run / "config.json", {"a": 1})
    write_json(run / "config.json", {"a": 2})
    path = run / "checkpoint.npz"
    for content in (b"one", b"two"):
        write_atomically(
            path,
            lambda t, c=content: t.write_bytes(c),
            keep_previous=run / "checkpoint.previous.npz",
        )
    assert victim.read_text() == "keep me"
    assert json.loads((run / "config.json").read_text()) == {"a": 2}
    assert not (run / "config.json").is_symlink()
    assert (run / "checkpoint.previous.npz").read_bytes() == b"one"
    # Written with the umask's mode, as `open` would, not mkstemp's 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert (run / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_checkpoint_that_is_a_link_is_not_kept_as_the_previous(tmp_path):
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"not ours")
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").symlink_to(outside)
    previous = run / "checkpoint.previous.npz"
    write_atomically(
        run / "checkpoint.npz", lambda t: t.write_bytes(b"new"), keep_previous=previous
    )
    assert not previous.exists() and outside.read_bytes() == b"not ours"
    assert (run / "checkpoint.npz").read_bytes() == b"new"


# ------------------------------------------------------------ reading


@pytest.mark.parametrize("damage", ["missing", "not utf-8", "a folder", "a link"])
def test_a_damaged_log_is_one_line_naming_it(damage, tmp_path):
    folder, _ = _started_run(tmp_path / "run")
    folder.log_path.unlink()
    if damage == "not utf-8":
        folder.log_path.write_bytes(b"\xff\xfe\x00PK\x03\x04")
    elif damage == "a folder":
        folder.log_path.mkdir()
    elif damage == "a link":
        (tmp_path / "elsewhere.csv").write_text("epoch\n")
        folder.log_path.symlink_to(tmp_path / "elsewhere.csv")
    with pytest.raises(RunFileError, match="log.csv") as raised:
        folder.read_log()
    assert "\n" not in str(raised.value)


def test_a_config_whose_resumed_entry_is_not_a_list_is_one_line(tmp_path, capsys):
    folder, _ = _started_run(tmp_path / "run")
    record = json.loads(folder.config_path.read_text())
    folder.config_path.write_text(json.dumps(record | {"resumed": "x"}))
    with pytest.raises(RunFileError, match='"resumed" entry is str'):
        folder.record_resume({})
    assert main(["--resume", str(folder.path)]) == 2
    err = capsys.readouterr().err
    assert "config.json" in err and "Traceback" not in err


def test_a_fifo_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(RunFileError, match="not a regular file"):
        open_regular_file(fifo)
    with pytest.raises(RunFileError, match="not a regular file"):
        open_regular_file("/dev/zero", follow_links=True)
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_a_run_folders_model_linking_to_a_device_or_fifo_is_refused(target, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    if target == "fifo":
        os.mkfifo(tmp_path / "fifo")
        target = tmp_path / "fifo"
    (run / "best.keras").symlink_to(target)
    started = time.monotonic()
    with pytest.raises(ModelFileError, match="best.keras is a link") as raised:
        resolve_model_path(run)
    assert raised.value.usage
    # Checked directly (a link a user may name), it is read only if regular:
    # from the open file, so nothing swapped in meanwhile gets through.
    with pytest.raises(ModelFileError, match="not a regular file"):
        check_model_file(run / "best.keras")
    assert time.monotonic() - started < 5


def test_a_checkpoint_member_declaring_a_huge_array_is_refused_before_reading(
    tmp_path,
):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (40000, 40000)}
    )
    path = tmp_path / "checkpoint.npz"
    record = {"format": checkpoints.FORMAT_VERSION, "state": {}, "variables": {}}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("model/00000.npy", header.getvalue() + b"\0" * 4096)
        record_file = io.BytesIO()
        np.save(record_file, np.frombuffer(json.dumps(record).encode(), np.uint8))
        archive.writestr("record.npy", record_file.getvalue())
    started = time.monotonic()
    with pytest.raises(CheckpointError, match=r"declares a \(40000, 40000\) array"):
        checkpoints.read_checkpoint_state(path)
    assert time.monotonic() - started < 5


# ------------------------------------------------------------ resuming


def test_only_the_previous_checkpoint_left_is_continued_from(tmp_path):
    folder, _ = _started_run(tmp_path / "run")
    _state_only_checkpoint(folder.previous_checkpoint_path, {"epoch": 1, "step": 0})
    path, state = checkpoints.checkpoint_to_resume(folder)
    assert path == folder.previous_checkpoint_path and state["epoch"] == 1
    note = checkpoints.set_aside_last(folder, path)
    assert note == (
        "note: continuing from checkpoint.previous.npz (checkpoint.npz is missing)"
    )
    # Nothing yet: the run starts again (it has nothing to lose).
    folder.previous_checkpoint_path.unlink()
    assert checkpoints.checkpoint_to_resume(folder) is None


def test_a_summary_is_trusted_only_when_it_matches_the_checkpoint(tmp_path):
    folder, _ = _started_run(tmp_path / "run", epochs=3)
    finished = {"epoch": 3, "step": 0, "train_seconds": 12.34}
    summary = {"epochs": 3, "train_seconds": 12.3}
    write_json(folder.summary_path, summary)
    assert checkpoints.summary_mismatch(folder, finished, 3) is None
    stopped = finished | {"epoch": 2}
    assert "not finished" in checkpoints.summary_mismatch(folder, stopped, 3)
    assert checkpoints.summary_mismatch(folder, None, 3)
    write_json(folder.summary_path, summary | {"train_seconds": 99.0})
    assert "another training time" in checkpoints.summary_mismatch(folder, finished, 3)
    folder.summary_path.unlink()
    (tmp_path / "unrelated.json").write_text(json.dumps(summary))
    folder.summary_path.symlink_to(tmp_path / "unrelated.json")
    assert "is a link" in checkpoints.summary_mismatch(folder, finished, 3)


@pytest.mark.parametrize("value", ["0", "-5"])
def test_a_bad_eval_batch_size_on_resume_is_the_usage_error_it_is_without(
    value, tmp_path, capsys
):
    folder, _ = _started_run(tmp_path / "run")
    fresh = main(
        [*TINY, "--eval-batch-size", value, "--output-dir", str(tmp_path / "b")]
    )
    without = capsys.readouterr().err
    resumed = main(["--resume", str(folder.path), "--eval-batch-size", value])
    err = capsys.readouterr().err
    assert fresh == resumed == 2
    assert err.splitlines()[-1] == without.splitlines()[-1], (err, without)


def test_the_resumed_config_refuses_bad_values_as_usage_errors(tmp_path):
    folder, _ = _started_run(tmp_path / "run")
    args = build_parser().parse_args(["--resume", str(folder.path)])
    args.eval_batch_size = 0
    with pytest.raises(UsageError):
        config_for_arguments(args)


# ------------------------------------------------------------ names and paths


def test_long_names_are_one_line_each_and_the_rest_are_kept(tmp_path):
    good = tmp_path / "good.png"
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 10, 10)).save(good)
    long_component = tmp_path / ("a" * 300 + ".png")
    long_path = tmp_path / "/".join(["b" * 200] * 25)
    files, errors = predict.expand_inputs([good, long_component, long_path])
    assert files == [good]
    assert [e["path"] for e in errors] == [str(long_component), str(long_path)]
    assert all("File name too long" in e["error"] for e in errors)
    with pytest.raises(predict.ImageError, match="File name too long"):
        predict.load_image(long_component)


def test_printed_names_cannot_act_on_the_terminal():
    results = [
        {
            "path": "x\x1b]0;title\x07\r.png",
            "predictions": [{"class": "cat", "probability": 1.0}],
        }
    ]
    text = predict.format_results(results)
    assert "\x1b" not in text and "\r" not in text and "\\x1b]0;title" in text
    undecodable = b"\xff.png".decode("utf-8", "surrogateescape")
    line = messages.failure_line(f"{undecodable}: not a readable image")
    line.encode("utf-8")  # no lone surrogate left to fail the output
    assert line.startswith("error: \ufffd.png")


def test_an_image_decoding_past_the_byte_limit_is_refused_from_its_header(
    tmp_path, monkeypatch
):
    from PIL import Image

    path = tmp_path / "deep.png"
    Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(path)
    assert predict.load_image(path).mean() == pytest.approx(40000 * 255 / 65535, 1)
    monkeypatch.setattr(predict, "MAX_DECODED_BYTES", 40 * 50 * 2 - 1)
    with pytest.raises(predict.ImageError, match="decodes to 4,000 bytes"):
        predict.load_image(path)


# ------------------------------------------------------------ signals


def test_sighup_is_handled_like_sigterm():
    with StopSignals() as signals:
        signals.in_epochs = True
        signal.raise_signal(signal.SIGHUP)
        assert signals.signum == signal.SIGHUP
    assert messages.signal_exit_status(signal.SIGHUP) == 129


@pytest.mark.slow
def test_a_run_stopped_by_sighup_and_left_with_only_its_previous_checkpoint(
    tmp_path, capsys
):
    """SIGHUP in epoch 2 saves the step and says where; with checkpoint.npz
    lost, --resume continues from checkpoint.previous.npz (epoch 1's end),
    keeps epoch 1's logged row, and finishes; with its summary then lost
    and best.keras cut short, --resume redoes the final evaluation."""
    from tests.test_train import _SignalAt

    class _SignalInEpoch2(_SignalAt):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if getattr(self, "epoch", 0) == 1:
                super().on_train_batch_end(batch, logs)

    from keras_cifar_resnet.training.loop import train

    folder = RunFolder(tmp_path / "run")
    config = _config([*TINY, "--epochs", "2", "--output-dir", str(folder.path)])
    stop = _SignalInEpoch2(1, signal.SIGHUP)
    assert train(config, callbacks=[stop]) == 128 + signal.SIGHUP
    out = capsys.readouterr().out
    assert "stopped by SIGHUP during epoch 2, at step 1/4;" in out, out[-500:]
    state = checkpoints.read_checkpoint_state(folder.checkpoint_path)
    assert (state["epoch"], state["step"]) == (1, 1)
    logged = folder.read_log()
    assert [row["epoch"] for row in logged] == ["1"]

    folder.checkpoint_path.unlink()
    assert main(["--resume", str(folder.path)]) == 0
    out = capsys.readouterr().out
    assert "continuing from checkpoint.previous.npz (checkpoint.npz is missing)" in out
    rows = folder.read_log()
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0] == logged[0]
    assert json.loads(folder.summary_path.read_text())["epochs"] == 2
    # Finished, but its summary lost and best.keras cut short: the final
    # evaluation is redone, with a note instead of a traceback.
    folder.summary_path.unlink()
    best = folder.path / "best.keras"
    best.write_bytes(best.read_bytes()[:100])
    assert main(["--resume", str(folder.path)]) == 0
    out = capsys.readouterr().out
    assert "best.keras is not a valid .keras file" in out
    assert "the summary leaves out the best validation model" in out
    assert json.loads(folder.summary_path.read_text())["best_validation"] is None


def test_the_training_command_imports_no_numpy_before_it_guards_ctrl_c():
    """A Ctrl-C during numpy's import is one line: it is imported inside main."""
    import subprocess
    import sys

    code = "import sys, keras_cifar_resnet.train; print('numpy' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_a_resume_without_checkpoints_never_writes_over_logged_epochs(
    tmp_path, capsys
):
    folder, _ = _started_run(tmp_path / "run")
    folder.append_log_row({"epoch": 1, "loss": 2.0, "seconds": 1.0})
    before = folder.log_path.read_bytes()
    assert main(["--resume", str(folder.path)]) == 1
    err = capsys.readouterr().err
    assert "log.csv records 1 epoch but no checkpoint.npz" in err
    assert folder.log_path.read_bytes() == before


def test_output_paths_over_the_systems_limits_are_one_line(tmp_path):
    from pathlib import Path

    from keras_cifar_resnet.evaluate import output_problem
    from keras_cifar_resnet.safe_files import unwritable_reason

    for path in (tmp_path / ("a" * 300) / "x", tmp_path / "/".join(["b" * 200] * 25)):
        assert unwritable_reason(path) == "cannot be used (File name too long)"
        problem = output_problem(Path(f"{path}.json"), given=True)
        assert problem.startswith("--output ") and "File name too long" in problem
