"""Data-parallel training on each backend's own distributed engine.

`setup_distribution("data-parallel")` is the one place that sets it up, and
the object it returns is all the training loop needs to know:

- JAX: `keras.distribution.DataParallel` over `keras.distribution.list_devices()`
  (every device of every process); for several hosts, `jax.distributed`
  first, configured by Keras's environment variables
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_NUM_PROCESSES` and
  `KERAS_DISTRIBUTION_PROCESS_ID` (gloo collectives on CPUs). Each process
  feeds its slice of every global batch (`shard_batches`). XLA partitions
  the jitted step, so BatchNorm statistics are global.
- TensorFlow: `tf.distribute.MirroredStrategy` over the local GPUs (or the
  logical CPUs when there is no GPU), `MultiWorkerMirroredStrategy` when
  `TF_CONFIG` names several workers. (Keras 3.15's `keras.distribution` for
  TensorFlow is an unfinished DTensor prototype marked "DO NOT USE".) The
  model is built and compiled in `scope()`; Keras splits each global batch
  over the replicas and `optimizer.apply` sums their gradients, so the train
  step divides its objective by the number of replicas. BatchNorm statistics
  are per replica. Every worker feeds the global batches. Reading the
  metrics' totals is a collective across workers (`join_chief_read`).
- torch: `torch.distributed` (NCCL on GPUs, gloo on CPUs) launched by
  `torchrun`, one process per device; the Keras model is a `torch.nn.Module`
  and is wrapped in `DistributedDataParallel`, whose backward hooks average
  the gradients over the ranks. Each rank reads its slice of every global
  batch (`shard_batches`). BatchNorm statistics are per rank.

With `"none"` every method is a no-op: one process, one device.

The global batch (`--batch-size`) is the same in every mode: each step
averages the gradient over that many images wherever they are computed, so
the learning rate needs no change when the device count changes. Only the
chief process (`is_chief`) writes files. When another process of the run
dies, the engine's error is turned into one line (`lost_process`).

Frameworks are imported lazily, only the current backend's, so a JAX run
imports neither TensorFlow nor torch.

Example:

>>> distribution = setup_distribution("data-parallel")
>>> with distribution.scope():
...     model = ResNet18()
...     model.compile(...)
>>> distribution.prepare_model(model)
>>> model.fit(distribution.shard_batches(batches), ...)
"""

from __future__ import annotations

import contextlib
import json
import os

import keras

from keras_cifar_resnet.config import DISTRIBUTE as MODES
from keras_cifar_resnet.data.input_pipeline import ProcessShard, fit_input
from keras_cifar_resnet.errors import (  # noqa: F401 -- LostProcessError: its old home
    DistributionError,
    LostProcessError,
)

# How long a data-parallel process waits on one that stopped answering (its
# heartbeats, its collectives) before it stops too, in seconds.
LOST_PROCESS_TIMEOUT_SECONDS = 30
# How long finished JAX processes wait at exit for the chief, which still
# evaluates the test set and writes the run's last files, in seconds.
FINISH_TIMEOUT_SECONDS = 3600


class Distribution:
    """How a run spreads over devices; as it is, one process on one device.

    The engines below override what differs; a method they leave alone does
    what one device needs (mostly nothing).

    Attributes:
        mode: str, `"none"` or `"data-parallel"`.
        num_replicas: int, devices that compute a part of each global batch.
        process_index: int, this process among `process_count`.
        process_count: int, processes taking part (hosts, or torch ranks).
    """

    mode = "none"
    engine = "single device"
    # Per-replica or global BatchNorm batch statistics (documented per engine).
    batch_norm_statistics = "global"
    # Whether evaluation's last, partial batch must split evenly too
    # (`batch_plan.plan_batches` checks it).
    even_evaluation_batches = False

    def __init__(self):
        self.num_replicas = 1
        self.process_index = 0
        self.process_count = 1

    @property
    def is_chief(self):
        """Whether this process writes the run's files (only one does)."""
        return self.process_index == 0

    def scope(self):
        """The context in which to create and compile the model."""
        return contextlib.nullcontext()

    def local_scope(self):
        """A context in which models use this process's devices only.

        For work one process does alone (the chief's final test-set
        evaluation), which must not wait on the other processes.
        """
        return contextlib.nullcontext()

    def prepare_model(self, model):
        """Readies the built, compiled `model` for distributed steps."""
        return model

    def join_chief_read(self, variables):
        """Takes part in the chief's reading of `variables` (for its checkpoint).

        A no-op except where reading a variable is a collective that every
        process must join (TensorFlow across workers).
        """

    def shard_batches(self, batches):
        """This process's part of each global batch of `batches` (a PyDataset)."""
        if self.process_count == 1:
            return batches
        return ProcessShard(batches, self.process_index, self.process_count)

    def fit_input(self, batches, steps):
        """What this process's `fit` reads of its first `steps` batches.

        A single process hands the batches to the backend's own input
        pipeline (`input_pipeline.fit_input`); several feed their shards.
        """
        if self.process_count == 1:
            return fit_input(batches, steps)
        return self.shard_batches(batches)

    def lost_process(self, error):
        """What `error` says about a lost process (one line), or None.

        The engine's own sign, raised in this process, that another process
        of the run died or stopped answering: its collectives fail, or the
        coordination service stops hearing its heartbeats.
        """
        if self.process_count == 1 or not self._is_lost_process(error):
            return None
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        return (
            f"process {self.process_index} of {self.process_count} lost contact "
            f"with another process of the run, which stopped or became "
            f"unreachable ({type(error).__name__}: {first_line[:300]})"
        )

    def _is_lost_process(self, error):
        return False

    def close(self):
        """Releases what `setup_distribution` started."""

    def describe(self):
        """A one-line description for the run's log and config.json."""
        return (
            f"{self.engine}: {self.num_replicas} replica(s), process "
            f"{self.process_index} of {self.process_count}, BatchNorm statistics "
            f"{self.batch_norm_statistics}"
        )

    def to_dict(self):
        return {
            "mode": self.mode,
            "engine": self.engine,
            "num_replicas": self.num_replicas,
            "process_count": self.process_count,
            "batch_norm_statistics": self.batch_norm_statistics,
        }


