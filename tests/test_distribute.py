"""Data-parallel training: the engine setup, batch sharding, and equivalence.

The equivalence tests run one SGD step data-parallel over 2 devices on this
CPU (two virtual XLA devices on JAX, two logical CPUs on TensorFlow, two gloo
ranks under torchrun on torch) in a subprocess, `tests/distributed_step.py`,
and compare the variables with single-device steps from the same
checkpoint. The multi-process tests run the same step, and the training
command, as two processes of one device each over loopback, launched as
hosts are (`tests/multi_process.py`). Each CI session runs only its own
backend's.

Tolerance: `rtol=1e-5, atol=1e-6` on float32 values of order 0.01-1; the
engines differ from one device only in summation order (~1e-8 here), while
global and per-replica BatchNorm statistics differ by ~1e-3 after one step,
which each test also checks, so it can tell the two apart.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_cifar_resnet.data.input_pipeline import ProcessShard
from keras_cifar_resnet.training.distribute import (
    LOST_PROCESS_TIMEOUT_SECONDS,
    MODES,
    Distribution,
    DistributionError,
    SingleDevice,
    setup_distribution,
)
from tests.backend_subprocess import current_backend
from tests.multi_process import run_processes

STEP_SCRIPT = Path(__file__).with_name("distributed_step.py")
RTOL, ATOL = 1e-5, 1e-6
# Smallest largest-difference between global- and per-replica-BatchNorm
# results that shows the comparison can tell them apart (measured: ~3e-3).
DISTINGUISHABLE = 1e-4


class _Batches(keras.utils.PyDataset):
    """Global batch `i` holds images numbered `i * 8` to `i * 8 + 7`."""

    def __init__(self):
        super().__init__(workers=1, use_multiprocessing=False)
        self.epochs_begun = 0

    @property
    def num_batches(self):
        return 3

    def on_epoch_begin(self):
        self.epochs_begun += 1

    def __getitem__(self, index):
        numbers = np.arange(index * 8, index * 8 + 8)
        return numbers.reshape(8, 1, 1, 1), numbers % 10


def test_single_device_is_a_no_op():
    distribution = setup_distribution("none")
    assert isinstance(distribution, SingleDevice)
    assert (distribution.num_replicas, distribution.process_count) == (1, 1)
    assert distribution.is_chief
    batches = _Batches()
    assert distribution.shard_batches(batches) is batches
    model = types.SimpleNamespace()
    assert distribution.prepare_model(model) is model


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be one of|`mode` must be one"):
        setup_distribution("model-parallel")
    assert MODES == ("none", "data-parallel")


def test_process_shards_cover_each_global_batch_once():
    batches = _Batches()
    shards = [ProcessShard(batches, index, 4) for index in range(4)]
    assert shards[0].num_batches == 3
    for step in range(3):
        parts = [shard[step] for shard in shards]
        images = np.concatenate([images for images, _ in parts])
        labels = np.concatenate([labels for _, labels in parts])
        expected_images, expected_labels = batches[step]
        np.testing.assert_array_equal(images, expected_images)
        np.testing.assert_array_equal(labels, expected_labels)
        assert all(len(part[0]) == 2 for part in parts)
    shards[0].on_epoch_begin()
    assert batches.epochs_begun == 1


def test_uneven_split_is_a_clear_error():
    with pytest.raises(DistributionError, match="does not split over 3 processes"):
        ProcessShard(_Batches(), 0, 3)[0]


def test_a_lost_process_is_one_line_only_with_several_processes():
    class Engine(Distribution):
        def _is_lost_process(self, error):
            return isinstance(error, ConnectionError)

    engine = Engine()
    error = ConnectionError("Connection closed by peer\nengine details")
    assert engine.lost_process(error) is None  # one process: nobody to lose
    engine.process_index, engine.process_count = 1, 2
    assert engine.lost_process(ValueError("bad value")) is None
    assert engine.lost_process(error) == (
        "process 1 of 2 lost contact with another process of the run, which "
        "stopped or became unreachable (ConnectionError: Connection closed by peer)"
    )


@pytest.mark.skipif(current_backend() != "torch", reason="torch's launcher check")
def test_torch_outside_torchrun_says_how_to_launch(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DistributionError, match="torchrun --nproc-per-node"):
        setup_distribution("data-parallel")


def _child_command(arguments):
    """(command, env) running `python ARGUMENTS` on 2 devices of this backend."""
    backend = current_backend()
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONWARNINGS="ignore")
    command = [sys.executable, *map(str, arguments)]
    if backend == "jax":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
        )
    elif backend == "torch":
        command[1:1] = [
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
        ]
        # Two ranks share this CPU's cores.
        env.setdefault("OMP_NUM_THREADS", "1")
    elif backend == "tensorflow":
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return command, env


def _run_child(arguments):
    """Runs `python ARGUMENTS` on 2 devices of this backend; fails with its output."""
    command, env = _child_command(arguments)
    result = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


def _run_step(tmp_path):
    """Runs the 2-device step for the current backend; returns per-process results."""
    _run_child([STEP_SCRIPT, tmp_path])
    return _step_results(tmp_path)


def _step_results(tmp_path):
    """What each process of `distributed_step.py` wrote to `tmp_path`."""
    results = []
    for path in sorted(tmp_path.glob("result-*.npz")):
        with np.load(path) as contents:
            data = {name: contents[name] for name in contents.files}
        names = [str(name) for name in data["names"]]

        def values(key, data=data, names=names):
            if f"{key}/000" not in data:
                return None
            return [data[f"{key}/{i:03d}"] for i in range(len(names))]

        results.append(
            {
                "names": names,
                "batch_norm_statistics": str(data["batch_norm_statistics"]),
                **{
                    key: values(key)
                    for key in ("parallel", "full", "half0", "half1", "reloaded")
                },
            }
        )
    return results


def _largest_difference(left, right):
    return max(float(np.max(np.abs(a - b))) for a, b in zip(left, right, strict=True))


def _assert_close(names, actual, expected, what):
    for name, a, e in zip(names, actual, expected, strict=True):
        np.testing.assert_allclose(
            a, e, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {what}"
        )


def _is_moving_statistic(name):
    return name.endswith(("moving_mean", "moving_variance"))


@pytest.mark.slow
def test_data_parallel_step_matches_single_device(tmp_path):
    backend = current_backend()
    results = _run_step(tmp_path)
    expected_processes = 2 if backend == "torch" else 1
    assert len(results) == expected_processes
    _check_step_results(
        results, tmp_path, backend, own_moving_statistics=backend == "torch"
    )


def _check_step_results(results, tmp_path, backend, *, own_moving_statistics):
    """The data-parallel step's variables against the single-device steps'.

    `own_moving_statistics`: whether process `r` keeps half `r`'s BatchNorm
    moving statistics (else every process has half 0's, replica 0's).
    """
    for process, result in enumerate(results):
        names, parallel = result["names"], result["parallel"]
        half_average = [
            (a + b) / 2 for a, b in zip(result["half0"], result["half1"], strict=True)
        ]
        if backend == "jax":
            # XLA partitions the jitted step over the batch axis, so BatchNorm
            # sees the whole global batch: the same step as one device.
            assert result["batch_norm_statistics"] == "global"
            _assert_close(names, parallel, result["full"], "vs one device")
            assert _largest_difference(parallel, half_average) > DISTINGUISHABLE
        else:
            # Per-replica BatchNorm: each replica normalises its own half, and
            # the gradients are averaged, so the weights equal the average of
            # one step on each half alone (plain SGD is linear in the
            # gradient). Moving statistics stay per replica: TensorFlow reads
            # replica 0's copy, torch rank r keeps half r's (and so does
            # TensorFlow's worker r across workers).
            assert result["batch_norm_statistics"] in ("per replica", "per rank")
            own_half = result[f"half{process}" if own_moving_statistics else "half0"]
            for name, value, average, own in zip(
                names, parallel, half_average, own_half, strict=True
            ):
                expected = own if _is_moving_statistic(name) else average
                np.testing.assert_allclose(
                    value, expected, rtol=RTOL, atol=ATOL, err_msg=name
                )
            assert _largest_difference(parallel, result["full"]) > DISTINGUISHABLE
        if process == 0:
            # The chief's checkpoint of the data-parallel model loads into a
            # single-device one unchanged (and every model above started from
            # a single-device checkpoint).
            for name, value, reloaded in zip(
                names, parallel, result["reloaded"], strict=True
            ):
                np.testing.assert_array_equal(value, reloaded, err_msg=name)
        else:
            assert result["reloaded"] is None
    # Only the chief wrote the run's checkpoint.
    assert [p.name for p in tmp_path.glob("parallel*.npz")] == ["parallel.npz"]


TRAIN_SCRIPT = Path(__file__).with_name("distributed_train.py")
# fmt: off
TRAIN_FLAGS = [
    "--model", "tiny", "--synthetic", "--batch-size", "16",
    "--max-train-examples", "64", "--validation-size", "32",
]
# fmt: on


@pytest.mark.slow
def test_training_command_data_parallel_then_resumed_on_one_device(tmp_path):
    """`--distribute data-parallel` runs an epoch; one device finishes the run."""
    backend = current_backend()
    run_dir = tmp_path / "run"
    _run_child(
        [TRAIN_SCRIPT, "--stop-after-first-epoch", *TRAIN_FLAGS, "--epochs", "2"]
        + ["--distribute", "data-parallel", "--output-dir", run_dir]
    )
    # Only the chief wrote, and nothing half-written was left behind.
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "best.keras",
        "checkpoint.npz",
        "config.json",
        "log.csv",
    ]
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config"]["distribute"] == "data-parallel"
    assert record["distribution"]["num_replicas"] == 2
    assert len((run_dir / "log.csv").read_text().splitlines()) == 2  # header, epoch 1

    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONWARNINGS="ignore")
    resume = [
        sys.executable,
        "-m",
        "keras_cifar_resnet.train",
        "--resume",
        str(run_dir),
        "--distribute",
        "none",
    ]
    result = subprocess.run(
        resume, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert len((run_dir / "log.csv").read_text().splitlines()) == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 2


MULTI_PROCESS_TIMEOUT = 240  # seconds; JAX needs ~60 here when the machine is busy


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory):
    """JAX's compilation cache, shared by this module's multi-process launches."""
    return tmp_path_factory.mktemp("jax-cache")


def _all_succeeded(finished):
    for index, done in enumerate(finished):
        what = f"process {index} failed ({done.returncode})"
        assert done.returncode == 0, f"{what}:\n{done.output()}"


@pytest.mark.slow
def test_multi_process_step_matches_single_device(tmp_path, jax_cache):
    """Two processes over loopback, one device each: the hosts' path."""
    backend = current_backend()
    finished = run_processes(
        backend,
        [[str(STEP_SCRIPT), str(tmp_path)]] * 2,
        timeout=MULTI_PROCESS_TIMEOUT,
        cache_dir=jax_cache,
    )
    _all_succeeded(finished)
    results = _step_results(tmp_path)
    assert len(results) == 2
    _check_step_results(
        results, tmp_path, backend, own_moving_statistics=backend != "jax"
    )


