"""The package's Conv2D against Keras's own Conv2D.

The torch session checks torch's channels-last kernel directly; TensorFlow
and JAX have none (their convolutions take NHWC as it is), so there the
layer must be exactly Keras's.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from keras_cifar_resnet import ResNet
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.network.conv import (
    FUSED_KERNEL_MODULES,
    Conv2D as FusedConv2D,
    fused_kernel,
    same_padding,
)
from tests.backend_subprocess import run_under_backend
from tests.weight_transfer import assert_same_predictions, trained_tiny_resnet

BACKEND = keras.backend.backend()

needs_kernel = pytest.mark.skipif(
    fused_kernel() is None,
    reason=f"{BACKEND} has no channels-last convolution kernel (Keras's is native)",
)

# (input shape, filters, kernel size, strides, padding): the model's
# convolutions (valid stem, same 3x3, strided same 3x3 on even and odd
# sizes, strided 1x1 shortcut), plus odd and non-square cases.
CASES = [
    ((2, 10, 10, 3), 4, 3, 1, "valid"),
    ((2, 8, 8, 5), 6, 3, 1, "same"),
    ((2, 10, 10, 4), 8, 3, 2, "same"),  # odd total padding: one pixel after
    ((2, 7, 7, 4), 8, 3, 2, "same"),  # even total padding: one each side
    ((2, 10, 10, 4), 8, 1, 2, "valid"),
    ((3, 9, 6, 2), 5, (2, 3), (1, 2), "same"),  # even kernel side
    ((1, 5, 8, 3), 2, (3, 1), (2, 1), "valid"),
]
# Relative to the largest value: bf16 carries 8 bits of mantissa, so one
# rounding step (2**-8 ~ 4e-3) of a sum of a few dozen products apart is equal.
TOLERANCES = {"float32": 1e-5, "mixed_bfloat16": 2e-2}


def _pair(shape, filters, kernel_size, strides, padding, use_bias=True, seed=0):
    """Keras's layer and the package's, built with equal random weights."""
    arguments = dict(
        filters=filters,
        kernel_size=kernel_size,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
    )
    reference = keras.layers.Conv2D(**arguments)
    fused = FusedConv2D(**arguments, kernel_function=fused_kernel())
    reference.build(shape)
    fused.build(shape)
    rng = np.random.default_rng(seed)
    values = [rng.normal(size=v.shape).astype("float32") for v in reference.weights]
    reference.set_weights(values)
    fused.set_weights(values)
    return reference, fused


def _inputs(shape, seed=1):
    images = np.random.default_rng(seed).normal(size=shape).astype("float32")
    return ops.cast(images, keras.config.dtype_policy().compute_dtype)


def _numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


def _call_with_gradients(layer, inputs):
    """(outputs, d/d(inputs, kernel[, bias]) of sum(outputs * fixed weights))."""
    import torch

    inputs = inputs.detach().clone().requires_grad_(True)
    outputs = layer(inputs)
    rng = np.random.default_rng(2)
    weights = torch.as_tensor(rng.normal(size=tuple(outputs.shape)).astype("float32"))
    objective = (outputs.float() * weights).sum()
    sources = [inputs] + [v.value for v in layer.trainable_weights]
    return outputs, torch.autograd.grad(objective, sources)


def _without_onednn():
    import torch

    return torch.backends.mkldnn.flags(enabled=False)


def _assert_close(actual, expected, tolerance, what):
    scale = max(1.0, float(np.abs(_numpy(expected)).max()))
    np.testing.assert_allclose(
        _numpy(actual),
        _numpy(expected),
        rtol=tolerance,
        atol=tolerance * scale,
        err_msg=what,
    )


@needs_kernel
@pytest.mark.parametrize("policy", sorted(TOLERANCES), indirect=True)
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-k{c[2]}-s{c[3]}-{c[4]}")
def test_fused_matches_keras(policy, use_bias, case):
    tolerance = TOLERANCES[policy]
    reference, fused = _pair(*case, use_bias=use_bias)
    inputs = _inputs(case[0])
    # The reference without oneDNN: on CPUs without AVX-512, torch 2.13's
    # oneDNN at times gives a wrong kernel gradient for a strided 1x1
    # convolution over channels_last input (the package's layer avoids it).
    with _without_onednn():
        expected, expected_gradients = _call_with_gradients(reference, inputs)
    actual, actual_gradients = _call_with_gradients(fused, inputs)

    assert actual.dtype == expected.dtype
    assert tuple(actual.shape) == tuple(expected.shape)
    _assert_close(actual, expected, tolerance, "outputs")
    names = ("inputs", "kernel", "bias")[: len(expected_gradients)]
    assert len(actual_gradients) == len(names)
    for name, a, e in zip(names, actual_gradients, expected_gradients, strict=True):
        assert tuple(a.shape) == tuple(e.shape), name
        _assert_close(a, e, tolerance, f"gradient with respect to {name}")


_FIRST_BACKWARD_CHILD = """
    import numpy as np
    import torch

    from keras_cifar_resnet.network.conv import Conv2D, fused_kernel

    layer = Conv2D(8, 1, strides=2, use_bias=False, kernel_function=fused_kernel())
    layer.build((2, 10, 10, 4))
    kernel = np.random.default_rng(0).normal(size=(1, 1, 4, 8)).astype("float32")
    layer.set_weights([kernel])
    images = np.random.default_rng(1).normal(size=(2, 10, 10, 4)).astype("float32")
    weights = np.random.default_rng(2).normal(size=(2, 5, 5, 8)).astype("float32")
    outputs = layer(torch.tensor(images))
    objective = (outputs * torch.tensor(weights)).sum()
    (gradient,) = torch.autograd.grad(objective, [layer.kernel.value])
    exact = np.einsum("nijc,nijf->cf", images[:, ::2, ::2, :], weights)
    print("error", float(np.abs(gradient.numpy()[0, 0] - exact).max()))
