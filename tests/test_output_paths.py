"""Outputs never clobber: the model read, run files, devices, pipes, own files."""

from __future__ import annotations

import json
import os

import pytest

from keras_cifar_resnet import evaluate, train
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.output_paths import clobber_problem, foreign_run_files
from keras_cifar_resnet.training.run_folder import WriteError, write_atomically


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "victim.keras"
    TinyResNet().save(path)
    return path


@pytest.fixture
def no_evaluation(monkeypatch):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(evaluate, "load_model", load_model)


def _one_line(capsys):
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    return error


def test_evaluate_refuses_to_write_over_the_model_it_reads(
    model_file, no_evaluation, capsys
):
    before = model_file.read_bytes()
    assert evaluate.main([str(model_file), "--output", str(model_file)]) == 2
    error = _one_line(capsys)
    assert error == (
        f"error: --output {model_file} is {model_file}, the model being read; "
        "choose another --output"
    )
    assert model_file.read_bytes() == before


def test_evaluate_refuses_to_write_over_a_run_folders_config(
    model_file, no_evaluation, tmp_path, capsys
):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"config": {}}))
    assert evaluate.main([str(model_file), "--output", str(config)]) == 2
    assert _one_line(capsys) == (
        f"error: --output {config} is the config.json of the training run in "
        f"{tmp_path}; choose another --output"
    )
    assert json.loads(config.read_text()) == {"config": {}}


@pytest.mark.parametrize("kind", ["device", "fifo", "picture-folder"])
def test_evaluate_refuses_devices_pipes_and_folders_before_any_work(
    kind, model_file, no_evaluation, tmp_path, capsys
):
    output = tmp_path / "report.json"
    if kind == "device":
        output, said = "/dev/null", "is a device, not a regular file"
    elif kind == "fifo":
        os.mkfifo(output)
        said = "is a pipe (FIFO), not a regular file"
    else:
        (tmp_path / "report-mistakes.png").mkdir()
        said = "is a folder"
    assert evaluate.main([str(model_file), "--output", str(output)]) == 2
    error = _one_line(capsys)
    assert error.startswith(f"error: --output {output}") and said in error, error


def test_train_refuses_a_folder_of_a_users_own_files(tmp_path, monkeypatch, capsys):
    def prepare_data(config):
        raise AssertionError("the data was loaded before the output was checked")

    monkeypatch.setattr("keras_cifar_resnet.training.loop.prepare_data", prepare_data)
    for name in ("best.keras", "log.csv", "summary.json", "notes.txt"):
        (tmp_path / name).write_text("mine")
    argv = ["--model", "tiny", "--synthetic", "--output-dir", str(tmp_path)]
    assert train.main(argv) == 2
    assert _one_line(capsys) == (
        f"keras-cifar-resnet-train: error: --output-dir {tmp_path} is not a run "
        "folder (no config.json) but holds log.csv, best.keras, summary.json, "
        "which a run would write over; move them or choose another folder"
    )
    for name in ("best.keras", "log.csv", "summary.json"):
        assert (tmp_path / name).read_text() == "mine"


def test_a_run_folder_and_an_empty_folder_hold_no_foreign_files(tmp_path):
    assert foreign_run_files(tmp_path) == []
    assert foreign_run_files(tmp_path / "missing") == []
    (tmp_path / "log.csv").write_text("")
    assert foreign_run_files(tmp_path) == ["log.csv"]
    (tmp_path / "config.json").write_text("{}")
    assert foreign_run_files(tmp_path) == []


def test_a_dangling_link_is_refused(tmp_path):
    link = tmp_path / "report.json"
    link.symlink_to(tmp_path / "loop")
    (tmp_path / "loop").symlink_to(link)
    assert clobber_problem(link).startswith("cannot be used (")


def test_an_atomic_write_renames_over_a_regular_file_only(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="exists and is not a regular file"):
        write_atomically(fifo, lambda temporary: temporary.write_text("x"))
    assert os.path.exists(fifo) and not os.path.isfile(fifo)
    assert not [p for p in tmp_path.iterdir() if p.name != "fifo"]
