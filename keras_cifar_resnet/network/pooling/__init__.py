"""MaxPooling2D computed in the tensor's own layout, where Keras's copies it.

`MaxPooling2D` here is Keras's `MaxPooling2D`: the same arguments, config
and results (values and gradients). Keras's torch pooling copies every
channels-last input into NCHW memory and, for "same" padding that is not
even on both sides (the stem's 2x2 stride-1 pool), pads by replication, so
its output leaves the layer in NCHW memory viewed as NHWC: every layer
after it (the first stage's residual stream) then works on the other
layout, and each of its convolutions copies it back. Where the framework
can pool channels-last memory as it is, `call` does that; everywhere else
it is Keras's layer.

The one place that picks the backend's kernel is `FUSED_KERNEL_MODULES`, as
for the package's Conv2D; TensorFlow and JAX pool NHWC natively.
"""

from __future__ import annotations

import keras
from keras import layers

# The module, not its name: Keras's first import may register the package's
# classes while `conv` is still initializing (registration.py).
from keras_cifar_resnet.network import conv, kernels

# Backend -> module with `channels_last_max_pool2d`.
FUSED_KERNEL_MODULES = {"torch": "keras_cifar_resnet.network.pooling.torch"}


def fused_kernel(backend=None):
    """`backend`'s `channels_last_max_pool2d` (default: Keras's backend), or None."""
    return kernels.backend_kernel(
        FUSED_KERNEL_MODULES, "channels_last_max_pool2d", backend
    )


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class MaxPooling2D(kernels.ChannelsLastKernelLayer, layers.MaxPooling2D):
    """Keras's `MaxPooling2D`, on the backend's layout-preserving kernel if any.

    The fast path covers channels-last 4-D inputs with "valid" or "same"
    padding; any other use, and a trace by a compiler the kernel steps aside
    for (torch.compile), runs Keras's own `call`.

    Args:
        kernel_function: a `channels_last_max_pool2d` function (see
            `pooling/torch.py`), or None for Keras's own computation.
            Defaults to the current backend's (`fused_kernel()`).
        **kwargs: `keras.layers.MaxPooling2D`'s arguments.
    """

    fused_kernel = staticmethod(fused_kernel)

    def _fused_path_applies(self, inputs):
        return self._kernel_applies(inputs) and self.padding in ("valid", "same")

    def call(self, inputs):
        if not self._fused_path_applies(inputs):
            return super().call(inputs)
        padding = ((0, 0), (0, 0))
        if self.padding == "same":
            padding = tuple(
                conv.same_padding(size, pool_size, stride)
                for size, pool_size, stride in zip(
                    inputs.shape[1:3], self.pool_size, self.strides, strict=True
                )
            )
        return self.kernel_function(
            inputs,
            pool_size=tuple(self.pool_size),
            strides=tuple(self.strides),
            padding=padding,
        )