"""


@needs_kernel
@pytest.mark.slow
def test_the_first_backward_of_a_strided_1x1_convolution_is_exact():
    # In a fresh process, where torch has not run this convolution before.
    output = run_under_backend("torch", _FIRST_BACKWARD_CHILD)
    assert float(output.split("error")[-1]) < 1e-4, output


@needs_kernel
def test_output_and_input_gradient_stay_nhwc_contiguous():
    # The point of the layer: what it hands on (forward and backward) is in
    # Keras's layout, so the next layer copies nothing.
    _, fused = _pair((2, 10, 10, 4), 8, 3, 2, "same")
    inputs = _inputs((2, 10, 10, 4)).requires_grad_(True)
    outputs = fused(inputs)
    assert outputs.is_contiguous()
    outputs.sum().backward()
    assert inputs.grad.is_contiguous()


@pytest.mark.parametrize(
    "size, kernel_size, stride, expected",
    [(32, 3, 1, (1, 1)), (30, 3, 2, (0, 1)), (15, 3, 2, (1, 1)), (8, 1, 2, (0, 0))],
)
def test_same_padding_is_keras_rule(size, kernel_size, stride, expected):
    assert same_padding(size, kernel_size, stride) == expected


def test_backend_choice():
    # The one table: torch only (TensorFlow and XLA convolve NHWC natively).
    assert set(FUSED_KERNEL_MODULES) == {"torch"}
    if BACKEND != "torch":
        assert fused_kernel() is None
    assert FusedConv2D(2, 3).kernel_function is fused_kernel()


def test_unsupported_uses_run_keras_layer():
    # Dilation is outside the fast path on every backend: Keras's own call.
    arguments = dict(filters=3, kernel_size=3, dilation_rate=2, padding="same")
    reference = keras.layers.Conv2D(**arguments)
    fused = FusedConv2D(**arguments)
    inputs = _inputs((2, 9, 9, 2))
    for layer in (reference, fused):
        layer.build((2, 9, 9, 2))
    fused.set_weights(reference.get_weights())
    np.testing.assert_allclose(
        _numpy(fused(inputs)), _numpy(reference(inputs)), atol=1e-6
    )


def test_config_is_keras_conv2d_config():
    arguments = dict(filters=4, kernel_size=3, strides=2, padding="same", name="c")
    config = FusedConv2D(**arguments).get_config()
    assert config == keras.layers.Conv2D(**arguments).get_config()
    # And Keras's layer is built from it, and the reverse.
    assert keras.layers.Conv2D.from_config(config).strides == (2, 2)
    assert FusedConv2D.from_config(config).padding == "same"


def _conv_types(model):
    return {
        type(layer) for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
    }


@pytest.mark.parametrize("file_name", ["model.keras", "model.weights.h5"])
@pytest.mark.parametrize(
    "saved_fused", [True, False], ids=["fused-to-keras", "keras-to-fused"]
)
def test_weights_move_between_fused_and_keras_models(tmp_path, saved_fused, file_name):
    """A file saved by either model loads into the other, outputs equal."""
    source, images = trained_tiny_resnet(fused_conv=saved_fused)
    path = tmp_path / file_name
    if file_name.endswith(".weights.h5"):
        source.save_weights(path)
    else:
        source.save(path)
        assert keras.saving.load_model(path).fused_conv is saved_fused

    target = TinyResNet(fused_conv=not saved_fused)
    target.load_weights(path)
    assert _conv_types(source) == {FusedConv2D if saved_fused else keras.layers.Conv2D}
    assert _conv_types(target) == {keras.layers.Conv2D if saved_fused else FusedConv2D}
    for expected, actual in zip(source.weights, target.weights, strict=True):
        assert expected.path == actual.path
        np.testing.assert_array_equal(_numpy(actual), _numpy(expected))
    assert_same_predictions(source, target, images)


def test_model_flag_is_validated_and_stored():
    with pytest.raises(ValueError, match="fused_conv"):
        ResNet(fused_conv="yes")
    assert TinyResNet().get_config()["fused_conv"] is True
    assert TinyResNet(fused_conv=False).get_config()["fused_conv"] is False
