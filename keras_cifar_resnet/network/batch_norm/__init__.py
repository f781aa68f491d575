"""BatchNormalization with Keras's variables, computed by a fused kernel.

`BatchNormalization` here is Keras's `BatchNormalization`: the same
arguments, variables (`gamma`, `beta`, `moving_mean`, `moving_variance`),
config and semantics (biased batch variance in the moving average, Keras's
momentum convention, statistics in float32 under mixed precision), so its
weights load into a model of Keras's own layers and the reverse. Where the
framework has one fused kernel for the whole normalization, `call` uses it
instead of Keras's dozen separate ops; everywhere else it is Keras's layer.

The one place that picks the backend's kernel is `FUSED_KERNEL_MODULES`:
each module (`torch.py`, `tensorflow.py`) has one function of the same shape,
and only the current backend's is imported. JAX has none: XLA already fuses
Keras's ops into a few loops.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from keras_cifar_resnet.network import kernels

# Backend -> module with `fused_batch_norm`; a backend absent here runs Keras's
# own layer. What each gains on whole training steps: benchmarks/results/.
FUSED_KERNEL_MODULES = {
    "tensorflow": "keras_cifar_resnet.network.batch_norm.tensorflow",
    "torch": "keras_cifar_resnet.network.batch_norm.torch",
}


def fused_kernel(backend=None):
    """The `fused_batch_norm` function for `backend` (default: Keras's), or None."""
    return kernels.backend_kernel(FUSED_KERNEL_MODULES, "fused_batch_norm", backend)


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class BatchNormalization(layers.BatchNormalization):
    """Keras's `BatchNormalization`, on the backend's fused kernel where it has one.

    The class name is Keras's on purpose: `.keras` and `.weights.h5` files
    key each layer's variables by its class name, so the same name keeps
    weight files interchangeable with models of Keras's own layer.

    The fused path covers what the model uses: 4-D channels-last inputs,
    `center` and `scale` on, no mask, no renorm, not synchronized. Any other
    use runs Keras's own `call`.

    Args:
        kernel: a `fused_batch_norm` function (see `batch_norm/torch.py`), or
            None for Keras's own computation. Defaults to the current
            backend's kernel (`fused_kernel()`).
        **kwargs: `keras.layers.BatchNormalization`'s arguments.
    """

    def __init__(self, *, kernel="auto", **kwargs):
        super().__init__(**kwargs)
        self.kernel = fused_kernel() if kernel == "auto" else kernel

    def _fused_path_applies(self, inputs, mask):
        return (
            self.kernel is not None
            and mask is None
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and self.center
            and self.scale
            # Older Keras (3.6) has no batch renormalization, nor the attribute.
            and not getattr(self, "renorm", False)
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fused_path_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        training = bool(training and self.trainable)
        outputs, batch_mean, batch_variance = self.kernel(
            inputs,
            gamma=self.gamma.value,
            beta=self.beta.value,
            moving_mean=self.moving_mean.value,
            moving_variance=self.moving_variance.value,
            epsilon=self.epsilon,
            training=training,
        )
        if training:
            # Keras's convention: momentum is the weight of the old value.
            self.moving_mean.assign(
                self.moving_mean * self.momentum + batch_mean * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance * self.momentum
                + batch_variance * (1.0 - self.momentum)
            )
        return ops.cast(outputs, self.compute_dtype)
