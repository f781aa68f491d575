"""Conv2D with Keras's variables, computed in the tensor's own layout.

`Conv2D` here is Keras's `Conv2D`: the same arguments, variables (`kernel`
in Keras's (height, width, in, out) layout, `bias`), config and results, so
its weights load into a model of Keras's own layers and the reverse. Where
the framework's convolution can run on Keras's channels-last tensors as they
are, `call` uses it instead of Keras's, which copies every input into
another layout and back; everywhere else it is Keras's layer.

The one place that picks the backend's kernel is `FUSED_KERNEL_MODULES`;
only the current backend's module is imported. TensorFlow and JAX have
none: their convolutions take NHWC tensors natively.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_cifar_resnet.network import kernels

# Backend -> module with `channels_last_conv2d`; a backend absent here runs
# Keras's own layer. Whole ResNet18 steps on the CPU against Keras's layer:
# benchmarks/results/cpu-2core-amd-epyc-2026-12-02-fused-conv-quiet.md.
FUSED_KERNEL_MODULES = {"torch": "keras_cifar_resnet.network.conv.torch"}
# Backends on which a strided 1x1 "valid" convolution takes every stride-th
# pixel first and convolves unstrided (the same result): TensorFlow 2.21's
# oneDNN kernel gradient of a strided 1x1 convolution (Conv2DBackpropFilter)
# corrupts the heap for an odd batch size on AVX-512/AMX CPUs
# ("double free or corruption", docs/errors.md). torch's kernel does the same
# in `conv/torch.py`, for its own oneDNN fault.
SUBSAMPLE_STRIDED_1X1 = ("tensorflow",)


def fused_kernel(backend=None):
    """The `channels_last_conv2d` function for `backend` (default: Keras's), or None."""
    return kernels.backend_kernel(FUSED_KERNEL_MODULES, "channels_last_conv2d", backend)


def same_padding(size, kernel_size, stride):
    """(before, after) zero padding of Keras's "same" along one dimension.

    The output has ceil(size / stride) positions; an odd total puts the
    extra pixel after, as Keras (and TensorFlow) do.
    """
    output_size = -(-size // stride)
    total = max(0, (output_size - 1) * stride + kernel_size - size)
    return total // 2, total - total // 2


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class Conv2D(kernels.ChannelsLastKernelLayer, layers.Conv2D):
    """Keras's `Conv2D`, on the backend's layout-preserving kernel where it has one.

    The class name is Keras's on purpose: `.keras` and `.weights.h5` files
    key each layer's variables by its class name, so the same name keeps
    weight files interchangeable with models of Keras's own layer.

    The fast path covers what the model uses: channels-last 4-D inputs,
    "valid" or "same" padding, any strides, with or without bias, dilation
    1, one group, no LoRA. Any other use runs Keras's own `call`, and so
    does a trace by a compiler the kernel steps aside for (its
    `steps_aside()`: torch.compile).

    Args:
        kernel_function: a `channels_last_conv2d` function (see
            `conv/torch.py`), or None for Keras's own computation. Defaults
            to the current backend's (`fused_kernel()`). Not `kernel`, as in
            the fused BatchNorm: here that name is the layer's weights.
        **kwargs: `keras.layers.Conv2D`'s arguments.

    Example:

    >>> conv = Conv2D(64, 3, padding="same")
    >>> outputs = conv(images)  # (N, H, W, C) -> (N, H, W, 64)
    """

    fused_kernel = staticmethod(fused_kernel)

    def _fused_path_applies(self, inputs):
        return (
            self._kernel_applies(inputs)
            and self.padding in ("valid", "same")
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and not self.lora_enabled
        )

    def _subsamples_first(self, inputs):
        return (
            keras.backend.backend() in SUBSAMPLE_STRIDED_1X1
            and tuple(self.kernel_size) == (1, 1)
            and tuple(self.strides) != (1, 1)
            and self.padding == "valid"
            and len(inputs.shape) == 4
            and self.data_format == "channels_last"
            and tuple(self.dilation_rate) == (1, 1)
            and self.groups == 1
            and not self.lora_enabled
        )

    def _subsampled_call(self, inputs):
        rows, cols = self.strides
        outputs = ops.conv(
            inputs[:, ::rows, ::cols, :],
            self.kernel,
            strides=1,
            padding="valid",
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def call(self, inputs):
        if self._subsamples_first(inputs):
            return self._subsampled_call(inputs)
        if not self._fused_path_applies(inputs):
            return super().call(inputs)
        padding = ((0, 0), (0, 0))
        if self.padding == "same":
            padding = tuple(
                same_padding(size, kernel_size, stride)
                for size, kernel_size, stride in zip(
                    inputs.shape[1:3], self.kernel_size, self.strides, strict=True
                )
            )
        outputs = self.kernel_function(
            inputs,
            self.kernel.value,
            self.bias.value if self.use_bias else None,
            strides=tuple(self.strides),
            padding=padding,
        )
        if self.activation is not None:
            return self.activation(outputs)
        return outputs
