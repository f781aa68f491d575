"""torch's convolution on Keras's channels-last tensors, without layout copies."""

from __future__ import annotations

import torch


class _KernelInChannelsLast(torch.autograd.Function):
    """HWIO kernel -> OIHW in channels_last memory, and its gradient back.

    OIHW channels_last (an OHWI buffer) is the layout that the input's
    channels_last layout and the kernel's backward agree on, so torch
    converts neither. One strided copy from HWIO into it reads with a
    stride of O floats and is about 5x slower than two steps that each move
    contiguous rows: a per-pixel (I, O) transpose, then whole rows of I.
    The gradient takes the same two steps back, instead of autograd's one
    strided copy into the variable's HWIO layout.
    """

    @staticmethod
    def forward(ctx, kernel):
        rows_of_inputs = kernel.transpose(2, 3).contiguous()  # H, W, O, I
        return rows_of_inputs.permute(2, 0, 1, 3).contiguous().permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, gradient):
        rows_of_inputs = gradient.permute(2, 3, 0, 1).contiguous()  # H, W, O, I
        return rows_of_inputs.transpose(2, 3).contiguous()


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
    weights = _KernelInChannelsLast.apply(kernel)
    outputs = torch.nn.functional.conv2d(
        images, weights, bias, stride=strides, padding=(top, left)
    )
    return outputs.permute(0, 2, 3, 1)


# While torch.compile traces the model, Conv2D runs Keras's own convolution:
# inductor chooses the convolutions' memory layout itself, and under dynamic
# shapes the NHWC view's symbolic strides break its layout pass ("cannot
# determine truth value of Relational").
channels_last_conv2d.steps_aside = torch.compiler.is_compiling
