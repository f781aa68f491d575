"""Two signals at any moment, compilation included: the documented end, no crash.

Under JAX a second Ctrl-C during the first step's compilation used to
crash the interpreter's teardown (SIGSEGV) or print a traceback from an
atexit hook. Each pair here goes to a real training process: SIGINT once
the start line is out (the run then waits for the step), SIGINT again
after an offset that falls during compilation, or after it.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keras_cifar_resnet.training.checkpoints import (
    CheckpointError,
    read_checkpoint_state,
)
from tests.backend_subprocess import TINY_RUN, current_backend, run_only_in_session

ROOT = Path(__file__).resolve().parents[1]
# Seconds between the two signals: at once, during compilation, after it.
OFFSETS = (0.0, 0.1, 0.3, 0.6, 1.0)
REPEATS = 4  # 20 pairs under JAX
TINY = [*TINY_RUN, "--epochs", "2"]


def _signal_pair(backend, offset, folder):
    """Runs the command, sends the pair; (status, stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_cifar_resnet.train", *TINY]
        + ["--output-dir", str(folder)],
        cwd=ROOT,
        env=dict(
            os.environ,
            KERAS_BACKEND=backend,
            PYTHONUNBUFFERED="1",
            PYTHONFAULTHANDLER="1",
            # Each process compiles its step afresh: no cache to skip it.
            KERAS_CIFAR_RESNET_COMPILATION_CACHE="0",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("training "):
                process.send_signal(signal.SIGINT)
                time.sleep(offset)
                process.send_signal(signal.SIGINT)
                break
        stdout, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    return process.returncode, "".join(lines) + stdout, stderr


def _check_pair(backend, offset, folder):
    status, stdout, stderr = _signal_pair(backend, offset, folder)
    where = f"{backend}, second SIGINT {offset} s after the first"
    assert status == 128 + signal.SIGINT, f"{where}: status {status}\n{stderr}"
    assert "Traceback" not in stderr and "Fatal Python error" not in stderr, (
        f"{where}\n{stderr}"
    )
    last = stdout.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGINT"), f"{where}: {last}"
    assert f"keras-cifar-resnet-train --resume {folder}" in last or (
        "nothing was written" in last
    ), f"{where}: {last}"
    if (folder / "checkpoint.npz").exists():  # whatever was kept is readable
        try:
            read_checkpoint_state(folder / "checkpoint.npz")
        except CheckpointError as error:
            raise AssertionError(f"{where}: {error}") from None


@pytest.mark.slow
def test_twenty_signal_pairs_under_jax_never_crash(tmp_path):
    run_only_in_session("jax", "it runs its own JAX processes")
    pairs = [offset for _ in range(REPEATS) for offset in OFFSETS]
    assert len(pairs) >= 20
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(_check_pair, "jax", offset, tmp_path / f"run{i}")
            for i, offset in enumerate(pairs)
        ]
        for future in futures:
            future.result()


@pytest.mark.slow
@pytest.mark.parametrize("offset", [0.3, 1.0])
def test_a_signal_pair_under_this_sessions_backend(tmp_path, offset):
    _check_pair(current_backend(), offset, tmp_path / "run")
