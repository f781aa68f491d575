"""The reference ResNet18/34 for 32x32 images, as one Keras 3 model class.

The architecture is data: blocks and filters per stage. `ResNet` is a
functional model whose `train_step`/`test_step` come from the backend's
train-step class (see `keras_cifar_resnet.training.steps`), so `fit` and
`evaluate` run the package's own steps on TensorFlow, PyTorch and JAX.
"""

from __future__ import annotations

import functools

import keras
from keras import layers

from keras_cifar_resnet import serving

# Modules, not names: importing one of these first imports Keras, which
# registers the package's classes by importing this module while that one
# is still initializing (registration.py).
from keras_cifar_resnet.network import (
    arguments as network_arguments,
    batch_norm as fused_batch_norm_layer,
    conv as fused_conv_layer,
    initializers,
    pooling as fused_pooling_layer,
)

# The one import from the network up into the training package, by design:
# the model class takes its train step from the backend, so that `fit` runs
# the package's step whichever backend Keras runs on.
from keras_cifar_resnet.training.steps import backend_train_step_class

# A backbone's last layer (`include_top=False`): none (the last stage's
# feature map) or a global pooling to one vector per image.
POOLINGS = {
    None: None,
    "avg": layers.GlobalAveragePooling2D,
    "max": layers.GlobalMaxPooling2D,
}


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


def build_network(arguments, seed):
    """(inputs, outputs) of the Keras graph that `arguments` describe.

    The layers are channels-last whatever keras.json's `image_data_format`
    says: the model takes NHWC images and its weights are laid out so, also
    when a saved file is loaded under a channels-first setting.

    Args:
        arguments: dict, `ResNet`'s checked constructor arguments.
        seed: int, the model's seed for the initializers.
    """
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_last")
    try:
        return _build_network(arguments, seed)
    finally:
        keras.config.set_image_data_format(previous)


