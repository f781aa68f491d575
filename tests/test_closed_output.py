"""A standard output closed by its reader (`| head`): a quiet stop, no traceback."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_cifar_resnet import evaluate, predict, train
from keras_cifar_resnet.closed_output import closed_stdout_guard
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.training.checkpoints import read_checkpoint_state
from tests.backend_subprocess import TINY_RUN

ROOT = Path(__file__).resolve().parents[1]


class ClosingReader(io.TextIOBase):
    """A stdout whose reader goes away after `lines` lines (`| head -N`)."""

    def __init__(self, lines):
        self.lines = lines
        self.text = ""

    def write(self, text):
        if self.text.count("\n") >= self.lines:
            raise BrokenPipeError(32, "Broken pipe")
        self.text += text
        return len(text)


def test_the_guard_calls_once_and_sends_the_rest_where_asked(monkeypatch, capsys):
    closed = []
    reader = ClosingReader(1)
    monkeypatch.setattr(sys, "stdout", reader)
    with closed_stdout_guard(lambda: closed.append(1)) as guard:
        print("one")
        print("two")
        print("three")
    assert sys.stdout is reader and guard.closed_by_reader and closed == [1]
    assert reader.text == "one\n" and capsys.readouterr().err == "two\nthree\n"
    with closed_stdout_guard(rest_to_stderr=False):
        print("dropped")
    assert capsys.readouterr().err == ""


def test_train_stops_on_a_closed_stdout_as_on_a_signal(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", ClosingReader(1))  # the start line only
    argv = [*TINY_RUN, "--epochs", "3", "--output-dir", str(folder)]
    assert train.main(argv) == 128 + signal.SIGPIPE
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.rstrip().splitlines()[-1].startswith(
        ("stopped by SIGPIPE during epoch ", "stopped by SIGPIPE after epoch ")
    )
    assert f"Continue with: keras-cifar-resnet-train --resume {folder}" in err
    state = read_checkpoint_state(folder / "checkpoint.npz")
    assert (state["epoch"], state["step"]) < (3, 0)


@pytest.mark.slow
def test_evaluate_writes_its_files_when_its_reader_is_gone(
    tmp_path, monkeypatch, capsys
):
    model_path = tmp_path / "tiny.keras"
    TinyResNet().save(model_path)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(20) % 10
    monkeypatch.setattr(
        evaluate, "load_cifar10", lambda data_dir: (None, (images, labels))
    )
    monkeypatch.setattr(sys, "stdout", ClosingReader(1))
    output = tmp_path / "report.json"
    argv = [str(model_path), "--output", str(output), "--mistakes", "0", "--quiet"]
    assert evaluate.main(argv) == 0
    assert output.is_file()
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_predict_finishes_quietly_when_its_reader_is_gone(
    tmp_path, monkeypatch, capsys
):
    from PIL import Image

    model_path = tmp_path / "tiny.keras"
    TinyResNet().save(model_path)
    rng = np.random.default_rng(0)
    images = []
    for index in range(3):
        images.append(tmp_path / f"{index}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(images[-1])
    reader = ClosingReader(0)  # gone before the results are printed
    monkeypatch.setattr(sys, "stdout", reader)
    assert predict.main([str(model_path), *map(str, images)]) == 0
    assert reader.text == ""
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Broken pipe" not in err and "1. " not in err


@pytest.mark.slow
def test_train_piped_into_head_stops_with_a_checkpoint(tmp_path):
    folder = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cifar_resnet.train", *TINY_RUN]
        + ["--epochs", "50", "--output-dir", str(folder)],
        cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().startswith("training ")
        process.stdout.close()  # `| head -1` has what it wanted
        stderr = process.stderr.read()
        process.wait(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGPIPE, stderr[-3000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert f"--resume {folder}" in stderr.splitlines()[-1]
    assert (folder / "checkpoint.npz").is_file()
