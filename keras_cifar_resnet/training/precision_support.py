"""Whether this machine computes a mixed-precision policy's dtype natively.

On a CPU without bf16 (or fp16) instructions, frameworks emulate the 16-bit
arithmetic, and a mixed-precision step runs many times slower than float32
instead of faster. The CPU's own flags (`/proc/cpuinfo`) say whether it has
the instructions; this needs no framework. Where they cannot be read, the
current backend's own check answers if it is torch and already imported
(oneDNN's), else the answer is "unknown" and nothing is claimed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys

# Policy -> CPU flags any one of which means native arithmetic in that dtype
# (x86: AVX-512 and AMX; Arm: the `bf16` and half-precision SIMD features).
NATIVE_FLAGS = {
    "mixed_bfloat16": frozenset({"avx512_bf16", "amx_bf16", "bf16"}),
    "mixed_float16": frozenset({"avx512_fp16", "amx_fp16", "asimdhp"}),
}
# torch's oneDNN checks for the same, by policy.
TORCH_CHECKS = {
    "mixed_bfloat16": "_is_mkldnn_bf16_supported",
    "mixed_float16": "_is_mkldnn_fp16_supported",
}
# What the warning says the cost is: a measured order, not a promise.
MEASURED_SLOWDOWN = (
    "a ResNet18 bf16 training step took 13x as long as float32 on an AVX2 CPU"
)


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (x86 `flags`, Arm `Features`), or None if unreadable."""
    try:
        with open(path) as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        return None
    return None


def _torch_answer(policy):
    """torch's oneDNN answer, only if torch is already imported (never imports it)."""
    torch = sys.modules.get("torch")
    check = getattr(getattr(torch, "ops", None), "mkldnn", None)
    try:
        return bool(getattr(check, TORCH_CHECKS[policy])())
    except (AttributeError, RuntimeError, TypeError):
        return None


def cpu_has_native(policy, flags="read"):
    """True/False: the CPU computes `policy`'s dtype natively; None: unknown.

    Args:
        policy: str, `mixed_bfloat16` or `mixed_float16`.
        flags: the CPU's flags (a set of str), None for unreadable, or
            "read" (default) to read them from this machine.
    """
    if policy not in NATIVE_FLAGS:
        raise ValueError(
            f"`policy` must be one of {sorted(NATIVE_FLAGS)}. Received: "
            f"policy={policy!r}"
        )
    flags = cpu_flags() if flags == "read" else flags
    if flags:
        return not flags.isdisjoint(NATIVE_FLAGS[policy])
    return _torch_answer(policy)


def slow_precision_warning(policy, accelerator, native):
    """The one-line warning for `policy` on this run, or None when none is due.

    Args:
        policy: str, the run's mixed-precision setting (`off` needs none).
        accelerator: bool, the run has a GPU or other accelerator (which
            has its own 16-bit units).
        native: True/False/None, `cpu_has_native(policy)`; None (unknown)
            claims nothing.
    """
    if policy not in NATIVE_FLAGS or accelerator or native is not False:
        return None
    dtype = "bf16" if policy == "mixed_bfloat16" else "float16"
    return (
        f"warning: --mixed-precision {policy} on a CPU without native {dtype} "
        f"arithmetic is emulated and slow: {MEASURED_SLOWDOWN}; "
        "--mixed-precision off is faster here"
    )


def _installed(module):
    return importlib.util.find_spec(module) is not None


def accelerator_present(backend):
    """Whether `backend`'s framework sees a GPU (imports that framework only).

    A framework that is not installed sees none (the native PyTorch
    reference asks about torch in a session that may have JAX alone).
    """
    if backend in ("torch", "jax", "tensorflow") and not _installed(backend):
        return False
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    if backend == "jax":
        import jax

        return any(device.platform != "cpu" for device in jax.devices())
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    raise ValueError(
        f"`backend` must be jax, tensorflow or torch. Received: backend={backend!r}"
    )


def warn_if_slow(policy, backend):
    """Prints `slow_precision_warning` for this machine, if one is due."""
    if policy not in NATIVE_FLAGS:
        return
    message = slow_precision_warning(
        policy, accelerator_present(backend), cpu_has_native(policy)
    )
    if message:
        print(message, flush=True)


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` inside the block."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
