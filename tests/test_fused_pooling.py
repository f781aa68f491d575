"""The package's MaxPooling2D against Keras's own, and the layout it keeps.

On torch the layer pools channels-last memory as it is; TensorFlow and JAX
pool NHWC natively, so there the layer must be exactly Keras's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.network.pooling import (
    FUSED_KERNEL_MODULES,
    MaxPooling2D as FusedMaxPooling2D,
    fused_kernel,
)

BACKEND = keras.backend.backend()

needs_kernel = pytest.mark.skipif(
    fused_kernel() is None,
    reason=f"{BACKEND} has no channels-last pooling kernel (Keras's is native)",
)

# (input shape, pool size, strides, padding): the stem's 2x2 stride-1 "same"
# (padding after only), odd and even sizes with strides, "valid".
CASES = [
    ((2, 9, 9, 4), 2, 1, "same"),
    ((2, 8, 8, 3), 3, 1, "same"),
    ((2, 10, 10, 3), 3, 2, "same"),
    ((2, 7, 7, 3), 3, 2, "same"),
    ((3, 9, 6, 2), (2, 3), (1, 2), "same"),
    ((2, 8, 8, 3), 2, 2, "valid"),
]


def _inputs(shape, seed=1, dtype="float32"):
    # Ties included: rounded values repeat inside windows, so the test also
    # checks which pixel a tie's gradient goes to.
    images = np.round(np.random.default_rng(seed).normal(size=shape), 1)
    return ops.cast(images.astype("float32"), dtype)


def _pool_with_gradient(layer, inputs):
    import torch

    inputs = inputs.detach().clone().requires_grad_(True)
    outputs = layer(inputs)
    weights = np.random.default_rng(2).normal(size=tuple(outputs.shape))
    objective = (outputs.float() * torch.as_tensor(weights.astype("float32"))).sum()
    (gradient,) = torch.autograd.grad(objective, [inputs])
    return outputs, gradient


@needs_kernel
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-p{c[1]}-s{c[2]}-{c[3]}")
def test_fused_matches_keras_values_and_gradients(dtype, case):
    shape, pool_size, strides, padding = case
    arguments = dict(pool_size=pool_size, strides=strides, padding=padding)
    reference = keras.layers.MaxPooling2D(**arguments)
    fused = FusedMaxPooling2D(**arguments, kernel_function=fused_kernel())
    inputs = _inputs(shape, dtype=dtype)
    expected, expected_gradient = _pool_with_gradient(reference, inputs)
    actual, actual_gradient = _pool_with_gradient(fused, inputs)
    assert actual.dtype == expected.dtype
    # A maximum is one of the inputs: equal exactly, in any dtype.
    np.testing.assert_array_equal(
        ops.convert_to_numpy(ops.cast(actual, "float32")),
        ops.convert_to_numpy(ops.cast(expected, "float32")),
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(ops.cast(actual_gradient, "float32")),
        ops.convert_to_numpy(ops.cast(expected_gradient, "float32")),
        rtol=1e-6,
        atol=1e-6,
    )


@needs_kernel
def test_output_and_input_gradient_stay_nhwc_contiguous():
    # Keras's torch pooling hands on NCHW memory viewed as NHWC here.
    layer = FusedMaxPooling2D(2, strides=1, padding="same")
    inputs = _inputs((2, 9, 9, 4)).requires_grad_(True)
    outputs = layer(inputs)
    assert outputs.is_contiguous()
    outputs.sum().backward()
    assert inputs.grad.is_contiguous()


@needs_kernel
def test_every_layer_of_the_model_hands_on_nhwc_memory(monkeypatch):
    # One layer that hands on another layout makes every layer after it in
    # the same stage copy (the stem's pool once did, for all of stage 1).
    model = TinyResNet()
    not_nhwc = []

    def watched(layer):
        call = layer.call

        def call_and_check(*args, **kwargs):
            outputs = call(*args, **kwargs)
            if len(outputs.shape) == 4 and not outputs.is_contiguous():
                not_nhwc.append(layer.name)
            return outputs

        return call_and_check

    for layer in model.layers:
        monkeypatch.setattr(layer, "call", watched(layer))
    model(_inputs((2, 32, 32, 3)), training=True)
    assert not_nhwc == []


def test_backend_choice():
    assert set(FUSED_KERNEL_MODULES) == {"torch"}
    if BACKEND != "torch":
        assert fused_kernel() is None
    assert FusedMaxPooling2D(2).kernel_function is fused_kernel()


def test_config_is_keras_max_pooling_config():
    arguments = dict(pool_size=2, strides=1, padding="same", name="pool")
    config = FusedMaxPooling2D(**arguments).get_config()
    assert config == keras.layers.MaxPooling2D(**arguments).get_config()
    assert FusedMaxPooling2D.from_config(config).strides == (1, 1)


def test_the_model_pools_with_the_package_layer_unless_told_keras_layers():
    def pool_types(model):
        return {
            type(layer)
            for layer in model.layers
            if isinstance(layer, keras.layers.MaxPooling2D)
        }

    assert pool_types(TinyResNet()) == {FusedMaxPooling2D}
    assert pool_types(TinyResNet(fused_conv=False)) == {keras.layers.MaxPooling2D}
