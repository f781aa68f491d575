"""Initial weights drawn in NumPy: the same seed, the same weights everywhere.

Keras's own initializers draw with the backend's random generator, so one
seed gives different weights on TensorFlow, PyTorch and JAX, and on JAX
every new variable shape compiles a small random program (a minute for a
ResNet18 on a CPU). These initializers draw with NumPy from an integer
seed instead: bit-identical arrays on every backend, and nothing compiled.
They are ordinary Keras initializers (`get_config`, registered), so layers
that hold them save and load.

`layer_initializers` gives a layer its kernel and bias initializers for an
initialisation scheme (`INITIALIZERS`), seeded from the model's seed and
the layer's name, so a layer's weights do not depend on the order in which
layers are built.

Example:

>>> initializer = SeededVarianceScaling(scale=2.0, mode="fan_out", seed=3)
>>> layer = keras.layers.Conv2D(16, 3, kernel_initializer=initializer)
"""

from __future__ import annotations

import math
import random
import zlib

import keras
import numpy as np

from keras_cifar_resnet.config import INITIALIZERS

# The initialisation schemes of `INITIALIZERS` (named in config, which stays
# free of Keras):
#   glorot_uniform: Keras's defaults, Glorot-uniform kernels and zero biases.
#   he_normal: the ResNet paper's He normal (fan_out, as torchvision's
#       ResNet) for convolutions, zero conv biases; the classifier as torch's
#       `nn.Linear`.
#   torch: PyTorch's defaults for `nn.Conv2d`/`nn.Linear`:
#       `kaiming_uniform_(a=sqrt(5))` kernels, i.e. uniform within
#       1/sqrt(fan_in), and biases uniform within the same bound.

# Seeds are drawn like Keras's own default seeds, from Python's `random`,
# which `keras.utils.set_random_seed` seeds.
_SEED_RANGE = (1, 10**9)


def draw_model_seed():
    """A seed for a model built without one: from Python's `random`.

    After `keras.utils.set_random_seed(s)` (or `random.seed(s)`) the next
    model gets the same seed on every backend; without it, a fresh one.
    """
    return random.randint(*_SEED_RANGE)


def weight_seed(model_seed, layer_name, weight_name):
    """The seed of one weight: a hash of the model's seed and the weight's path."""
    key = zlib.crc32(f"{layer_name}/{weight_name}".encode())
    sequence = np.random.SeedSequence(entropy=model_seed, spawn_key=(key,))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def _fans(shape):
    """Keras's fans: (fan_in, fan_out), kernels shaped (..., in, out)."""
    if len(shape) < 2:
        raise ValueError(f"fans need a kernel of rank >= 2. Received: shape={shape}")
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def _as_float(values, dtype):
    # Drawn in float64 and rounded once to the variable's dtype. An explicit
    # dtype matters on JAX: a NumPy array converted without one goes through
    # a compiled identity program per shape; with one it is only copied.
    dtype = keras.backend.standardize_dtype(dtype or keras.config.floatx())
    rounded = values.astype("float32" if dtype == "bfloat16" else dtype)
    return keras.ops.convert_to_tensor(rounded, dtype=dtype)


