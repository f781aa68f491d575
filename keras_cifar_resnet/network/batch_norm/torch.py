"""torch's fused batch normalization on Keras's channels-last tensors."""

from __future__ import annotations

import torch


class _GradientInInputLayout(torch.autograd.Function):
    """Identity; its backward makes the incoming NHWC gradient contiguous.

    The next layer's gradient often arrives as a permuted view of an NCHW
    tensor (Keras's convolutions permute their input). The batch-norm
    backward kernel, given a gradient whose layout differs from its input's
    channels_last one, takes a much slower path on the CPU; one copy into the
    input's layout avoids it (measured in
    benchmarks/results/cpu-2core-amd-epyc-2026-11-28-fused-batch-norm.md).
    """

    @staticmethod
    def forward(ctx, outputs):
        return outputs.view_as(outputs)

    @staticmethod
    def backward(ctx, gradient):
        return gradient.contiguous()


def fused_batch_norm(
    inputs, *, gamma, beta, moving_mean, moving_variance, epsilon, training
):
    """(outputs, batch_mean, batch_variance) of NHWC `inputs`; None stats at inference.

    The statistics are float32 and the variance is the biased one, as Keras's
    moving average expects; bf16/fp16 inputs are normalised in float32 inside
    the kernel (torch's mixed-type batch norm), as Keras's layer does by
    casting.
    """
    # NHWC viewed as NCHW is a view in channels_last memory, not a copy; the
    # kernel has channels_last paths, and its output permutes back for free.
    images = inputs.permute(0, 3, 1, 2)
    if not training:
        outputs = torch.nn.functional.batch_norm(
            images, moving_mean, moving_variance, gamma, beta, False, 0.0, epsilon
        )
        return outputs.permute(0, 2, 3, 1), None, None
    # Without running statistics, so that torch does not update them with its
    # unbiased variance and its own momentum convention; the layer does.
    outputs, batch_mean, inverse_std = torch.ops.aten.native_batch_norm(
        images, gamma, beta, None, None, True, 0.0, epsilon
    )
    with torch.no_grad():
        batch_variance = inverse_std.float().pow(-2) - epsilon
    outputs = _GradientInInputLayout.apply(outputs.permute(0, 2, 3, 1))
    return outputs, batch_mean.detach().float(), batch_variance
