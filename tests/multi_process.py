"""Several processes of one data-parallel run on this machine, over loopback.

Each process stands in for a host: it is launched the way the README tells
a user to launch one host of the backend, with addresses on 127.0.0.1 and
ports that were free a moment ago (bound to port 0, then released).

- JAX: `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `..._NUM_PROCESSES`,
  `..._PROCESS_ID` (one CPU device per process, gloo collectives).
- TensorFlow: `TF_CONFIG` naming every worker.
- torch: `torchrun --nnodes=N --nproc-per-node=1 --node-rank=I` with a
  static rendezvous on process 0's address.

Every process runs under a deadline: when one is passed, all are killed (their
whole process groups, for torchrun's children) and the test fails with their
output, so a hang fails instead of blocking CI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass


def free_ports(count):
    """`count` distinct TCP ports on 127.0.0.1 that were free just now."""
    sockets = []
    try:
        for _ in range(count):
            bound = socket.socket()
            bound.bind(("127.0.0.1", 0))
            sockets.append(bound)
        return [bound.getsockname()[1] for bound in sockets]
    finally:
        for bound in sockets:
            bound.close()


def _base_env(backend, cache_dir=None):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        PYTHONWARNINGS="ignore",
        TF_CPP_MIN_LOG_LEVEL="2",
        # The processes share this machine's cores.
        OMP_NUM_THREADS="1",
    )
    # One device per process: nothing left of the 2-virtual-device tests.
    env.pop("XLA_FLAGS", None)
    for name in ("TF_CONFIG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR"):
        env.pop(name, None)
    if cache_dir is not None and backend == "jax":
        # Each process compiles a program per variable it creates on the
        # global mesh (~30 s here); later launches in a test reuse them.
        env.update(
            JAX_COMPILATION_CACHE_DIR=str(cache_dir),
            JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
        )
    return env


def process_commands(backend, arguments, cache_dir=None):
    """[(command, env)], one per entry of `arguments` (each `python` arguments).

    Args:
        backend: str, the Keras backend.
        arguments: list of lists: process `i` runs `python *arguments[i]`
            (a script path or `-m module`, then its flags).
        cache_dir: a folder for JAX's compilation cache, or None.
    """
    count = len(arguments)
    python = [sys.executable]
    commands = []
    if backend == "jax":
        (port,) = free_ports(1)
        for index, args in enumerate(arguments):
            env = _base_env(backend, cache_dir) | {
                "KERAS_DISTRIBUTION_JOB_ADDRESSES": f"127.0.0.1:{port}",
                "KERAS_DISTRIBUTION_NUM_PROCESSES": str(count),
                "KERAS_DISTRIBUTION_PROCESS_ID": str(index),
            }
            commands.append(([*python, *args], env))
    elif backend == "tensorflow":
        workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
        for index, args in enumerate(arguments):
            tf_config = {
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": index},
            }
            env = _base_env(backend) | {"TF_CONFIG": json.dumps(tf_config)}
            commands.append(([*python, *args], env))
    elif backend == "torch":
        (port,) = free_ports(1)
        for index, args in enumerate(arguments):
            torchrun = [
                *python,
                "-m",
                "torch.distributed.run",
                f"--nnodes={count}",
                "--nproc-per-node=1",
                f"--node-rank={index}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
            ]
            commands.append(([*torchrun, *args], _base_env(backend)))
    else:
        raise ValueError(f"no multi-process launch for backend {backend!r}")
    return commands


@dataclass
class Finished:
    """One process's end: exit status, output, and seconds from the launch
    to its exit (None if it was killed at the deadline)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def output(self):
        return f"{self.stdout[-3000:]}\n{self.stderr[-3000:]}"


def run_processes(backend, arguments, *, timeout, cache_dir=None):
    """Runs one process per entry of `arguments` together; their `Finished`.

    Raises AssertionError, with every process's output, when they are not all
    done within `timeout` seconds (all of them are killed then).
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as folder:
        running = []
        for index, (command, env) in enumerate(
            process_commands(backend, arguments, cache_dir)
        ):
            # Files, not pipes: a process never blocks on a full pipe.
            out = open(os.path.join(folder, f"{index}.out"), "w+")  # noqa: SIM115
            err = open(os.path.join(folder, f"{index}.err"), "w+")  # noqa: SIM115
            process = subprocess.Popen(
                command, env=env, stdout=out, stderr=err, start_new_session=True
            )
            running.append((process, out, err))
        ended = {}
        while len(ended) < len(running):
            for index, (process, _, _) in enumerate(running):
                if index not in ended and process.poll() is not None:
                    ended[index] = time.monotonic() - started
            if time.monotonic() - started > timeout:
                break
            time.sleep(0.1)
        timed_out = len(ended) < len(running)
        finished = []
        for index, (process, out, err) in enumerate(running):
            _kill_group(process)
            process.wait()
            out.seek(0)
            err.seek(0)
            finished.append(
                Finished(process.returncode, out.read(), err.read(), ended.get(index))
            )
            out.close()
            err.close()
    if timed_out:
        outputs = [
            f"--- process {index} ({'exited' if done.seconds else 'killed'}):\n"
            + done.output()
            for index, done in enumerate(finished)
        ]
        raise AssertionError(
            f"{len(running)} processes on {backend} not all done within "
            f"{timeout} s:\n" + "\n".join(outputs)
        )
    return finished


def _kill_group(process):
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
