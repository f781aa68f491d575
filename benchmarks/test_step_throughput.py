"""Training-step and inference throughput of the Keras model on the current
backend and, with `--native`, of the native PyTorch reference; the figures
go to each benchmark's `extra_info`, for `benchmarks/report.py`.

    KERAS_BACKEND=jax pytest benchmarks --quick --benchmark-json=out.json
"""

from __future__ import annotations

import datetime
import gc
import os
import time

import keras

from benchmarks.accuracy import installed_versions
from benchmarks.conftest import NATIVE_VARIANTS, keras_suffix
from benchmarks.harness import (
    CPUUse,
    KerasTrainStep,
    PeakMemory,
    device_name,
    gpu_present,
    round_statistics,
    threading_settings,
)
from keras_cifar_resnet.training.precision_support import cpu_has_native


def _measure(benchmark, settings, runner, function, backend, **fields):
    """First call, warm-up, timed rounds; the record goes to `extra_info`."""
    # The previous configuration's model, freed before this one's memory peak.
    gc.collect()
    benchmark.group = (
        f"{function}-{fields['model']}-b{runner.batch_size}-{fields['precision']}"
    )
    framework = "torch" if backend == "native-torch" else backend
    memory = PeakMemory(framework)
    memory.reset()
    # The first call builds and compiles (train: the step; inference: the
    # predict function), so it is timed apart from the steady rounds.
    start = time.perf_counter()
    runner.first_step() if function == "train" else runner.predict(1)
    first_call_s = time.perf_counter() - start
    with CPUUse() as use:
        benchmark.pedantic(
            runner.run if function == "train" else runner.predict,
            args=(settings.steps,),
            rounds=settings.rounds,
            warmup_rounds=settings.warmup,
            iterations=1,
        )
    record = {
        "function": function,
        "backend": backend,
        "batch_size": runner.batch_size,
        "first_step_s": first_call_s,
        "peak_memory_mib": memory.read_mib(),
        "memory_kind": memory.kind,
        "busy_cores": use.busy_cores,
        "other_busy_cores": use.other_busy_cores,
        # Other processes compete for a shared CPU; the load says how much.
        "load_average_1min": os.getloadavg()[0],
        "device": device_name(backend),
        # A CPU figure means little without it (emulated bf16 is slow).
        "cpu_native_bf16": None
        if gpu_present(backend)
        else cpu_has_native("mixed_bfloat16"),
        "versions": installed_versions(),
        "threading": threading_settings(framework),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        **fields,
    }
    if benchmark.enabled and benchmark.stats is not None:
        record.update(
            round_statistics(
                benchmark.stats.stats.data, settings.steps, runner.batch_size
            )
        )
    runner.finish()
    benchmark.extra_info.update(record)


def test_keras(benchmark, bench_settings, keras_case):
    """The package's model and compiled step on the current backend."""
    model, batch_size, precision, function, fused_batch_norm, fused_conv, jit = (
        keras_case
    )
    backend = keras.backend.backend()
    runner = KerasTrainStep(
        model,
        batch_size,
        precision,
        jit_compile=jit,
        fused_batch_norm=fused_batch_norm,
        fused_conv=fused_conv,
    )
    _measure(
        benchmark,
        bench_settings,
        runner,
        function,
        backend,
        implementation="keras",
        # A forced compile is its own row beside Keras's default.
        variant=f"keras-{backend}" + keras_suffix(fused_batch_norm, fused_conv, jit),
        model=model,
        precision=precision,
        # What Keras resolved `jit_compile="auto"` to for this model.
        jit_compile=bool(getattr(runner.model, "jit_compile", False)),
        fused_batch_norm=fused_batch_norm,
        fused_conv=fused_conv,
    )


def test_native_torch(benchmark, bench_settings, native_case):
    """The same network and step in plain PyTorch, the anchor of the ratios."""
    from benchmarks.torch_reference import NativeTorchStep

    variant, model, batch_size, function = native_case
    memory_format, precision, compiled = NATIVE_VARIANTS[variant]
    runner = NativeTorchStep(
        model,
        batch_size,
        precision,
        channels_last=memory_format == "channels_last",
        compile=compiled,
    )
    _measure(
        benchmark,
        bench_settings,
        runner,
        function,
        "native-torch",
        implementation="native-torch",
        variant=f"native-torch-{variant}",
        model=model,
        precision=precision,
        jit_compile=compiled,
    )
