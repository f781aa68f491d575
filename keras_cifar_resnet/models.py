"""The reference ResNet18/34 for 32x32 images, as one Keras 3 model class.

The architecture is data: blocks and filters per stage. `ResNet` is a
functional model whose `train_step`/`test_step` come from the backend's
train-step class (see `keras_cifar_resnet.train_steps`), so `fit` and
`evaluate` run the package's own steps on TensorFlow, PyTorch and JAX.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from keras_cifar_resnet import batch_norm as fused_batch_norm_layer
from keras_cifar_resnet import conv as fused_conv_layer
from keras_cifar_resnet.initializers import (
    INITIALIZERS,
    batch_norm_initializers,
    draw_model_seed,
    layer_initializers,
)
from keras_cifar_resnet.train_steps import backend_train_step_class

BLOCK_TYPES = ("basic_block",)
# Each network by name: its stem's filters and (blocks, filters, stride) per
# stage. The native PyTorch twin (benchmarks/torch_reference.py) builds from it.
STEM_FILTERS = {"resnet18": 64, "resnet34": 64, "tiny": 8}
STAGES = {
    "resnet18": ((2, 64, 1), (2, 128, 2), (2, 256, 2), (2, 512, 2)),
    "resnet34": ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)),
    "tiny": ((1, 8, 1), (1, 16, 2)),
}


def architecture(name):
    """`ResNet`'s architecture arguments of the network `name` in `STAGES`."""
    blocks, filters, strides = zip(*STAGES[name], strict=True)
    return dict(
        stackwise_num_blocks=blocks,
        stackwise_num_filters=filters,
        stackwise_strides=strides,
        stem_filters=STEM_FILTERS[name],
    )


def _validate(name, value, ok, expected):
    if not ok:
        raise ValueError(f"`{name}` must be {expected}. Received: {name}={value!r}")


def basic_block(x, filters, stride, batch_norm, conv, name, init):
    """conv3x3(stride)-BN-ReLU-conv3x3-BN, plus a shortcut, then add and ReLU.

    The shortcut is a 1x1 conv with the block's stride (no BN) when the
    stride is not 1, the identity otherwise, as in the reference write-up.
    `init(name, inputs, kernel_size)` gives a conv's initializers.
    """
    shortcut = x
    if stride != 1:
        shortcut = conv(
            filters,
            1,
            strides=stride,
            name=f"{name}_shortcut_conv",
            **init(f"{name}_shortcut_conv", x, 1),
        )(x)
    x = conv(
        filters,
        3,
        strides=stride,
        padding="same",
        name=f"{name}_conv1",
        **init(f"{name}_conv1", x, 3),
    )(x)
    x = batch_norm(name=f"{name}_bn1")(x)
    x = layers.ReLU(name=f"{name}_relu1")(x)
    x = conv(
        filters, 3, padding="same", name=f"{name}_conv2", **init(f"{name}_conv2", x, 3)
    )(x)
    x = batch_norm(name=f"{name}_bn2")(x)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


