"""The CPU's native bf16/fp16 check and the training command's warning."""

from __future__ import annotations

import sys
import types

import pytest

from keras_cifar_resnet.training import precision_support
from keras_cifar_resnet.training.precision_support import (
    cpu_flags,
    cpu_has_native,
    slow_precision_warning,
    warn_if_slow,
)

X86_WITH_BF16 = "fpu avx2 avx512f avx512_bf16 avx512_vnni"
X86_WITHOUT = "fpu sse4_2 avx avx2 fma"


def _cpuinfo(tmp_path, text):
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return path


def test_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86 = _cpuinfo(
        tmp_path, f"processor\t: 0\nmodel name\t: EPYC\nflags\t\t: {X86_WITH_BF16}\n"
    )
    assert "avx512_bf16" in cpu_flags(x86)
    arm = _cpuinfo(tmp_path, "processor\t: 0\nFeatures\t: fp asimd asimdhp bf16\n")
    assert {"bf16", "asimdhp"} <= cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") is None
    assert cpu_flags(_cpuinfo(tmp_path, "processor\t: 0\n")) is None


@pytest.mark.parametrize(
    "flags, bf16, fp16",
    [
        (X86_WITH_BF16, True, False),
        (X86_WITHOUT, False, False),
        ("avx512_bf16 avx512_fp16 amx_bf16", True, True),
        ("fp asimd asimdhp bf16", True, True),
    ],
)
def test_native_support_follows_the_flags(flags, bf16, fp16):
    flags = frozenset(flags.split())
    assert cpu_has_native("mixed_bfloat16", flags) is bf16
    assert cpu_has_native("mixed_float16", flags) is fp16


def test_unreadable_flags_ask_torch_only_if_imported(monkeypatch):
    # Without torch imported the answer is unknown, and torch stays unimported.
    monkeypatch.setitem(sys.modules, "torch", None)
    assert cpu_has_native("mixed_bfloat16", None) is None
    for answer in (True, False):
        mkldnn = types.SimpleNamespace(
            _is_mkldnn_bf16_supported=lambda answer=answer: answer
        )
        fake_torch = types.SimpleNamespace(ops=types.SimpleNamespace(mkldnn=mkldnn))
        monkeypatch.setitem(sys.modules, "torch", fake_torch)
        assert cpu_has_native("mixed_bfloat16", None) is answer


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="Received: policy='float16'"):
        cpu_has_native("float16", frozenset())


def test_warning_text_is_one_line_with_the_cost_and_the_way_out():
    message = slow_precision_warning("mixed_bfloat16", accelerator=False, native=False)
    assert message.count("\n") == 0
    assert "--mixed-precision mixed_bfloat16" in message
    assert "without native bf16" in message
    assert "13x" in message
    assert message.endswith("--mixed-precision off is faster here")
    fp16 = slow_precision_warning("mixed_float16", accelerator=False, native=False)
    assert "without native float16" in fp16


@pytest.mark.parametrize(
    "policy, accelerator, native",
    [
        ("off", False, False),  # float32: nothing to warn about
        ("mixed_bfloat16", True, False),  # a GPU computes bf16 itself
        ("mixed_bfloat16", False, True),  # the CPU has it
        ("mixed_bfloat16", False, None),  # unknown: claim nothing
    ],
)
def test_no_warning_when_none_is_due(policy, accelerator, native):
    assert slow_precision_warning(policy, accelerator, native) is None


@pytest.mark.parametrize("native", [False, True])
def test_training_warns_once_on_a_cpu_without_it(monkeypatch, capsys, native):
    monkeypatch.setattr(precision_support, "accelerator_present", lambda b: False)
    monkeypatch.setattr(precision_support, "cpu_has_native", lambda p: native)
    warn_if_slow("mixed_bfloat16", "torch")
    printed = capsys.readouterr().out.splitlines()
    assert printed == (
        []
        if native
        else [slow_precision_warning("mixed_bfloat16", accelerator=False, native=False)]
    )


def test_a_framework_that_is_not_installed_sees_no_gpu(monkeypatch):
    from keras_cifar_resnet.training import precision_support

    monkeypatch.setattr(precision_support, "_installed", lambda module: False)
    assert precision_support.accelerator_present("torch") is False
    with pytest.raises(ValueError, match="must be jax, tensorflow or torch"):
        precision_support.accelerator_present("mxnet")
