"""The package's fused BatchNormalization against Keras's own BatchNormalization.

Each backend session checks its own framework's fused kernel (torch,
TensorFlow) directly. JAX has no fused kernel and must be exactly Keras's
layer.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_cifar_resnet import ResNet
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.network.batch_norm import (
    FUSED_KERNEL_MODULES,
    BatchNormalization as FusedBatchNormalization,
    fused_kernel,
)
from tests.weight_transfer import assert_same_predictions, trained_tiny_resnet

BACKEND = keras.backend.backend()

needs_kernel = pytest.mark.skipif(
    fused_kernel() is None, reason=f"{BACKEND} has no fused BatchNorm kernel"
)

# Odd sizes and a single image of one pixel per channel, beside a conv-like map.
SHAPES = [(6, 5, 7, 3), (1, 1, 1, 4), (2, 3, 1, 5), (16, 8, 8, 16)]
# (output and gradient tolerance, moving-statistics tolerance) per policy:
# bf16 outputs have 8 bits of mantissa and fp16 11, so one rounding step
# apart is equal; the statistics are float32 under every policy.
TOLERANCES = {
    "float32": (1e-5, 1e-6),
    "mixed_bfloat16": (2e-2, 1e-6),
    "mixed_float16": (2e-3, 1e-6),
}


def _pair(shape, momentum=0.9, seed=0):
    """Keras's layer and the fused one, built with equal, non-trivial weights."""
    rng = np.random.default_rng(seed)
    channels = shape[-1]
    reference = keras.layers.BatchNormalization(momentum=momentum, epsilon=1e-3)
    fused = FusedBatchNormalization(
        momentum=momentum, epsilon=1e-3, kernel=fused_kernel()
    )
    values = [
        rng.uniform(0.5, 2.0, channels),  # gamma
        rng.normal(size=channels),  # beta
        rng.normal(size=channels),  # moving_mean
        rng.uniform(0.5, 2.0, channels),  # moving_variance
    ]
    for layer in (reference, fused):
        layer.build(shape)
        layer.set_weights([v.astype("float32") for v in values])
    return reference, fused


def _inputs(shape, seed=1):
    rng = np.random.default_rng(seed)
    images = (rng.normal(size=shape) * 3.0 + 1.0).astype("float32")
    return ops.cast(images, keras.config.dtype_policy().compute_dtype)


def _numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


def _call_with_gradients(layer, inputs, training):
    """(outputs, d/d(inputs, gamma, beta) of sum(outputs * fixed weights))."""
    rng = np.random.default_rng(2)
    weights = ops.convert_to_tensor(rng.normal(size=inputs.shape).astype("float32"))
    if BACKEND == "torch":
        import torch

        inputs = inputs.detach().clone().requires_grad_(True)
        outputs = layer(inputs, training=training)
        objective = (outputs.float() * weights).sum()
        sources = [inputs, layer.gamma.value, layer.beta.value]
        gradients = torch.autograd.grad(objective, sources)
        return outputs, gradients
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs, training=training)
        objective = tf.reduce_sum(tf.cast(outputs, tf.float32) * weights)
    gradients = tape.gradient(objective, [inputs, layer.gamma.value, layer.beta.value])
    return outputs, gradients


@needs_kernel
@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_fused_matches_keras(policy, shape, training):
    value_tolerance, statistics_tolerance = TOLERANCES[policy]
    reference, fused = _pair(shape)
    inputs = _inputs(shape)
    expected, expected_gradients = _call_with_gradients(reference, inputs, training)
    actual, actual_gradients = _call_with_gradients(fused, inputs, training)

    assert actual.dtype == expected.dtype
    assert tuple(actual.shape) == tuple(expected.shape)
    np.testing.assert_allclose(
        _numpy(actual), _numpy(expected), rtol=value_tolerance, atol=value_tolerance
    )
    for name, a, e in zip(
        ("inputs", "gamma", "beta"), actual_gradients, expected_gradients, strict=True
    ):
        scale = max(1.0, float(np.abs(_numpy(e)).max()))
        np.testing.assert_allclose(
            _numpy(a),
            _numpy(e),
            rtol=value_tolerance,
            atol=value_tolerance * scale,
            err_msg=f"gradient with respect to {name}",
        )
    # Statistics: float32 variables, updated in training only, equal to Keras's.
    for name in ("moving_mean", "moving_variance"):
        a, e = getattr(fused, name), getattr(reference, name)
        assert a.dtype == "float32"
        np.testing.assert_allclose(
            a.numpy(), e.numpy(), rtol=statistics_tolerance, atol=statistics_tolerance
        )