class SingleDevice(Distribution):
    """One process on one device: `--distribute none`."""


class JAXDataParallel(Distribution):
    """`keras.distribution.DataParallel` over every device of every process."""

    mode = "data-parallel"
    engine = "keras.distribution.DataParallel (JAX)"
    # The batch axis is sharded, and XLA's SPMD partitioner turns the batch
    # mean/variance into an all-reduce over it: statistics of the global batch.
    batch_norm_statistics = "global"
    # Every batch, evaluation's too, is sharded evenly over the devices.
    even_evaluation_batches = True

    def __init__(self):
        super().__init__()
        import jax

        num_processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
        if num_processes > 1:
            _start_jax_processes(num_processes)
        devices = keras.distribution.list_devices()
        # Each process already feeds only its slice (shard_batches); Keras's
        # auto-sharding would accept nothing but a tf.data.Dataset.
        self.distribution = keras.distribution.DataParallel(
            devices=devices, auto_shard_dataset=False
        )
        keras.distribution.set_distribution(self.distribution)
        self.num_replicas = len(devices)
        # Keras's JAX trainer expects each process to feed its own part of
        # the global batch (jax.make_array_from_process_local_data).
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()

    @contextlib.contextmanager
    def local_scope(self):
        # Without a distribution, Keras's JAX trainer neither lays variables
        # out over the global mesh nor shards the input over it.
        keras.distribution.set_distribution(None)
        try:
            yield
        finally:
            keras.distribution.set_distribution(self.distribution)

    def _is_lost_process(self, error):
        import jax

        # Measured on CPU: "Gloo all-reduce failed: ... Connection reset by
        # peer" at the first collective after another process died.
        return isinstance(error, jax.errors.JaxRuntimeError) and any(
            sign in str(error)
            for sign in ("Gloo", "Connection", "heartbeat", "UNAVAILABLE")
        )

    def close(self):
        keras.distribution.set_distribution(None)


def _start_jax_processes(num_processes):
    """`jax.distributed.initialize` from Keras's KERAS_DISTRIBUTION_* variables.

    What `keras.distribution.initialize()` does, with two timeouts of its
    own. Heartbeats: `LOST_PROCESS_TIMEOUT_SECONDS` instead of JAX's 100 s,
    which is how long the exit's shutdown barrier holds a process after
    another one died. The barrier itself: `FINISH_TIMEOUT_SECONDS` instead of
    300 s, as the other processes wait there while the chief evaluates the
    test set alone. (Keras's version also agrees on a global random seed
    across processes; this package seeds Python's `random`, where Keras
    draws its seeds, identically in every process.) Must precede any
    computation. On CPUs the collectives run over gloo, JAX's default.
    """
    import jax

    # Keras takes the first of several addresses as JAX's coordinator; left
    # unset, JAX detects them where it can (TPU pods, Slurm, Open MPI).
    addresses = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES", "")
    process_id = os.environ.get("KERAS_DISTRIBUTION_PROCESS_ID")
    jax.distributed.initialize(
        coordinator_address=addresses.split(",")[0] or None,
        num_processes=num_processes,
        process_id=None if process_id is None else int(process_id),
        heartbeat_timeout_seconds=LOST_PROCESS_TIMEOUT_SECONDS,
        shutdown_timeout_seconds=FINISH_TIMEOUT_SECONDS,
    )