def _folder_contents(folder):
    """{file name: bytes} of everything in `folder` ({} when it does not exist)."""
    if not folder.exists():
        return {}
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.slow
def test_multi_process_run_survives_a_lost_process_and_resumes_either_way(
    tmp_path, jax_cache
):
    """Two processes over loopback, each with its own copy of the run folder.

    Process 1's folder stands for a second host's disk: it must never be
    written. 1) Two processes start a 3-epoch run; process 1 dies as epoch 2
    begins, and process 0 must stop with one clear line in bounded time,
    leaving the epoch-1 checkpoint. 2) One process resumes it and stops after
    epoch 2. 3) Two processes resume that, on copies of the folder, and finish.
    """
    backend = current_backend()
    chief_dir, other_dir = tmp_path / "host0" / "run", tmp_path / "host1" / "run"
    train = ["-m", "keras_cifar_resnet.train"]
    flags = [*TRAIN_FLAGS, "--epochs", "3", "--distribute", "data-parallel"]

    chief, other = run_processes(
        backend,
        [
            [*train, *flags, "--output-dir", chief_dir],
            [TRAIN_SCRIPT, "--die-at-epoch", "2", *flags, "--output-dir", other_dir],
        ],
        timeout=MULTI_PROCESS_TIMEOUT,
        cache_dir=jax_cache,
    )
    assert "dying at epoch 2" in other.stdout, other.output()
    # JAX's own exit barrier then aborts the process (status -6), after the line.
    assert chief.returncode != 0, chief.output()
    assert "error: process 0 of 2 lost contact with another process" in chief.stderr, (
        chief.output()
    )
    assert f"--resume {chief_dir}" in chief.stderr, chief.output()
    waited = chief.seconds - other.seconds
    assert waited < LOST_PROCESS_TIMEOUT_SECONDS + 20, f"stopped after {waited:.0f} s"
    assert sorted(_folder_contents(chief_dir)) == [
        "best.keras",
        "checkpoint.npz",
        "config.json",
        "log.csv",
    ]
    assert len((chief_dir / "log.csv").read_text().splitlines()) == 2  # epoch 1
    assert _folder_contents(other_dir) == {}

    # Multi-process -> one process (one device).
    _, single_env = _child_command([])
    resume = subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), "--stop-after-first-epoch"]
        + ["--resume", str(chief_dir), "--distribute", "none"],
        env=single_env | {"XLA_FLAGS": ""},
        capture_output=True,
        text=True,
        timeout=MULTI_PROCESS_TIMEOUT,
    )
    assert resume.returncode == 0, f"{resume.stdout[-3000:]}\n{resume.stderr[-3000:]}"
    assert len((chief_dir / "log.csv").read_text().splitlines()) == 3  # epoch 2

    # One process -> two processes, each reading its own copy of the folder.
    shutil.copytree(chief_dir, other_dir)
    before = _folder_contents(other_dir)
    finished = run_processes(
        backend,
        [
            [*train, "--resume", folder, "--distribute", "data-parallel"]
            for folder in (chief_dir, other_dir)
        ],
        timeout=MULTI_PROCESS_TIMEOUT,
        cache_dir=jax_cache,
    )
    _all_succeeded(finished)
    assert _folder_contents(other_dir) == before
    summary = json.loads((chief_dir / "summary.json").read_text())
    assert summary["epochs"] == 3
    assert len((chief_dir / "log.csv").read_text().splitlines()) == 4
    record = json.loads((chief_dir / "config.json").read_text())
    assert [r["distribution"]["process_count"] for r in record["resumed"]] == [1, 2]