@needs_kernel
def test_moving_statistics_use_the_biased_variance():
    # One channel, values 0 and 2: batch mean 1, biased variance 1 (the
    # unbiased one, which torch's and TF's own running averages use, is 2).
    layer = FusedBatchNormalization(momentum=0.0, kernel=fused_kernel())
    layer.build((2, 1, 1, 1))
    layer(
        ops.convert_to_tensor(np.array([0.0, 2.0], "float32").reshape(2, 1, 1, 1)),
        training=True,
    )
    np.testing.assert_allclose(layer.moving_mean.numpy(), [1.0], atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), [1.0], atol=1e-5)


@needs_kernel
def test_frozen_layer_does_not_update_statistics():
    reference, fused = _pair((4, 3, 3, 2))
    fused.trainable = False
    before = fused.moving_mean.numpy().copy()
    fused(_inputs((4, 3, 3, 2)), training=True)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


def test_backend_choice():
    # The one table: torch and TensorFlow fused; JAX none (XLA fuses Keras's
    # ops itself).
    assert set(FUSED_KERNEL_MODULES) == {"torch", "tensorflow"}
    if BACKEND == "jax":
        assert fused_kernel() is None
    assert FusedBatchNormalization().kernel is fused_kernel()


def test_unsupported_uses_run_keras_layer():
    # A 2-D input (Dense features) is outside the fused path on every backend.
    rng = np.random.default_rng(0)
    features = rng.normal(size=(8, 5)).astype("float32")
    reference = keras.layers.BatchNormalization()
    fused = FusedBatchNormalization()
    for layer in (reference, fused):
        layer.build((8, 5))
    expected = _numpy(reference(features, training=True))
    np.testing.assert_allclose(
        _numpy(fused(features, training=True)), expected, atol=1e-6
    )


def test_config_is_keras_batch_normalization_config():
    fused = FusedBatchNormalization(momentum=0.9, epsilon=1e-4, name="bn")
    config = fused.get_config()
    assert (
        config
        == keras.layers.BatchNormalization(
            momentum=0.9, epsilon=1e-4, name="bn"
        ).get_config()
    )
    # And Keras's layer is built from it, and the reverse.
    assert keras.layers.BatchNormalization.from_config(config).momentum == 0.9
    assert FusedBatchNormalization.from_config(config).epsilon == 1e-4


@pytest.mark.parametrize(
    "saved_fused", [True, False], ids=["fused-to-keras", "keras-to-fused"]
)
def test_weights_move_between_fused_and_keras_models(tmp_path, saved_fused):
    """A `.keras` file of either model loads into the other, outputs equal."""
    source, images = trained_tiny_resnet(fused_batch_norm=saved_fused)
    path = tmp_path / "model.keras"
    source.save(path)

    loaded = keras.saving.load_model(path)
    assert loaded.fused_batch_norm is saved_fused
    target = TinyResNet(fused_batch_norm=not saved_fused)
    target.load_weights(path)
    batch_norms = [
        layer
        for layer in target.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(batch_norms) == 5
    assert all(
        (type(layer) is FusedBatchNormalization) != saved_fused for layer in batch_norms
    )
    assert_same_predictions(source, target, images)


def test_model_flag_is_validated_and_stored():
    with pytest.raises(ValueError, match="fused_batch_norm"):
        ResNet(fused_batch_norm="yes")
    assert TinyResNet().get_config()["fused_batch_norm"] is True
    assert TinyResNet(fused_batch_norm=False).get_config()["fused_batch_norm"] is False