class TensorFlowDataParallel(Distribution):
    """`tf.distribute.MirroredStrategy`, or `MultiWorkerMirroredStrategy`."""

    mode = "data-parallel"
    # Keras's BatchNormalization computes moments per replica unless
    # `synchronized=True`, which ResNet does not set.
    batch_norm_statistics = "per replica"

    def __init__(self):
        super().__init__()
        import tensorflow as tf

        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        workers = sum(len(cluster.get(kind, ())) for kind in ("chief", "worker"))
        if workers > 1:
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy()
            resolver = self.strategy.cluster_resolver
            task_type, task_id = resolver.task_type, resolver.task_id
            order = [("chief", i) for i in range(len(cluster.get("chief", ())))]
            order += [("worker", i) for i in range(len(cluster.get("worker", ())))]
            self.process_index = order.index((task_type, task_id))
            self.process_count = len(order)
            self.engine = "tf.distribute.MultiWorkerMirroredStrategy"
        else:
            devices = [d.name for d in tf.config.list_logical_devices("GPU")]
            devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
            self.strategy = tf.distribute.MirroredStrategy(devices)
            self.engine = "tf.distribute.MirroredStrategy"
        self.num_replicas = self.strategy.num_replicas_in_sync

    def _is_lost_process(self, error):
        import tensorflow as tf

        # Measured: UnavailableError "Collective ops is aborted by: ... The
        # following tasks are unhealthy (stopped sending heartbeats)".
        return isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError))

    def scope(self):
        # Variables created here are mirrored on every replica; Keras's fit
        # then runs the step on each replica with its part of the batch.
        return self.strategy.scope()

    def join_chief_read(self, variables):
        # The metrics' totals are sync-on-read: reading one sums the replicas'
        # copies, across workers an all-reduce, so the chief's read of them
        # for its checkpoint waits until every worker reads them too.
        if self.process_count > 1:
            for variable in variables:
                keras.ops.convert_to_numpy(variable)

    def shard_batches(self, batches):
        # Every worker feeds the global batches; tf.distribute splits each
        # into the replicas' slices, across workers too, itself.
        return batches


class TorchDataParallel(Distribution):
    """`torch.distributed` + `DistributedDataParallel`, one process per device."""

    mode = "data-parallel"
    engine = "torch.distributed DistributedDataParallel"
    # Keras's BatchNormalization is not torch's, so SyncBatchNorm cannot
    # replace it: each rank normalises with its own slice's statistics and
    # keeps its own moving averages (rank 0's are the ones saved).
    batch_norm_statistics = "per rank"

    def __init__(self):
        super().__init__()
        import torch
        import torch.distributed as dist

        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            raise DistributionError(
                "--distribute data-parallel on torch runs one process per device "
                "under torchrun: torchrun --nproc-per-node=N -m "
                "keras_cifar_resnet.train --distribute data-parallel ..."
            )
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            # Before Keras creates any tensor: its "cuda" device is the
            # current one, which must be this rank's GPU.
            torch.cuda.set_device(self.local_rank)
            backend = "nccl"
        else:
            backend = "gloo"
        self._started = not dist.is_initialized()
        if self._started:
            dist.init_process_group(backend)
        self.process_index = dist.get_rank()
        self.process_count = self.num_replicas = dist.get_world_size()
        self.engine = f"{self.engine} ({backend})"

    def _is_lost_process(self, error):
        # Measured on CPU: RuntimeError "[.../gloo/transport/tcp/pair.cc]
        # Connection closed by peer" in the backward pass's all-reduce.
        # (torch.distributed.DistError is a RuntimeError too.)
        return isinstance(error, RuntimeError) and any(
            sign in str(error) for sign in ("gloo", "NCCL", "Connection")
        )

    def prepare_model(self, model):
        import torch

        if not model.built or model.optimizer is None:
            raise ValueError("prepare_model needs a built and compiled model")
        device_ids = [self.local_rank] if torch.cuda.is_available() else None
        # DDP broadcasts rank 0's parameters (weights, BatchNorm statistics)
        # now, and from then on averages gradients during backward: the
        # forward pass must go through the wrapper, which the torch train
        # step then calls.
        model.use_distributed_module(
            torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
        )
        return model

    def close(self):
        import torch.distributed as dist

        if self._started and dist.is_initialized():
            dist.destroy_process_group()


_ENGINES = {
    "jax": JAXDataParallel,
    "tensorflow": TensorFlowDataParallel,
    "torch": TorchDataParallel,
}


def setup_distribution(mode="none", backend=None):
    """Starts data-parallel training on `backend`'s engine (see the module doc).

    Call it before the model (or any tensor) is created: JAX's multi-host
    initialisation, the torch process group and the device a torch rank uses
    must come first.

    Args:
        mode: str, one of `MODES`. Defaults to `"none"`.
        backend: str, the Keras backend. Defaults to the current one.

    Returns:
        A `Distribution`: `SingleDevice` for `"none"`, else the backend's
        engine.

    Raises:
        ValueError: an unknown mode or backend.
        DistributionError: the engine cannot start as launched.
    """
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {MODES}. Received: mode={mode!r}")
    if mode == "none":
        return SingleDevice()
    backend = backend or keras.backend.backend()
    if backend not in _ENGINES:
        raise ValueError(
            f"data-parallel training runs on {sorted(_ENGINES)}. "
            f"Received: backend={backend!r}"
        )
    return _ENGINES[backend]()
