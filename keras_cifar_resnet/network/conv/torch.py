"""torch's convolution on Keras's channels-last tensors, without layout copies."""

from __future__ import annotations

import torch


def channels_last_conv2d(inputs, kernel, bias, *, strides, padding):
    """2-D convolution of NHWC `inputs` by an HWIO `kernel`, as Keras computes it.

    Keras's own torch convolution copies its input from NHWC into NCHW and
    back into channels_last memory on every call. Here the NHWC tensor is
    viewed as NCHW (`permute` is a view, and NHWC memory is exactly NCHW in
    channels_last), torch's convolution runs on that view, and its
    channels_last output permutes back to NHWC for free; the backward pass
    stays in the same layout.

    Args:
        inputs: (batch, height, width, channels) tensor.
        kernel: (kernel_height, kernel_width, in_channels, filters) tensor,
            Keras's layout.
        bias: (filters,) tensor, or None.
        strides: (int, int).
        padding: ((top, bottom), (left, right)) zero padding.

    Returns:
        The (batch, out_height, out_width, filters) output, NHWC-contiguous.
    """
    (top, bottom), (left, right) = padding
    if tuple(kernel.shape[:2]) == (1, 1) and strides != (1, 1) and not any(
        (top, bottom, left, right)
    ):
        # A strided 1x1 convolution reads every stride-th pixel: take those
        # first and convolve unstrided. On CPUs without AVX-512, torch
        # 2.13's oneDNN at times gives a wrong kernel gradient for a strided
        # 1x1 convolution over channels_last input (docs/network.md).
        inputs = inputs[:, :: strides[0], :: strides[1], :].contiguous()
        strides = (1, 1)
    if top != bottom or left != right:
        # torch's convolution pads symmetrically only; Keras's "same" with
        # a stride puts the odd pixel at the end. Padding the NHWC tensor
        # keeps it NHWC.
        inputs = torch.nn.functional.pad(inputs, (0, 0, left, right, top, bottom))
        top = left = 0
    images = inputs.permute(0, 3, 1, 2)
    # OIHW in channels_last memory: the layout the kernel's backward and the
    # input's layout agree on, so torch converts neither.
    weights = kernel.permute(3, 2, 0, 1).contiguous(memory_format=torch.channels_last)
    outputs = torch.nn.functional.conv2d(
        images, weights, bias, stride=strides, padding=(top, left)
    )
    return outputs.permute(0, 2, 3, 1)


# While torch.compile traces the model, Conv2D runs Keras's own convolution:
# inductor chooses the convolutions' memory layout itself, and under dynamic
# shapes the NHWC view's symbolic strides break its layout pass ("cannot
# determine truth value of Relational").
channels_last_conv2d.steps_aside = torch.compiler.is_compiling
