"""Initial weights: one seed, the same bits on every backend, nothing compiled."""

from __future__ import annotations

import json
import math
import random

import keras
import numpy as np
import pytest

from keras_cifar_resnet.config import RECIPES
from keras_cifar_resnet.models import ResNet18, TinyResNet
from keras_cifar_resnet.network import initializers
from tests.backend_subprocess import (
    BACKENDS,
    CROSS_BACKEND_SESSION,
    current_backend,
    run_only_in_session,
    run_under_backend,
)


def _weights(model):
    return {w.path: keras.ops.convert_to_numpy(w) for w in model.weights}


def _assert_same_bits(first, second):
    assert list(first) == list(second)
    for path in first:
        assert first[path].dtype == second[path].dtype, path
        np.testing.assert_array_equal(first[path], second[path], err_msg=path)


# Builds the profile's network after Keras's own seeding, saves every weight.
_BUILD_AND_SAVE = """
import keras, numpy as np
from keras_cifar_resnet import ResNet18
keras.utils.set_random_seed(3)
model = ResNet18(width_multiplier=0.125)
np.savez({path!r}, **{{w.path: keras.ops.convert_to_numpy(w) for w in model.weights}})
"""


@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights_on_every_backend(tmp_path):
    run_only_in_session(CROSS_BACKEND_SESSION, "builds under every backend itself")
    here = current_backend()
    keras.utils.set_random_seed(3)
    expected = _weights(ResNet18(width_multiplier=0.125))
    for backend in BACKENDS:
        if backend == here:
            continue
        path = tmp_path / f"{backend}.npz"
        run_under_backend(backend, _BUILD_AND_SAVE.format(path=str(path)))
        with np.load(path) as saved:
            _assert_same_bits(expected, {name: saved[name] for name in saved.files})


@pytest.mark.slow
def test_building_compiles_nothing_on_jax():
    """JAX reports every XLA compilation as a monitoring event; none while building.

    The child counts `/jax/core/compile/backend_compile_duration` events (one
    per program compiled or fetched from a persistent cache) during the
    build, then checks the listener works by compiling one program itself.
    """
    run_only_in_session("jax", "a JAX child process")
    output = run_under_backend(
        "jax",
        """
        import jax, keras, numpy as np
        from jax import monitoring
        from keras_cifar_resnet import ResNet18
        compiled = []
        def listen(event, duration, **kwargs):
            if event == "/jax/core/compile/backend_compile_duration":
                compiled.append(duration)
        monitoring.register_event_duration_secs_listener(listen)
        keras.utils.set_random_seed(0)
        ResNet18()
        while_building = len(compiled)
        jax.jit(lambda x: x * 2 + 1)(np.ones(3, "float32"))
        print(while_building, len(compiled) - while_building)
        """,
    )
    while_building, afterwards = map(int, output.strip().splitlines()[-1].split())
    assert afterwards == 1, "the listener missed a compilation"
    assert while_building == 0


@pytest.mark.parametrize("initializer", initializers.INITIALIZERS)
def test_python_random_seeds_the_model(initializer):
    random.seed(5)
    first = _weights(TinyResNet(initializer=initializer))
    random.seed(5)
    again = _weights(TinyResNet(initializer=initializer))
    other = _weights(TinyResNet(initializer=initializer))  # no new seed
    _assert_same_bits(first, again)
    kernel = "stem_conv/kernel"
    assert not np.array_equal(first[kernel], other[kernel])


def test_a_weight_depends_on_the_seed_and_its_layer_name_only():
    """Layers before or after it, or their number, change nothing."""
    random.seed(9)
    tiny = _weights(TinyResNet())
    random.seed(9)
    resnet18 = _weights(ResNet18(width_multiplier=0.125))
    # Both stems are 3x3x3x8 convs named stem_conv; everything else differs.
    for weight in ("kernel", "bias"):
        np.testing.assert_array_equal(
            tiny[f"stem_conv/{weight}"],
            resnet18[f"stem_conv/{weight}"],
        )
    assert not np.array_equal(
        tiny["stage1_block1_conv1/kernel"],
        tiny["stage1_block1_conv2/kernel"],
    )


def test_the_schemes_draw_their_distributions():
    random.seed(0)
    weights = {
        name: _weights(ResNet18(width_multiplier=0.25, initializer=name))
        for name in ("torch", "he_normal", "glorot_uniform")
    }
    conv, bias = "stage4_block1_conv2/kernel", "stage4_block1_conv2/bias"
    fan_in = fan_out = 3 * 3 * 128
    torch_kernel = weights["torch"][conv]
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(torch_kernel).max() <= bound
    assert torch_kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert np.abs(weights["torch"][bias]).max() <= bound
    assert weights["torch"][bias].std() > 0
    assert weights["he_normal"][conv].std() == pytest.approx(
        math.sqrt(2 / fan_out), rel=0.01
    )
    glorot_limit = math.sqrt(6 / (fan_in + fan_out))
    assert weights["glorot_uniform"][conv].std() == pytest.approx(
        glorot_limit / math.sqrt(3), rel=0.01
    )
    for name in ("he_normal", "glorot_uniform"):
        assert not weights[name][bias].any()
    for scheme in weights.values():
        np.testing.assert_array_equal(scheme["stem_bn/gamma"], 1.0)
        np.testing.assert_array_equal(scheme["stem_bn/moving_variance"], 1.0)
        assert not scheme["stem_bn/beta"].any()


@pytest.mark.parametrize(
    "initializer",
    [
        initializers.SeededVarianceScaling(2.0, "fan_out", "normal", seed=4),
        initializers.SeededUniform(0.25, seed=7),
        initializers.Constant(1.0),
    ],
)
def test_initializers_serialize_and_draw_the_same_again(initializer):
    config = keras.initializers.serialize(initializer)
    restored = keras.initializers.deserialize(json.loads(json.dumps(config)))
    assert type(restored) is type(initializer)
    assert restored.get_config() == initializer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored((3, 3, 4, 8), "float32")),
        keras.ops.convert_to_numpy(initializer((3, 3, 4, 8), "float32")),
    )


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: initializers.SeededUniform(0.1, seed=-1), "seed"),
        (lambda: initializers.SeededVarianceScaling(mode="fan_sum"), "mode"),
        (lambda: initializers.SeededVarianceScaling(distribution="x"), "distribution"),
        (lambda: TinyResNet(initializer="orthogonal"), "initializer"),
    ],
)
def test_bad_arguments_are_refused_clearly(make, message):
    with pytest.raises(ValueError, match=rf"`{message}` must .*Received: {message}="):
        make()


def test_the_recipes_choose_the_initializer():
    assert RECIPES["paper"].initializer == "glorot_uniform"
    assert RECIPES["default"].initializer in initializers.INITIALIZERS
