"""torch's max pooling on Keras's channels-last tensors, without layout copies."""

from __future__ import annotations

import torch


def channels_last_max_pool2d(inputs, *, pool_size, strides, padding):
    """Max pooling of NHWC `inputs`, as Keras computes it; NHWC-contiguous output.

    The padding is -inf rather than Keras's edge replication: a "same" window
    always holds the edge pixel its padding would copy, so the maximum and
    the pixel its gradient goes to are the same.

    Args:
        inputs: (batch, height, width, channels) tensor.
        pool_size: (int, int).
        strides: (int, int).
        padding: ((top, bottom), (left, right)) padding.
    """
    (top, bottom), (left, right) = padding
    if any((top, bottom, left, right)):
        # Padding the NHWC tensor keeps it NHWC.
        inputs = torch.nn.functional.pad(
            inputs, (0, 0, left, right, top, bottom), value=float("-inf")
        )
    # NHWC viewed as NCHW is channels_last memory, which torch pools as it is.
    outputs = torch.nn.functional.max_pool2d(
        inputs.permute(0, 3, 1, 2), pool_size, strides
    )
    return outputs.permute(0, 2, 3, 1)


# As the package's Conv2D: inductor chooses layouts itself while it traces.
channels_last_max_pool2d.steps_aside = torch.compiler.is_compiling
