"""The model as Keras's own APIs use it: backbone, clone_model, fine-tuning.

Every test runs on the backend the suite runs under (CI runs it once per
backend).
"""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest

from keras_cifar_resnet import ResNet, ResNet18, compile_for_training
from keras_cifar_resnet.fine_tune import (
    backbone_of,
    freeze_backbone,
    unfreeze_backbone,
)
from keras_cifar_resnet.models import TinyResNet

# Small and quick: no augmentation, one step per epoch.
QUICK = {"steps_per_epoch": 1, "epochs": 1, "batch_size": 8, "cutout_size": 0}


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    return images, np.arange(8) % 5


def _values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _changed(before, variables):
    return [
        not np.array_equal(b, a)
        for b, a in zip(before, _values(variables), strict=True)
    ]


def _batch_norm_statistics(model):
    return [
        v
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
        for v in (layer.moving_mean, layer.moving_variance)
    ]


def _kernels(model, prefix):
    return [
        v
        for v in model.weights
        if v.path.startswith(prefix) and v.path.endswith("kernel")
    ]


@pytest.mark.parametrize(
    "pooling, shape",
    [(None, (None, 15, 15, 16)), ("avg", (None, 16)), ("max", (None, 16))],
)
def test_backbone_as_keras_applications_spells_it(pooling, shape, batch):
    full = TinyResNet()
    backbone = TinyResNet(include_top=False, pooling=pooling)
    assert backbone.output_shape == shape
    # The same layers and weights as the full network, less the head.
    assert [w.path for w in backbone.weights] == [
        w.path for w in full.weights if not w.path.startswith("logits")
    ]
    assert backbone.predict(batch[0], verbose=0).shape == (8, *shape[1:])


def test_resnet18_backbone_gives_512_features():
    assert ResNet18(include_top=False, pooling="avg").output_shape == (None, 512)
    assert ResNet18(include_top=False).output_shape == (None, 4, 4, 512)
    assert ResNet18(num_classes=100).output_shape == (None, 100)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"include_top": False, "pooling": "min"}, ValueError, "Received: pooling="),
        ({"pooling": "avg"}, ValueError, "Received: include_top=True, pooling="),
        ({"include_top": "no"}, ValueError, "Received: include_top="),
        ({"classes": 100}, TypeError, "Received: classes=100"),
        ({"weights": "imagenet"}, TypeError, "Received: weights='imagenet'"),
    ],
)
def test_unknown_or_wrong_keywords_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        TinyResNet(**kwargs)


def test_backbone_config_round_trips_in_a_keras_file(tmp_path, batch):
    backbone = TinyResNet(include_top=False, pooling="max")
    backbone.save(tmp_path / "backbone.keras")
    loaded = keras.saving.load_model(tmp_path / "backbone.keras")
    assert type(loaded) is ResNet and loaded.get_config() == backbone.get_config()
    assert loaded.get_config()["pooling"] == "max"
    np.testing.assert_allclose(
        loaded.predict(batch[0], verbose=0),
        backbone.predict(batch[0], verbose=0),
        atol=1e-6,
    )


# Whether this Keras's clone_model compiles the clone of a compiled model
# (newer releases do; 3.6 leaves it to compile_from_config).
KERAS_COMPILES_CLONES = "compile_from_config" in inspect.getsource(
    keras.src.models.cloning
)


@pytest.mark.parametrize("compiled", [False, True], ids=["uncompiled", "compiled"])
def test_clone_model_gives_a_resnet_that_trains_with_the_package_step(
    compiled, batch, tmp_path
):
    model = TinyResNet(num_classes=5)
    if compiled:
        model = compile_for_training(model, label_smoothing=0.1, **QUICK)
    clone = keras.models.clone_model(model)
    assert type(clone) is ResNet
    assert clone.compiled == (compiled and KERAS_COMPILES_CLONES)
    assert [w.path for w in clone.weights] == [w.path for w in model.weights]
    if compiled and not KERAS_COMPILES_CLONES:  # Keras 3.6: compile it alike
        clone.compile_from_config(model.get_compile_config())
    if compiled:
        assert clone.get_compile_config() == model.get_compile_config()
        assert clone.label_smoothing == 0.1 and clone.augmentation is not None
    else:
        compile_for_training(clone, **QUICK)
    history = clone.fit(*batch, batch_size=8, epochs=1, verbose=0)
    # The package's step: its own loss and accuracy, the labels checked
    # against the clone's 5 classes.
    assert set(history.history) == {"loss", "accuracy"}
    with pytest.raises(ValueError, match="label"):
        clone.fit(batch[0], np.full(8, 7), batch_size=8, epochs=1, verbose=0)
    # A clone saves and loads as a ResNet, its graph in the file.
    clone.save(tmp_path / "clone.keras")
    loaded = keras.saving.load_model(tmp_path / "clone.keras")
    assert type(loaded) is ResNet
    np.testing.assert_allclose(
        loaded.predict(batch[0], verbose=0),
        clone.predict(batch[0], verbose=0),
        atol=1e-6,
    )


def test_compile_for_training_names_the_way_for_a_plain_keras_model():
    backbone = TinyResNet(include_top=False, pooling="avg")
    plain = keras.Model(backbone.input, keras.layers.Dense(3)(backbone.output))
    with pytest.raises(ValueError, match=r"ResNet\(model.inputs, model.outputs\)"):
        compile_for_training(plain, **QUICK)


def test_fine_tuning_keeps_batch_norm_frozen_then_trains_the_backbone(batch):
    trained = TinyResNet()
    trained(batch[0], training=True)  # BatchNorm statistics of its own
    backbone = backbone_of(trained, pooling="avg")
    for layer in backbone.layers:
        for a, b in zip(
            layer.weights, trained.get_layer(layer.name).weights, strict=True
        ):
            np.testing.assert_array_equal(*_values([a, b]))
    head = keras.layers.Dense(5, dtype="float32", name="logits")
    model = ResNet(backbone.input, head(backbone.output))
    statistics = _batch_norm_statistics(model)
    convolutions = _kernels(model, "stage")

    freeze_backbone(backbone)
    model = compile_for_training(model, **QUICK)
    before = _values(statistics + convolutions + [head.kernel])
    model.fit(*batch, batch_size=8, epochs=1, verbose=0)
    assert _changed(before, statistics + convolutions + [head.kernel]) == [False] * (
        len(statistics) + len(convolutions)
    ) + [True]

    unfreeze_backbone(backbone)
    model = compile_for_training(model, learning_rate=0.01, **QUICK)
    before = _values(statistics + convolutions)
    model.fit(*batch, batch_size=8, epochs=1, verbose=0)
    changed = _changed(before, statistics + convolutions)
    assert not any(changed[: len(statistics)]), "BatchNorm statistics moved"
    assert all(changed[len(statistics) :]), "the backbone's convolutions did not train"


def test_keras_guide_pattern_does_not_keep_batch_norm_frozen(batch):
    """Keras 3.15's guide: base(x, training=False) in a new model, then unfrozen.

    Recorded so the docs change when Keras does: if this starts failing,
    Keras keeps BatchNorm frozen that way and docs/library.md should say so.
    """
    base = TinyResNet(include_top=False, pooling="avg")
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(5)(base(inputs, training=False))
    model = keras.Model(inputs, outputs)
    base.trainable = True
    model.compile(
        keras.optimizers.SGD(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    statistics = _batch_norm_statistics(base)
    before = _values(statistics)
    model.fit(*batch, batch_size=8, epochs=1, verbose=0)
    assert all(_changed(before, statistics))
