"""Run Python code under a given Keras backend, in a fresh process.

The backend is fixed per process, so cross-backend checks (weights saved
under one backend, loaded under another) need a subprocess each.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

BACKENDS = ("jax", "tensorflow", "torch")
# The test session that runs the checks which compare every backend themselves
# (each session would repeat the same subprocesses).
CROSS_BACKEND_SESSION = "jax"
# The smallest training run: the tiny model, 64 synthetic images, 4 steps an
# epoch, no validation.
TINY_RUN = [
    "--synthetic",
    "--model",
    "tiny",
    "--max-train-examples",
    "64",
    "--batch-size",
    "16",
    "--validation-size",
    "0",
]


def current_backend():
    import keras

    return keras.backend.backend()


def run_only_in_session(backend, what):
    """Skips the calling test unless this session's backend is `backend`.

    For a test whose work does not depend on the session's backend: it runs
    once, in that session, instead of the same in all three.
    """
    import pytest

    if current_backend() != backend:
        pytest.skip(f"{what}; runs once, in the {backend} test session")


def run_under_backend(backend, code, *, timeout=300, cwd=None):
    """Runs `code` with KERAS_BACKEND=backend; returns its stdout.

    Raises AssertionError with the child's output when it fails, so a test
    shows why.
    """
    return run_command_under_backend(
        backend, ["-c", textwrap.dedent(code)], timeout=timeout, cwd=cwd
    )


def run_command_under_backend(backend, arguments, *, timeout=300, cwd=None):
    """Runs `python ARGUMENTS...` with KERAS_BACKEND=backend; returns its stdout.

    Raises AssertionError with the child's output when it fails.
    """
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, *arguments],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"child under {backend} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stdout
