"""Options and parametrization of the step benchmarks.

The profiles (full for a GPU, `--quick`, `--tiny`) and every option, and why
bf16 rows are left out on a CPU without native bf16: benchmarks/README.md.
An explicit --precisions or --native list is run as given.
"""

from __future__ import annotations

import dataclasses

import pytest

# Each profile's models, batch sizes, precisions, rounds, steps per round and
# warm-up rounds: Settings' first fields, which PROFILE_OPTIONS override.
THROUGHPUT_PROFILES = {
    "full": (("resnet18", "resnet34"), (128, 512), ("float32", "mixed"), 10, 10, 2),
    "quick": (("resnet18",), (128,), ("float32", "mixed"), 3, 1, 1),
    "tiny": (("tiny",), (8,), ("float32",), 1, 1, 0),
}
# The native reference's variants: (memory format, precision, compiled).
# `eager` names the NCHW layout; `compiled-` runs the same under torch.compile.
NATIVE_VARIANTS = {
    f"{compiled}{layout}{bf16}": (
        "nchw" if layout == "eager" else layout,
        "mixed" if bf16 else "float32",
        bool(compiled),
    )
    for compiled in ("", "compiled-")
    for bf16 in ("", "-bf16")
    for layout in ("eager", "channels_last")
}
GPU_NATIVE_VARIANTS = (
    "eager",
    "eager-bf16",
    "channels_last-bf16",
    "compiled-channels_last-bf16",
)
# How the Keras step is compiled: Keras's choice, forced, or both side by side.
JIT_COMPILES = {"auto": ("auto",), "on": ("on",), "both": ("auto", "on")}
# The Keras model's BatchNorm and Conv2D (`ResNet(fused_batch_norm=...,
# fused_conv=...)`): the package's fused layer, Keras's own, or both.
LAYERS = {"fused": (True,), "keras": (False,), "both": (True, False)}


def _csv(value):
    return tuple(v.strip() for v in value.split(",") if v.strip())


FLAG, CSV, COUNT = dict(action="store_true"), dict(type=_csv), dict(type=int)
PROFILE_OPTIONS = (
    ("--models", CSV, "comma-separated: resnet18,resnet34,tiny."),
    ("--batch-sizes", CSV, "comma-separated batch sizes, e.g. 128,512."),
    ("--precisions", CSV, "comma-separated: float32,mixed (mixed = bf16)."),
    ("--rounds", COUNT, "timed rounds per configuration."),
    ("--steps-per-round", COUNT, "steps per timed round (one sync each)."),
    ("--warmup-rounds", COUNT, "untimed rounds after the first step."),
)
OPTIONS = (
    ("--quick", FLAG, "CPU profile: resnet18, batch 128, float32, 3 rounds."),
    ("--tiny", FLAG, "CI profile: the test model, batch 8, one round."),
    *PROFILE_OPTIONS,
    ("--no-inference", FLAG, "skip the inference benchmarks."),
    (
        "--native",
        dict(CSV, nargs="?", const=("auto",)),
        "also time the native PyTorch reference; variants from "
        f"{sorted(NATIVE_VARIANTS)}, or 'auto' (GPU: "
        f"{', '.join(GPU_NATIVE_VARIANTS)}; CPU: all).",
    ),
    (
        "--jit-compile",
        dict(choices=sorted(JIT_COMPILES), default="auto"),
        "how the Keras step is compiled: 'auto' is Keras's choice (JAX: "
        "jit; TensorFlow: XLA on GPU only; torch: eager); 'on' forces XLA "
        "on TensorFlow and torch.compile on torch (rows '...-jit'); 'both' "
        "times the two side by side. Default: auto.",
    ),
    (
        "--batch-norm",
        dict(choices=sorted(LAYERS), default="fused"),
        "the Keras model's BatchNorm: 'fused' (the package's layer, on the "
        "framework's fused kernel where it has one), 'keras' (Keras's own "
        "layer; rows 'keras-<backend>-keras-bn') or 'both'. Default: fused.",
    ),
    (
        "--conv",
        dict(choices=sorted(LAYERS), default="fused"),
        "the Keras model's Conv2D and MaxPooling2D: 'fused' (the package's, "
        "in the tensors' own layout where the backend would copy them), "
        "'keras' (Keras's own; rows '...-keras-conv') or 'both'. Default: fused.",
    ),
)


@dataclasses.dataclass(frozen=True)
class Settings:
    models: tuple
    batch_sizes: tuple
    precisions: tuple
    rounds: int
    steps: int
    warmup: int
    native: tuple
    inference: bool
    jit_compiles: tuple
    fused_batch_norms: tuple
    fused_convs: tuple
    skipped: str  # why rows of the profile were left out ("" when none were)


def pytest_addoption(parser):
    group = parser.getgroup("keras-cifar-resnet benchmarks")
    for name, kind, help in OPTIONS:
        group.addoption(name, help=help, **kind)


