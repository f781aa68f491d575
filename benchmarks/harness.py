"""Times the package's own compiled Keras train step, as `fit` calls it.

Nothing here re-implements the step: the model and `compile` are the
package's, and each step is one call of Keras's `make_train_function()`,
fed as each backend's `fit` feeds it. How it is timed, synchronised and
measured: benchmarks/README.md, "What is measured, and how".
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import time

import keras
import numpy as np

from keras_cifar_resnet.config import TrainConfig
from keras_cifar_resnet.training import build
from keras_cifar_resnet.training.precision_support import (
    accelerator_present,
    dtype_policy,
)

# The default recipe, its learning rate held at the peak (a schedule costs
# nothing measurable); benchmarks/torch_reference.py takes the same values.
RECIPE = TrainConfig(schedule="constant")
PRECISIONS = {"float32": "float32", "mixed": "mixed_bfloat16"}
JAX_STATE = (
    "trainable_variables",
    "non_trainable_variables",
    "optimizer_variables",
    "metrics_variables",
)


def synthetic_batches(batch_size, count=4, seed=0):
    """`count` batches of random uint8 NHWC images and int32 labels, as numpy."""
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 256, size=(batch_size, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, size=(batch_size,), dtype=np.int32),
        )
        for _ in range(count)
    ]


class PeakMemory:
    """Peak memory of one measurement: GPU allocator peak, or the process RSS.

    CPU: VmHWM, reset through /proc/self/clear_refs (else `ru_maxrss`, the
    peak so far); GPU: torch's allocator peak, or JAX's, which cannot be reset.
    """

    def __init__(self, backend):
        self.backend = backend
        self.kind = None

    def reset(self):
        if self.backend == "torch" and gpu_present("torch"):
            import torch

            torch.cuda.reset_peak_memory_stats()
            self.kind = "gpu_allocated_peak"
        elif self.backend == "jax" and _jax_gpu() is not None:
            self.kind = "gpu_peak_so_far"
        else:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "rss_peak"
            except OSError:
                self.kind = "rss_peak_so_far"

    def read_mib(self):
        if self.kind == "gpu_allocated_peak":
            import torch

            return torch.cuda.max_memory_allocated() / 2**20
        if self.kind == "gpu_peak_so_far":
            stats = _jax_gpu().memory_stats() or {}
            return stats.get("peak_bytes_in_use", 0) / 2**20
        if self.kind == "rss_peak":
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        # ru_maxrss is in KiB on Linux.
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jax_gpu():
    import jax

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    return gpus[0] if gpus else None


class StepRunner:
    """What the benchmarks call: `first_step()`, `run(steps)`, `predict(steps)`
    and `finish()`, on `self.batches` in turn."""

    _next = 0

    def _batch(self):
        batch = self.batches[self._next % len(self.batches)]
        self._next += 1
        return batch

    def first_step(self):
        self.run(1)

    def finish(self):
        pass


class KerasTrainStep(StepRunner):
    """One compiled model and its batches; `run(steps)` trains that many steps.

    `precision` is `float32` or `mixed` (`mixed_bfloat16`); `jit_compile`,
    `fused_batch_norm` and `fused_conv` are the `--jit-compile`,
    `--batch-norm` and `--conv` options of benchmarks/README.md.
    """

    def __init__(
        self,
        model_name,
        batch_size,
        precision,
        jit_compile="auto",
        fused_batch_norm=True,
        fused_conv=True,
        width_multiplier=1.0,
    ):
        self.backend = keras.backend.backend()
        self.batch_size = batch_size
        config = dataclasses.replace(
            RECIPE,
            model=model_name,
            width_multiplier=width_multiplier,
            jit_compile=jit_compile,
        )
        # The policy is read when layers are built; the package's context
        # restores it, so the next configuration starts from the default.
        with dtype_policy(PRECISIONS[precision]):
            model = build.build_model(
                config, fused_batch_norm=fused_batch_norm, fused_conv=fused_conv
            )
            self.model = build.compile_model(model, config, steps_per_epoch=1)
        # As the backend's tensors, on its default device.
        self.batches = [
            tuple(map(keras.ops.convert_to_tensor, batch))
            for batch in synthetic_batches(batch_size)
        ]
        self._state = None

    def first_step(self):
        """The first step, through `train_on_batch`: it builds and compiles."""
        self.model.train_on_batch(*self._batch(), return_dict=True)

    def run(self, steps):
        """`steps` compiled train steps, then a synchronisation; returns the loss."""
        model = self.model
        if self.backend == "jax":
            import jax

            if self._state is None:
                self._state = model._get_jax_state(**dict.fromkeys(JAX_STATE, True))
            for _ in range(steps):
                logs, self._state = model.train_function(
                    self._state, iter([self._batch()])
                )
            jax.block_until_ready((logs, self._state))
        elif self.backend == "torch":
            model.train()
            for _ in range(steps):
                logs = model.train_function([self._batch()])
            if gpu_present("torch"):
                import torch

                torch.cuda.synchronize()
        else:
            for _ in range(steps):
                logs = model.train_function(iter([self._batch()]))
        return float(keras.ops.convert_to_numpy(logs["loss"]))

    def finish(self):
        """Writes JAX's threaded state back into the model's variables."""
        if self.backend == "jax" and self._state is not None:
            self.model._jax_state = dict(zip(JAX_STATE, self._state, strict=True))
            self.model._jax_state_synced = False
            self.model.jax_state_sync()
            self._state = None

    def predict(self, steps):
        """`steps` inference batches through `predict_on_batch` (host copy)."""
        for _ in range(steps):
            logits = self.model.predict_on_batch(self._batch()[0])
        return float(np.asarray(logits).ravel()[0])


def _machine_busy_seconds():
    """CPU seconds all processes have used since boot (/proc/stat), or None."""
    try:
        with open("/proc/stat") as file:
            fields = file.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal ...: all but idle, iowait
    ticks = [int(v) for v in fields[1:]]
    busy = sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


@dataclasses.dataclass
class CPUUse:
    """Cores kept busy over a stretch, by this process and by all the others.

    `other_busy_cores` comes from /proc/stat (None elsewhere): unlike the load
    average it does not lag, so two rows can be checked for an equal machine.
    """

    wall: float = 0.0
    cpu: float = 0.0
    machine: float | None = None

    def __enter__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self._machine = _machine_busy_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        after = _machine_busy_seconds()
        if after is not None and self._machine is not None:
            self.machine = after - self._machine

    @property
    def busy_cores(self):
        return self.cpu / self.wall if self.wall else 0.0

    @property
    def other_busy_cores(self):
        if self.machine is None or not self.wall:
            return None
        return max(0.0, (self.machine - self.cpu) / self.wall)


THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "TF_ENABLE_ONEDNN_OPTS",
    "XLA_FLAGS",
)


def threading_settings(backend):
    """The backend's thread settings, as it reports them, for the record."""
    settings = {
        name: os.environ[name] for name in THREAD_VARIABLES if name in os.environ
    }
    if backend == "tensorflow":
        import tensorflow as tf

        # 0 means "TensorFlow picks", which is where the two speeds come from.
        threading = tf.config.threading
        settings["tf_intra_op_threads"] = threading.get_intra_op_parallelism_threads()
        settings["tf_inter_op_threads"] = threading.get_inter_op_parallelism_threads()
    if backend == "torch":
        import torch

        settings["torch_num_threads"] = torch.get_num_threads()
        settings["torch_num_interop_threads"] = torch.get_num_interop_threads()
    return settings


