"""A trained network's backbone under a new head, frozen and then unfrozen.

Keras 3.15's transfer-learning pattern (the base called with
`training=False` inside a new model, then `base.trainable = True`) does not
keep BatchNorm in inference mode: once unfrozen, every BatchNorm layer's
moving statistics follow the new data's batches again. What does keep them:
a BatchNorm layer whose `trainable` is False runs in inference mode, so
`unfreeze_backbone` unfreezes every layer but those.

Example (a 100-class classifier from a CIFAR-10 model):

>>> trained = keras.saving.load_model("runs/cifar10/final.keras")
>>> backbone = backbone_of(trained, pooling="avg")
>>> logits = keras.layers.Dense(100, dtype="float32", name="logits")
>>> model = ResNet(backbone.input, logits(backbone.output))
>>> freeze_backbone(backbone)
>>> model = compile_for_training(model, steps_per_epoch=98, epochs=5,
...                              batch_size=512)
>>> model.fit(images, labels, batch_size=512, epochs=5)
>>> unfreeze_backbone(backbone)
>>> model = compile_for_training(model, steps_per_epoch=98, epochs=10,
...                              batch_size=512, learning_rate=0.01)
>>> model.fit(images, labels, batch_size=512, epochs=10)
"""

from __future__ import annotations

import keras

from keras_cifar_resnet.models import ResNet
from keras_cifar_resnet.training.build import check_model


def backbone_of(trained, *, pooling="avg"):
    """A backbone (`include_top=False`) with `trained`'s architecture and weights.

    Args:
        trained: a `ResNet` built from its arguments (`ResNet18()`, or one
            loaded from the training command's `.keras` files).
        pooling: None, `"avg"` or `"max"`, as `ResNet`'s `pooling`.
            Defaults to `"avg"`.

    Returns:
        A new `ResNet` sharing no variables with `trained`: its layers hold
        copies of `trained`'s weights (BatchNorm statistics included).

    Raises:
        ValueError: `trained` is not a `ResNet`, or is one given as a graph
            (`ResNet(inputs, outputs)`), whose architecture is not known.
    """
    check_model(trained, argument="trained")
    if trained.architecture is None:
        raise ValueError(
            "`trained` must be a ResNet built from its arguments (e.g. ResNet18(), "
            "or a .keras file of the training command), not one given as a graph. "
            f"Received: trained={trained.name!r}"
        )
    backbone = ResNet(
        **(trained.architecture | {"include_top": False, "pooling": pooling}),
        name=f"{trained.name}_backbone",
    )
    for layer in backbone.layers:
        layer.set_weights(trained.get_layer(layer.name).get_weights())
    return backbone


def freeze_backbone(backbone):
    """Freezes every layer of `backbone`; its BatchNorm runs in inference mode.

    Compile the model again afterwards (`compile_for_training`): the
    variables a compiled model trains are fixed when it compiles.
    """
    backbone.trainable = False


def unfreeze_backbone(backbone):
    """Unfreezes `backbone` except its BatchNorm layers, kept in inference mode.

    BatchNorm's moving statistics then stay the trained network's, and its
    scale and offset stay as they were; the convolutions train. Compile the
    model again afterwards (`compile_for_training`).
    """
    backbone.trainable = True
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