def settings_from(config):
    option = config.getoption
    profile = "tiny" if option("--tiny") else ("quick" if option("--quick") else "full")
    given = zip(THROUGHPUT_PROFILES[profile], PROFILE_OPTIONS, strict=True)
    models, batch_sizes, precisions, rounds, steps, warmup = (
        default if option(name) is None else option(name)
        for default, (name, *_) in given
    )
    from benchmarks.harness import gpu_present
    from keras_cifar_resnet.training.precision_support import cpu_has_native

    native, skipped = option("--native") or (), ""
    if native == ("auto",):
        # On a CPU, where each layout and torch.compile fare differently: all.
        native = GPU_NATIVE_VARIANTS if gpu_present("torch") else tuple(NATIVE_VARIANTS)
    # Only where the CPU surely lacks native bf16 (None: unknown).
    reason = (
        ""
        if gpu_present() or cpu_has_native("mixed_bfloat16") is not False
        else "bf16 rows skipped: no GPU, and this CPU has no native bf16 "
        "(emulated bf16 runs many times slower than float32)"
    )
    # The profiles' own bf16 rows are left out; asked for by name, they run.
    if reason and option("--precisions") is None and "mixed" in precisions:
        precisions, skipped = tuple(p for p in precisions if p != "mixed"), reason
    if reason and option("--native") == ("auto",):
        native = tuple(v for v in native if NATIVE_VARIANTS[v][1] != "mixed")
        skipped = reason
    unknown = sorted(set(native) - set(NATIVE_VARIANTS))
    if unknown:
        raise pytest.UsageError(
            f"--native variants must be among {sorted(NATIVE_VARIANTS)}. "
            f"Received: {unknown}"
        )
    bad = sorted(set(precisions) - {"float32", "mixed"})
    if bad:
        raise pytest.UsageError(
            f"--precisions must be among float32, mixed. Received: {bad}"
        )
    return Settings(
        models,
        tuple(int(b) for b in batch_sizes),
        precisions,
        rounds,
        steps,
        warmup,
        native=tuple(native),
        inference=not option("--no-inference"),
        jit_compiles=JIT_COMPILES[option("--jit-compile")],
        fused_batch_norms=LAYERS[option("--batch-norm")],
        fused_convs=LAYERS[option("--conv")],
        skipped=skipped,
    )


def pytest_generate_tests(metafunc):
    settings = settings_from(metafunc.config)
    # Smallest first: JAX's GPU memory peak cannot be reset, so each figure
    # is the peak so far; ascending order keeps it the configuration's own.
    order = {"tiny": 0, "resnet18": 1, "resnet34": 2}
    configs = [
        (model, batch, precision)
        for batch in sorted(settings.batch_sizes)
        for model in sorted(settings.models, key=lambda m: order.get(m, 9))
        for precision in sorted(settings.precisions, reverse=True)
    ]
    functions = ("train", "inference") if settings.inference else ("train",)
    if "keras_case" in metafunc.fixturenames:
        cases = [
            (*c, f, fused_batch_norm, fused_conv, jit)
            for f in functions
            for c in configs
            for fused_batch_norm in settings.fused_batch_norms
            for fused_conv in settings.fused_convs
            for jit in settings.jit_compiles
        ]
        metafunc.parametrize(
            "keras_case",
            cases,
            ids=[
                f"{f}-{m}-b{b}-{p}" + keras_suffix(bn, conv, jit)
                for m, b, p, f, bn, conv, jit in cases
            ],
        )
    if "native_case" in metafunc.fixturenames:
        # The variant fixes the precision, so one case per (model, batch);
        # inference is timed for the plain eager variant only.
        pairs = list(dict.fromkeys((m, b) for m, b, _ in configs))
        cases = [
            (v, m, b, f)
            for f in functions
            for m, b in pairs
            for v in settings.native
            if f == "train" or v == "eager"
        ]
        metafunc.parametrize(
            "native_case", cases, ids=[f"{f}-{v}-{m}-b{b}" for v, m, b, f in cases]
        )


def keras_suffix(fused_batch_norm, fused_conv, jit_compile="auto"):
    """What a row's name adds: a forced compile, and each Keras layer it uses."""
    return (
        ("-jit" if jit_compile == "on" else "")
        + ("" if fused_batch_norm else "-keras-bn")
        + ("" if fused_conv else "-keras-conv")
    )


def pytest_benchmark_update_machine_info(config, machine_info):
    """Records in the JSON which rows the profile left out, and why."""
    skipped = settings_from(config).skipped
    if skipped:
        machine_info["skipped"] = skipped


@pytest.fixture(scope="session")
def bench_settings(request):
    return settings_from(request.config)


def pytest_terminal_summary(terminalreporter, config):
    """Prints this process's figures, with ratios to native eager if timed."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    from benchmarks.report import format_rows, rows_from_benchmarks

    rows = rows_from_benchmarks(
        [b.as_dict(include_data=False) for b in session.benchmarks]
    )
    for line in ([""] if rows else []) + format_rows(rows):
        terminalreporter.write_line(line)
    skipped = settings_from(config).skipped
    if skipped:
        terminalreporter.write_line(skipped)


def pytest_collection_modifyitems(config, items):
    """Drops the native benchmarks unless --native asked for them."""
    if settings_from(config).native:
        return
    dropped = [item for item in items if "native_case" in item.fixturenames]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]
