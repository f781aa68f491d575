"""The run folder: atomic writes, the log, config.json, saving and loading models."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.reporting.model_files import (
    ModelFileError,
    load_model,
    resolve_model_path,
)
from keras_cifar_resnet.training import run_folder
from keras_cifar_resnet.training.run_folder import (
    BEST_NAME,
    FINAL_NAME,
    LOG_COLUMNS,
    RunFolder,
    RunFolderBusy,
    write_atomically,
    write_json,
)


def test_an_atomic_write_is_fsynced_and_leaves_no_temporary(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        run_folder.os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd)
    )
    path = write_atomically(tmp_path / "a.txt", lambda p: p.write_text("new"))
    assert path.read_text() == "new"
    assert len(synced) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"old": True})

    def fail(temporary):
        temporary.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, fail)
    assert path.read_text() == '{\n  "old": true\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_run_folder_keeps_its_records(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert not folder.holds_run()
    folder.start({"config": {"epochs": 2}})
    assert folder.holds_run()
    assert folder.log_path.read_text().strip() == ",".join(LOG_COLUMNS)
    for epoch in range(1, 4):
        folder.append_log_row(
            {"epoch": epoch, "loss": 1 / 3, "accuracy": None, "seconds": 2.0}
        )
    rows = folder.read_log()
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert (rows[0]["loss"], rows[0]["accuracy"], rows[0]["seconds"]) == (
        "0.333333",
        "",
        "2",
    )
    folder.truncate_log(1)
    assert [row["epoch"] for row in folder.read_log()] == ["1"]
    folder.record_resume({"epoch": 1})
    folder.record_resume({"epoch": 2})
    record = folder.saved_record()
    assert record["config"] == {"epochs": 2}
    assert record["resumed"] == [{"epoch": 1}, {"epoch": 2}]
    assert sorted(p.name for p in folder.path.iterdir()) == ["config.json", "log.csv"]


def test_a_saved_model_loads_back_from_the_folder(tmp_path):
    folder = RunFolder(tmp_path)
    folder.start({})
    model = TinyResNet()
    folder.save_model(model, BEST_NAME)
    assert resolve_model_path(tmp_path) == tmp_path / BEST_NAME
    folder.save_model(model, FINAL_NAME)
    # The last epoch's model, whose test figures summary.json holds, first.
    loaded, path = load_model(tmp_path)
    assert path == tmp_path / FINAL_NAME
    assert loaded.count_params() == model.count_params()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_model_paths_that_name_nothing_usable(tmp_path):
    with pytest.raises(ModelFileError, match="no .keras file") as error:
        resolve_model_path(tmp_path)
    assert error.value.usage
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ModelFileError, match="not a .keras file"):
        resolve_model_path(tmp_path / "notes.txt")
    (tmp_path / "broken.keras").write_text("x")
    with pytest.raises(ModelFileError, match="not a zip archive") as error:
        load_model(tmp_path / "broken.keras")
    assert not error.value.usage


def test_the_environment_names_backend_versions_and_device():
    environment = run_folder.environment()
    assert set(environment) == {"backend", "versions", "device"}
    assert {"python", "keras", "numpy"} <= set(environment["versions"])
    assert environment["device"]["tensor_device"]


def test_a_full_disk_is_a_one_line_write_error_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "summary.json"
    run_folder.write_json(path, {"old": True})

    def full_disk(temporary):
        temporary.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(run_folder.WriteError) as error:
        run_folder.write_atomically(path, full_disk)
    assert str(error.value) == f"cannot write {path}: No space left on device"
    assert error.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_unwritable_reason_names_the_first_existing_place(tmp_path):
    assert run_folder.unwritable_reason(tmp_path / "new" / "run") is None
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("")
    assert run_folder.unwritable_reason(tmp_path / "file" / "run") == (
        f"{tmp_path / 'file'} is a file, not a folder"
    )


def test_a_held_run_folder_refuses_a_second_holder_at_once(tmp_path):
    folder = tmp_path / "run"
    with run_folder.hold_run_folder(folder):
        with pytest.raises(RunFolderBusy, match="in use by another training process"):
            with run_folder.hold_run_folder(folder):
                pass
    with run_folder.hold_run_folder(folder):  # free again once released
        pass
    assert not folder.exists()  # nothing written: no lock file, no folder
    folder.mkdir()
    with run_folder.hold_run_folder(folder):
        (folder / "config.json").write_text("{}")
    assert [p.name for p in folder.iterdir()] == ["config.json"]


def test_a_killed_holder_leaves_no_lock(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from keras_cifar_resnet.training.run_folder import hold_run_folder\n"
            "with hold_run_folder(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(60)\n",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RunFolderBusy):
            with run_folder.hold_run_folder(folder):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folder.hold_run_folder(folder):
        pass


def test_deleting_or_replacing_files_in_a_held_folder_admits_no_second_process(
    tmp_path,
):
    folder = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from keras_cifar_resnet.training.run_folder import hold_run_folder\n"
            "with hold_run_folder(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(60)\n",
            str(folder),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert list(folder.iterdir()) == []  # no file there to delete
        os.mkfifo(folder / ".lock")  # what once hung the command
        (folder / "odd").mkdir()
        for _ in range(2):
            with pytest.raises(RunFolderBusy, match="holds a lock on the folder"):
                run_folder.refuse_if_busy(folder)
            with pytest.raises(RunFolderBusy):
                with run_folder.hold_run_folder(folder):
                    pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_folder.hold_run_folder(folder):
        pass


def test_a_dangling_link_as_the_output_folder_is_one_line(tmp_path, capsys):
    from keras_cifar_resnet.train import main

    link = tmp_path / "run"
    link.symlink_to(tmp_path / "gone")
    argv = ["--synthetic", "--model", "tiny", "--output-dir", str(link)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"keras-cifar-resnet-train: error: --output-dir {link}: {link} is a link "
        f"to {tmp_path / 'gone'}, which is missing\n"
    )


@pytest.mark.parametrize("holds", ["nothing yet", "a checkpoint"])
def test_the_train_command_refuses_a_folder_in_use_in_one_line(tmp_path, capsys, holds):
    from keras_cifar_resnet.train import main

    folder = tmp_path / "run"
    flags = ["--synthetic", "--model", "tiny", "--max-train-examples", "64"]
    with run_folder.hold_run_folder(folder):
        if holds == "a checkpoint":  # what the other process has written so far
            (folder / "config.json").write_text('{"config": {}}')
            (folder / "checkpoint.npz").write_bytes(b"")
            attempts = [
                [*flags, "--output-dir", str(folder)],
                ["--resume", str(folder)],
            ]
        else:
            attempts = [[*flags, "--epochs", "1", "--output-dir", str(folder)]]
        for argv in attempts:
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1, err
            assert err.endswith(
                f"{folder} is in use by another training process (it holds a lock "
                "on the folder); wait for it to end or choose another folder\n"
            )
    assert not (folder / "log.csv").exists()


def test_a_resumed_log_counting_from_0_is_renumbered_from_1(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.start({"config": {"epochs": 3}})
    for epoch in range(3):  # a log written when epochs were counted from 0
        folder.append_log_row({"epoch": epoch, "loss": 1.0})
    folder.truncate_log(2)
    assert [(row["epoch"], row["loss"]) for row in folder.read_log()] == [
        ("1", "1"),
        ("2", "1"),
    ]


def test_a_run_stopped_before_writing_leaves_no_folder_it_made(tmp_path):
    parent = tmp_path / "runs"
    with run_folder.hold_run_folder(parent / "first"):
        assert (parent / "first").is_dir()
    assert not parent.exists()  # neither the run's folder nor `runs/`
    with run_folder.hold_run_folder(parent / "second"):
        (parent / "second" / "config.json").write_text("{}")
    assert (parent / "second" / "config.json").is_file()
    with run_folder.hold_run_folder(parent / "third"):
        pass
    assert sorted(p.name for p in parent.iterdir()) == ["second"]


def test_the_device_is_read_from_an_array_that_names_only_its_devices(monkeypatch):
    # JAX 0.4.28 arrays have `devices()` but no `device`: without the device
    # the memory check would take a CPU run for an accelerator's.
    import keras

    class Device:
        device_kind = "cpu"

        def __str__(self):
            return "TFRT_CPU_0"

    class OldArray:
        def devices(self):
            return {Device()}

    monkeypatch.setattr(keras.ops, "zeros", lambda shape: OldArray())
    described = run_folder.device_description()
    assert described["tensor_device"] == "TFRT_CPU_0"
    assert described["device_kind"] == "cpu"