class _SeededInitializer(keras.initializers.Initializer):
    def __init__(self, seed):
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0. Received: seed={seed!r}")
        self.seed = seed

    def _generator(self):
        # A fresh generator per call: the same seed gives the same array.
        return np.random.default_rng(self.seed)

    def get_config(self):
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class SeededVarianceScaling(_SeededInitializer):
    """Keras's `VarianceScaling`, drawn with NumPy from an integer seed.

    The variance is `scale / n`, `n` being the kernel's fan-in, fan-out or
    their mean. Normal draws are not truncated (as torch's `kaiming_normal_`).

    Args:
        scale: float > 0. Defaults to 1.0.
        mode: str, `"fan_in"`, `"fan_out"` or `"fan_avg"`. Defaults to
            `"fan_in"`.
        distribution: str, `"uniform"` or `"normal"`. Defaults to
            `"uniform"`.
        seed: int >= 0.

    Example:

    >>> glorot = SeededVarianceScaling(1.0, "fan_avg", "uniform", seed=0)
    >>> glorot((3, 3, 16, 32)).shape
    (3, 3, 16, 32)
    """

    def __init__(self, scale=1.0, mode="fan_in", distribution="uniform", seed=0):
        super().__init__(seed)
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(
                "`mode` must be 'fan_in', 'fan_out' or 'fan_avg'. "
                f"Received: mode={mode!r}"
            )
        if distribution not in ("uniform", "normal"):
            raise ValueError(
                "`distribution` must be 'uniform' or 'normal'. "
                f"Received: distribution={distribution!r}"
            )
        if not scale > 0:
            raise ValueError(f"`scale` must be > 0. Received: scale={scale!r}")
        self.scale = float(scale)
        self.mode = mode
        self.distribution = distribution

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = _fans(shape)
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(
            self.mode, (fan_in + fan_out) / 2
        )
        variance = self.scale / max(1.0, fan)
        if self.distribution == "normal":
            values = self._generator().normal(0.0, math.sqrt(variance), shape)
        else:
            limit = math.sqrt(3.0 * variance)
            values = self._generator().uniform(-limit, limit, shape)
        return _as_float(values, dtype)

    def get_config(self):
        return {
            "scale": self.scale,
            "mode": self.mode,
            "distribution": self.distribution,
            **super().get_config(),
        }


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class SeededUniform(_SeededInitializer):
    """Uniform in `[-limit, limit)`, drawn with NumPy from an integer seed.

    Args:
        limit: float >= 0.
        seed: int >= 0.
    """

    def __init__(self, limit, seed=0):
        super().__init__(seed)
        if not limit >= 0:
            raise ValueError(f"`limit` must be >= 0. Received: limit={limit!r}")
        self.limit = float(limit)

    def __call__(self, shape, dtype=None):
        return _as_float(
            self._generator().uniform(-self.limit, self.limit, shape), dtype
        )

    def get_config(self):
        return {"limit": self.limit, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class Constant(keras.initializers.Initializer):
    """A constant, as a NumPy array: nothing runs on the backend to make it.

    Args:
        value: float. Defaults to 0.0.
    """

    def __init__(self, value=0.0):
        self.value = float(value)

    def __call__(self, shape, dtype=None):
        return _as_float(np.full(shape, self.value), dtype)

    def get_config(self):
        return {"value": self.value}


def _torch_linear(model_seed, name, fan_in):
    # torch's nn.Conv2d/nn.Linear: kaiming_uniform_(a=sqrt(5)) is uniform
    # within sqrt(6 / ((1 + 5) * fan_in)) = 1/sqrt(fan_in); the bias shares it.
    return {
        "kernel_initializer": SeededVarianceScaling(
            1.0 / 3.0, "fan_in", "uniform", seed=weight_seed(model_seed, name, "kernel")
        ),
        "bias_initializer": SeededUniform(
            1.0 / math.sqrt(fan_in), seed=weight_seed(model_seed, name, "bias")
        ),
    }


def layer_initializers(initialization, model_seed, name, fan_in, dense=False):
    """Kernel and bias initializers of one conv or dense layer.

    Args:
        initialization: str, one of `INITIALIZERS`.
        model_seed: int, the model's seed.
        name: str, the layer's name (its weights' seeds derive from it).
        fan_in: int, inputs per output (kernel height * width * channels in).
        dense: bool, True for the classifier. Defaults to False.

    Returns:
        dict with `kernel_initializer` and `bias_initializer`, to pass to the
        layer.
    """
    if initialization == "torch" or (initialization == "he_normal" and dense):
        return _torch_linear(model_seed, name, fan_in)
    seed = weight_seed(model_seed, name, "kernel")
    if initialization == "he_normal":
        kernel = SeededVarianceScaling(2.0, "fan_out", "normal", seed=seed)
    elif initialization == "glorot_uniform":
        kernel = SeededVarianceScaling(1.0, "fan_avg", "uniform", seed=seed)
    else:
        raise ValueError(
            f"`initialization` must be one of {INITIALIZERS}. "
            f"Received: initialization={initialization!r}"
        )
    return {"kernel_initializer": kernel, "bias_initializer": Constant(0.0)}


def batch_norm_initializers():
    """BatchNorm's usual ones and zeros, as NumPy constants."""
    return {
        "gamma_initializer": Constant(1.0),
        "beta_initializer": Constant(0.0),
        "moving_mean_initializer": Constant(0.0),
        "moving_variance_initializer": Constant(1.0),
    }