BLOCKS = {"basic_block": basic_block}


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class ResNet(backend_train_step_class(), keras.Model):
    """ResNet for CIFAR-sized images, taking raw 0-255 pixels.

    The first layer scales pixels to [-1, 1] (`2 * x / 255 - 1`), so a saved
    model takes uint8 or float images as they come. Stem: 3x3 conv (valid
    padding), BN, ReLU, 2x2 max-pool with stride 1 (same padding); then one
    stage per entry of `stackwise_num_blocks`, the first block of each stage
    striding by `stackwise_strides`; global average pooling; `Dense` logits.

    Args:
        stackwise_num_blocks: tuple of int, blocks per stage. Defaults to
            `(2, 2, 2, 2)` (ResNet18).
        stackwise_num_filters: tuple of int, filters per stage. Defaults to
            `(64, 128, 256, 512)`.
        stackwise_strides: tuple of int, stride of each stage's first block.
            Defaults to `(1, 2, 2, 2)`.
        block_type: str, the residual block. Only `"basic_block"`.
        stem_filters: int, filters of the stem conv. Defaults to 64.
        num_classes: int, number of logits. Defaults to 10.
        input_shape: tuple of 3 ints, `(height, width, channels)`. Defaults
            to `(32, 32, 3)`.
        batch_norm_momentum: float, BatchNorm moving-average momentum.
            Defaults to Keras's 0.99.
        width_multiplier: float > 0, scales the stem's and every stage's
            filters (rounded, at least 1) and keeps the topology:
            `ResNet18(width_multiplier=0.25)` has 16/16/32/64/128 filters and
            about 1/16 of the compute. Defaults to 1.0.
        fused_batch_norm: bool. True computes BatchNorm with the backend's
            fused kernel where it has one (`batch_norm.BatchNormalization`: same
            variables and results as Keras's layer, faster on torch); False
            uses `keras.layers.BatchNormalization`. The weights are the same
            either way. Defaults to True.
        fused_conv: bool. True runs convolutions in the tensors' own
            channels-last layout where Keras's backend would copy them into
            another (`conv.Conv2D`: same variables and results as Keras's
            layer, faster on torch); False uses `keras.layers.Conv2D`. The
            weights are the same either way. Defaults to True.
        initializer: str, how conv and dense weights start, one of
            `initializers.INITIALIZERS`: `"torch"` (PyTorch's defaults),
            `"he_normal"` (He normal, fan-out) or `"glorot_uniform"` (Keras's
            defaults). Drawn with NumPy from one seed (Python's `random`,
            which `keras.utils.set_random_seed` sets), so a seed gives the
            same weights on every backend. BatchNorm starts at ones and zeros.
            Defaults to `"torch"`.
        name: str, the model's name.

    Example:

    >>> model = ResNet(stackwise_num_blocks=(2, 2, 2, 2))
    >>> logits = model.predict(images)  # (N, 32, 32, 3) uint8 -> (N, 10)
    """

    def __init__(
        self,
        stackwise_num_blocks=(2, 2, 2, 2),
        stackwise_num_filters=(64, 128, 256, 512),
        stackwise_strides=(1, 2, 2, 2),
        block_type="basic_block",
        stem_filters=64,
        num_classes=10,
        input_shape=(32, 32, 3),
        batch_norm_momentum=0.99,
        width_multiplier=1.0,
        fused_batch_norm=True,
        fused_conv=True,
        initializer="torch",
        name="resnet",
        **kwargs,
    ):
        stackwise_num_blocks = tuple(stackwise_num_blocks)
        stackwise_num_filters = tuple(stackwise_num_filters)
        stackwise_strides = tuple(stackwise_strides)
        input_shape = tuple(input_shape)
        _validate(
            "stackwise_num_blocks",
            stackwise_num_blocks,
            len(stackwise_num_blocks) > 0
            and all(isinstance(n, int) and n > 0 for n in stackwise_num_blocks),
            "a non-empty sequence of positive ints",
        )
        for arg, value in (
            ("stackwise_num_filters", stackwise_num_filters),
            ("stackwise_strides", stackwise_strides),
        ):
            _validate(
                arg,
                value,
                len(value) == len(stackwise_num_blocks)
                and all(isinstance(n, int) and n > 0 for n in value),
                f"{len(stackwise_num_blocks)} positive ints, one per stage",
            )
        _validate(
            "block_type", block_type, block_type in BLOCKS, f"one of {BLOCK_TYPES}"
        )
        _validate(
            "stem_filters",
            stem_filters,
            isinstance(stem_filters, int) and stem_filters > 0,
            "a positive int",
        )
        _validate(
            "num_classes",
            num_classes,
            isinstance(num_classes, int) and num_classes >= 2,
            "an int >= 2",
        )
        _validate(
            "input_shape",
            input_shape,
            len(input_shape) == 3
            and all(isinstance(n, int) and n > 0 for n in input_shape)
            and min(input_shape[:2]) >= 3,
            "(height, width, channels) with height and width >= 3",
        )
        _validate(
            "batch_norm_momentum",
            batch_norm_momentum,
            isinstance(batch_norm_momentum, float) and 0.0 <= batch_norm_momentum < 1.0,
            "a float in [0, 1)",
        )

        _validate(
            "width_multiplier",
            width_multiplier,
            isinstance(width_multiplier, (int, float))
            and not isinstance(width_multiplier, bool)
            and 0.0 < width_multiplier < float("inf"),
            "a finite number > 0",
        )
        width_multiplier = float(width_multiplier)
        _validate(
            "fused_batch_norm",
            fused_batch_norm,
            isinstance(fused_batch_norm, bool),
            "True or False",
        )
        _validate(
            "fused_conv", fused_conv, isinstance(fused_conv, bool), "True or False"
        )
        conv = fused_conv_layer.Conv2D if fused_conv else layers.Conv2D
        _validate(
            "initializer",
            initializer,
            initializer in INITIALIZERS,
            f"one of {INITIALIZERS}",
        )
        # One draw from Python's `random` per model; each weight's seed
        # derives from it and the layer's name, whatever the build order.
        seed = draw_model_seed()

        def init(name, inputs, kernel_size, dense=False):
            fan_in = inputs.shape[-1] * kernel_size**2
            return layer_initializers(initializer, seed, name, fan_in, dense=dense)

        batch_norm = functools.partial(
            (
                fused_batch_norm_layer.BatchNormalization
                if fused_batch_norm
                else layers.BatchNormalization
            ),
            momentum=batch_norm_momentum,
            **batch_norm_initializers(),
        )

        def scaled(filters):
            return max(1, round(filters * width_multiplier))

        inputs = keras.Input(shape=input_shape, name="images")
        x = layers.Rescaling(2.0 / 255.0, offset=-1.0, name="rescale")(inputs)
        x = conv(
            scaled(stem_filters),
            3,
            padding="valid",
            name="stem_conv",
            **init("stem_conv", x, 3),
        )(x)
        x = batch_norm(name="stem_bn")(x)
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.MaxPooling2D(2, strides=1, padding="same", name="stem_pool")(x)
        block = BLOCKS[block_type]
        for stage, (num_blocks, filters, stride) in enumerate(
            zip(
                stackwise_num_blocks,
                stackwise_num_filters,
                stackwise_strides,
                strict=True,
            ),
            start=1,
        ):
            for index in range(1, num_blocks + 1):
                x = block(
                    x,
                    scaled(filters),
                    stride if index == 1 else 1,
                    batch_norm,
                    conv,
                    name=f"stage{stage}_block{index}",
                    init=init,
                )
        x = layers.GlobalAveragePooling2D(name="pool")(x)
        # float32 logits under mixed precision, as the Keras mixed-precision
        # guide recommends: the loss and softmax then see full-precision
        # values, not bf16's 8-bit mantissa.
        outputs = layers.Dense(
            num_classes,
            dtype="float32",
            name="logits",
            **init("logits", x, 1, dense=True),
        )(x)
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

        self.stackwise_num_blocks = stackwise_num_blocks
        self.stackwise_num_filters = stackwise_num_filters
        self.stackwise_strides = stackwise_strides
        self.block_type = block_type
        self.stem_filters = stem_filters
        self.num_classes = num_classes
        self.image_shape = input_shape
        self.batch_norm_momentum = batch_norm_momentum
        self.width_multiplier = width_multiplier
        self.fused_batch_norm = fused_batch_norm
        self.fused_conv = fused_conv
        self.initializer = initializer

    def get_config(self):
        return {
            "stackwise_num_blocks": list(self.stackwise_num_blocks),
            "stackwise_num_filters": list(self.stackwise_num_filters),
            "stackwise_strides": list(self.stackwise_strides),
            "block_type": self.block_type,
            "stem_filters": self.stem_filters,
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "batch_norm_momentum": self.batch_norm_momentum,
            "width_multiplier": self.width_multiplier,
            "fused_batch_norm": self.fused_batch_norm,
            "fused_conv": self.fused_conv,
            "initializer": self.initializer,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _variant(name, doc):
    def build(**kwargs):
        kwargs.setdefault("name", name)
        return ResNet(**(architecture(name) | kwargs))

    build.__name__ = build.__qualname__ = name.replace("resnet", "ResNet")
    build.__doc__ = doc
    return build


ResNet18 = _variant(
    "resnet18",
    "ResNet18: `ResNet` with blocks (2, 2, 2, 2); 11,184,778 parameters at 10 "
    "classes. Takes `ResNet`'s keyword arguments.",
)
ResNet34 = _variant(
    "resnet34",
    "ResNet34: `ResNet` with blocks (3, 4, 6, 3); 21,304,074 parameters at 10 "
    "classes. Takes `ResNet`'s keyword arguments.",
)

# For tests only: the same code path at a size that trains in milliseconds.
TinyResNet = functools.partial(ResNet, **architecture("tiny"), name="tiny_resnet")

# Every network `TrainConfig.model` names (`config.MODEL_NAMES`, tested equal).
MODELS = {"resnet18": ResNet18, "resnet34": ResNet34, "tiny": TinyResNet}