def device_name(backend):
    """The accelerator's name, or the CPU model and core count."""
    if backend in ("torch", "native-torch") and gpu_present("torch"):
        import torch

        return torch.cuda.get_device_name(0)
    if backend == "jax" and (gpu := _jax_gpu()) is not None:
        return gpu.device_kind
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return details.get("device_name", "GPU")
    return cpu_name()


def cpu_name():
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def gpu_present(framework=None):
    """Whether `framework` (default: Keras's backend) sees a GPU, as training asks."""
    framework = framework or keras.backend.backend()
    return accelerator_present("torch" if framework == "native-torch" else framework)


def round_statistics(round_seconds, steps_per_round, batch_size):
    """images/s and ms/step (median, spread) from per-round wall times."""
    per_step = np.asarray(round_seconds, dtype=float) / steps_per_round
    median = float(np.median(per_step))
    q1, q3 = (float(q) for q in np.percentile(per_step, [25, 75]))
    return {
        "ms_per_step_median": 1000 * median,
        "ms_per_step_iqr": 1000 * (q3 - q1),
        "ms_per_step_min": 1000 * float(per_step.min()),
        "ms_per_step_max": 1000 * float(per_step.max()),
        "images_per_second": batch_size / median,
        "rounds": len(per_step),
        "steps_per_round": steps_per_round,
    }
