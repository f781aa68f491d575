"""TensorFlow's fused batch normalization (`FusedBatchNormV3`) on NHWC tensors."""

from __future__ import annotations

import tensorflow as tf


def fused_batch_norm(
    inputs, *, gamma, beta, moving_mean, moving_variance, epsilon, training
):
    """(outputs, batch_mean, batch_variance) of NHWC `inputs`; None stats at inference.

    The statistics are float32 and the variance is the biased one, as Keras's
    moving average expects.
    """
    if not training:
        outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            gamma,
            beta,
            mean=moving_mean,
            variance=moving_variance,
            epsilon=epsilon,
            data_format="NHWC",
            is_training=False,
        )
        return outputs, None, None
    outputs, batch_mean, corrected_variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, epsilon=epsilon, data_format="NHWC", is_training=True
    )
    # The kernel returns the Bessel-corrected variance (for its own running
    # average); Keras's moving average takes the biased one.
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
    batch_variance = corrected_variance * (count - 1.0) / count
    return outputs, tf.stop_gradient(batch_mean), tf.stop_gradient(batch_variance)