def _build_network(arguments, seed):

    def init(name, inputs, kernel_size, dense=False):
        fan_in = inputs.shape[-1] * kernel_size**2
        return initializers.layer_initializers(
            arguments["initializer"], seed, name, fan_in, dense=dense
        )

    def scaled(filters):
        return max(1, round(filters * arguments["width_multiplier"]))

    conv = fused_conv_layer.Conv2D if arguments["fused_conv"] else layers.Conv2D
    max_pool = (
        fused_pooling_layer.MaxPooling2D
        if arguments["fused_conv"]
        else layers.MaxPooling2D
    )
    batch_norm = functools.partial(
        (
            fused_batch_norm_layer.BatchNormalization
            if arguments["fused_batch_norm"]
            else layers.BatchNormalization
        ),
        momentum=arguments["batch_norm_momentum"],
        **initializers.batch_norm_initializers(),
    )

    inputs = keras.Input(shape=arguments["input_shape"], name="images")
    x = layers.Rescaling(2.0 / 255.0, offset=-1.0, name="rescale")(inputs)
    stem_filters = scaled(arguments["stem_filters"])
    x = conv(
        stem_filters, 3, padding="valid", name="stem_conv", **init("stem_conv", x, 3)
    )(x)
    x = batch_norm(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = max_pool(2, strides=1, padding="same", name="stem_pool")(x)
    block = BLOCKS[arguments["block_type"]]
    stages = zip(
        arguments["stackwise_num_blocks"],
        arguments["stackwise_num_filters"],
        arguments["stackwise_strides"],
        strict=True,
    )
    for stage, (num_blocks, filters, stride) in enumerate(stages, start=1):
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
    if not arguments["include_top"]:
        pooling = POOLINGS[arguments["pooling"]]
        return inputs, (x if pooling is None else pooling(name="pool")(x))
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 logits under mixed precision, as the Keras mixed-precision
    # guide recommends: the loss and softmax then see full-precision
    # values, not bf16's 8-bit mantissa.
    outputs = layers.Dense(
        arguments["num_classes"],
        dtype="float32",
        name="logits",
        **init("logits", x, 1, dense=True),
    )(x)
    return inputs, outputs


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class ResNet(backend_train_step_class(), keras.Model):
    """ResNet for CIFAR-sized images, taking raw 0-255 pixels.

    The first layer scales pixels to [-1, 1] (`2 * x / 255 - 1`), so a saved
    model takes uint8 or float images as they come. Stem: 3x3 conv (valid
    padding), BN, ReLU, 2x2 max-pool with stride 1 (same padding); then one
    stage per entry of `stackwise_num_blocks`, the first block of each stage
    striding by `stackwise_strides`; global average pooling; `Dense` logits.

    Like `keras.Model`, `ResNet(inputs, outputs)` also takes a Keras graph
    (for example a backbone with a new head, or what
    `keras.models.clone_model` builds): a network of any shape that trains
    with the package's step and `compile_for_training`.

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
        include_top: bool. False leaves out the classifier (the pooling and
            the `Dense` logits): a backbone, as `keras.applications` builds
            it, with the same layer names and weights as the full network.
            Defaults to True.
        pooling: None, `"avg"` or `"max"`, a backbone's last layer: None
            gives the last stage's feature map (N, 4, 4, 512 for ResNet18 on
            32x32), `"avg"` and `"max"` a global pooling to (N, 512). Only
            with `include_top=False`. Defaults to None.
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
        fused_conv: bool. True runs convolutions and the stem's max pooling
            in the tensors' own channels-last layout where Keras's backend
            would copy them into another (`conv.Conv2D`,
            `pooling.MaxPooling2D`: same variables and results as Keras's
            layers, faster on torch); False uses `keras.layers.Conv2D` and
            `keras.layers.MaxPooling2D`. The weights are the same either way.
            Defaults to True.
        initializer: str, how conv and dense weights start, one of
            `initializers.INITIALIZERS`: `"torch"` (PyTorch's defaults),
            `"he_normal"` (He normal, fan-out) or `"glorot_uniform"` (Keras's
            defaults). Drawn with NumPy from one seed (Python's `random`,
            which `keras.utils.set_random_seed` sets), so a seed gives the
            same weights on every backend. BatchNorm starts at ones and zeros.
            Defaults to `"torch"`.
        name: str, the model's name.

    Raises:
        ValueError: an argument out of range, named with the value received.
        TypeError: a keyword `ResNet` does not take.

    Example:

    >>> model = ResNet(stackwise_num_blocks=(2, 2, 2, 2))
    >>> logits = model.predict(images)  # (N, 32, 32, 3) uint8 -> (N, 10)
    >>> features = ResNet18(include_top=False, pooling="avg")  # -> (N, 512)
    """

    def __init__(
        self,
        *args,
        stackwise_num_blocks=(2, 2, 2, 2),
        stackwise_num_filters=(64, 128, 256, 512),
        stackwise_strides=(1, 2, 2, 2),
        block_type="basic_block",
        stem_filters=64,
        num_classes=10,
        include_top=True,
        pooling=None,
        input_shape=(32, 32, 3),
        batch_norm_momentum=0.99,
        width_multiplier=1.0,
        fused_batch_norm=True,
        fused_conv=True,
        initializer="torch",
        name="resnet",
        **kwargs,
    ):
        arguments = None
        if args or "inputs" in kwargs:
            # `ResNet(inputs, outputs)`: a graph built elsewhere.
            super().__init__(*args, name=name, **kwargs)
        else:
            network_arguments.check_model_keywords(kwargs)
            arguments = network_arguments.checked_arguments(
                {
                    key: value
                    for key, value in locals().items()
                    if key in network_arguments.ARGUMENTS
                }
            )
            # One draw from Python's `random` per model; each weight's seed
            # derives from it and the layer's name, whatever the build order.
            inputs, outputs = build_network(arguments, initializers.draw_model_seed())
            super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        # The arguments as attributes (`model.stem_filters`); None for a graph.
        self.architecture = arguments
        for key in network_arguments.ARGUMENTS:
            if key != "input_shape":  # Keras's own `input_shape` is the same
                setattr(self, key, None if arguments is None else arguments[key])
        # What the train step checks batches against.
        self.image_shape = tuple(self.input_shape[1:])
        self.num_classes = int(self.output_shape[-1])

    def get_config(self):
        if self.architecture is None:
            return {"graph": super().get_config()}
        config = {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self.architecture.items()
        }
        return config | {"name": self.name}

    def export(
        self,
        filepath,
        format="tf_saved_model",  # noqa: A002 -- Keras's own argument name
        verbose=None,
        input_signature=None,
        **kwargs,
    ):
        """Keras's `export`, taking raw uint8 images as the model does.

        `format` `"tf_saved_model"` exports under TensorFlow and JAX,
        `"onnx"` under TensorFlow and torch (`keras_cifar_resnet.serving`);
        another backend is refused with one line naming one that can.
        """
        serving.check_export(format, keras.backend.backend())
        serving.check_signature_support()
        if input_signature is None:
            input_signature = serving.image_signature(self.image_shape)
        return super().export(
            filepath,
            format=format,
            verbose=verbose,
            input_signature=input_signature,
            **kwargs,
        )

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if "graph" in config:
            # keras.Model's own reading of a graph, into this class.
            return super().from_config(dict(config["graph"]), custom_objects)
        return cls(**config)


# The networks as data: per stage, (blocks, filters, stride of its first
# block), then the stem's filters and the model's name. The builders below,
# the size estimate (`resources`) and the native PyTorch twin all read it.
ARCHITECTURES = {
    "resnet18": {
        "stages": ((2, 64, 1), (2, 128, 2), (2, 256, 2), (2, 512, 2)),
        "stem_filters": 64,
        "name": "resnet18",
    },
    "resnet34": {
        "stages": ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2)),
        "stem_filters": 64,
        "name": "resnet34",
    },
    # For tests only: the same code path at a size that trains in milliseconds.
    "tiny": {
        "stages": ((1, 8, 1), (1, 16, 2)),
        "stem_filters": 8,
        "name": "tiny_resnet",
    },
}


def architecture(model):
    """The `ResNet` arguments of a network named in `ARCHITECTURES`.

    Args:
        model: str, `"resnet18"`, `"resnet34"` or `"tiny"`.

    Returns:
        dict: `stackwise_num_blocks`, `stackwise_num_filters`,
        `stackwise_strides`, `stem_filters` and `name`.
    """
    table = ARCHITECTURES[model]
    blocks, filters, strides = zip(*table["stages"], strict=True)
    return {
        "stackwise_num_blocks": blocks,
        "stackwise_num_filters": filters,
        "stackwise_strides": strides,
        "stem_filters": table["stem_filters"],
        "name": table["name"],
    }


def _variant(model, doc):
    def build(**kwargs):
        return ResNet(**(architecture(model) | kwargs))

    build.__name__ = build.__qualname__ = model.replace("resnet", "ResNet")
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
TinyResNet = functools.partial(ResNet, **architecture("tiny"))

# Every network `TrainConfig.model` names (`config.MODEL_NAMES`, tested equal).
MODELS = {"resnet18": ResNet18, "resnet34": ResNet34, "tiny": TinyResNet}
