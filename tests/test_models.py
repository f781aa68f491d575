"""The reference network: sizes, names, behaviour and portable weights."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_cifar_resnet import ResNet, ResNet18, ResNet34
from keras_cifar_resnet.models import TinyResNet
from tests.backend_subprocess import BACKENDS, current_backend, run_under_backend


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def _images(count=4, seed=0, shape=(32, 32, 3)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8)


@pytest.mark.parametrize(
    "build, total, trainable, non_trainable",
    [
        (ResNet18, 11_184_778, 11_176_970, 7_808),
        (ResNet34, 21_304_074, 21_288_842, 15_232),
    ],
)
def test_parameter_counts(build, total, trainable, non_trainable):
    model = build()
    assert model.count_params() == total
    assert _count(model.trainable_weights) == trainable
    assert _count(model.non_trainable_weights) == non_trainable


def test_resnet34_is_one_line_of_data():
    model = ResNet(stackwise_num_blocks=(3, 4, 6, 3))
    assert model.count_params() == 21_304_074


def test_architecture_matches_the_reference():
    model = ResNet18()
    names = [layer.name for layer in model.layers]
    assert names[:7] == [
        "images",
        "rescale",
        "stem_conv",
        "stem_bn",
        "stem_relu",
        "stem_pool",
        "stage1_block1_conv1",
    ]
    stem_conv = model.get_layer("stem_conv")
    assert stem_conv.padding == "valid" and stem_conv.strides == (1, 1)
    pool = model.get_layer("stem_pool")
    assert (
        pool.pool_size == (2, 2) and pool.strides == (1, 1) and pool.padding == "same"
    )
    # A 1x1 strided shortcut (no BN) exactly where a stage strides.
    shortcuts = sorted(n for n in names if n.endswith("_shortcut_conv"))
    assert shortcuts == [
        "stage2_block1_shortcut_conv",
        "stage3_block1_shortcut_conv",
        "stage4_block1_shortcut_conv",
    ]
    for name in shortcuts:
        layer = model.get_layer(name)
        assert layer.kernel_size == (1, 1) and layer.strides == (2, 2)
    assert model.get_layer("stage4_block2_conv2").filters == 512
    assert model.get_layer("logits").units == 10
    assert all(
        layer.use_bias
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
    )
    # Spatial sizes: valid stem 30x30, then 30, 15, 8, 4.
    assert model.get_layer("stem_conv").output.shape[1:3] == (30, 30)
    assert model.get_layer("stage4_block2_out").output.shape[1:3] == (4, 4)


def test_layer_names_are_unique_and_fixed():
    first, second = ResNet18(), ResNet18()
    names = [layer.name for layer in first.layers]
    assert len(names) == len(set(names))
    assert names == [layer.name for layer in second.layers]
    assert [w.path for w in first.weights] == [w.path for w in second.weights]


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_output_shape_and_dtype(dtype):
    model = TinyResNet(num_classes=7, input_shape=(24, 24, 3))
    logits = model.predict(_images(3, shape=(24, 24, 3)).astype(dtype), verbose=0)
    assert logits.shape == (3, 7)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


def test_scaling_is_the_first_layer():
    """Raw 0-255 pixels in, whatever their dtype: the model scales them itself."""
    model = TinyResNet()
    images = _images()
    from_uint8 = model.predict(images, verbose=0)
    from_float = model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(from_uint8, from_float, rtol=0, atol=1e-6)
    scaled = keras.ops.convert_to_numpy(model.get_layer("rescale")(images))
    np.testing.assert_allclose(
        scaled, 2 * images.astype("float64") / 255 - 1, atol=1e-6
    )
    assert scaled.min() >= -1 and scaled.max() <= 1


def test_batchnorm_training_vs_inference():
    model = TinyResNet()
    images = _images(8)
    bn = model.get_layer("stem_bn")
    mean_before = keras.ops.convert_to_numpy(bn.moving_mean).copy()

    inference = keras.ops.convert_to_numpy(model(images, training=False))
    inference_again = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_array_equal(inference, inference_again)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(bn.moving_mean), mean_before
    )

    training = keras.ops.convert_to_numpy(model(images, training=True))
    mean_after = keras.ops.convert_to_numpy(bn.moving_mean)
    assert not np.allclose(training, inference, atol=1e-4)
    # Moving mean moved by (1 - momentum) of the way towards the batch mean.
    assert not np.allclose(mean_after, mean_before)
    assert np.abs(mean_after - mean_before).max() < 1.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stackwise_num_blocks": ()}, "stackwise_num_blocks"),
        ({"stackwise_num_blocks": (2, 0, 2, 2)}, "stackwise_num_blocks"),
        ({"stackwise_num_filters": (64, 128)}, "stackwise_num_filters"),
        ({"stackwise_strides": (1, 2, 2, -1)}, "stackwise_strides"),
        ({"block_type": "bottleneck_block"}, "block_type"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 10.0}, "num_classes"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_shape": (2, 2, 3)}, "input_shape"),
        ({"batch_norm_momentum": 1.5}, "batch_norm_momentum"),
        ({"stem_filters": 0}, "stem_filters"),
        ({"width_multiplier": 0}, "width_multiplier"),
        ({"width_multiplier": -0.5}, "width_multiplier"),
        ({"width_multiplier": float("nan")}, "width_multiplier"),
        ({"width_multiplier": "0.5"}, "width_multiplier"),
    ],
)
def test_invalid_arguments_are_refused_clearly(kwargs, message):
    with pytest.raises(
        ValueError, match=rf"`{message}` must be .* Received: {message}="
    ):
        ResNet(**kwargs)


def _filters(model):
    return [
        layer.filters
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D) and "shortcut" not in layer.name
    ]


def test_width_multiplier_scales_every_layer_and_keeps_the_depth():
    full, quarter = ResNet18(), ResNet18(width_multiplier=0.25)
    assert len(quarter.layers) == len(full.layers)
    assert [w.path for w in quarter.weights] == [w.path for w in full.weights]
    assert _filters(full) == [64] * 5 + [128] * 4 + [256] * 4 + [512] * 4
    assert _filters(quarter) == [f // 4 for f in _filters(full)]
    assert quarter.get_layer("stage4_block1_shortcut_conv").filters == 128
    # Rounded, never below one filter.
    assert set(_filters(TinyResNet(width_multiplier=0.01))) == {1}
    assert _filters(TinyResNet(width_multiplier=0.3)) == [2, 2, 2, 5, 5]
    # About 1/16 of the weights (the compute scales the same way); the
    # counts the README gives.
    assert 14 < full.count_params() / quarter.count_params() < 17
    assert quarter.count_params() == 704_170
    assert ResNet18(width_multiplier=0.125).count_params() == 177_754


def test_head_computes_in_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = TinyResNet()
    finally:
        keras.config.set_dtype_policy(previous)
    assert model.get_layer("stem_conv").compute_dtype == "bfloat16"
    assert model.get_layer("logits").compute_dtype == "float32"
    logits = model(_images(2), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"


def test_config_round_trip():
    model = ResNet34(num_classes=100, batch_norm_momentum=0.9, width_multiplier=0.5)
    config = model.get_config()
    json.dumps(config)  # plain JSON
    clone = ResNet.from_config(config)
    assert clone.get_config() == config
    assert clone.count_params() == model.count_params()
    assert clone.get_layer("stem_bn").momentum == 0.9
    assert clone.get_layer("stem_conv").filters == 32
    assert clone.name == "resnet34"


def test_keras_file_round_trip(tmp_path):
    model = TinyResNet(num_classes=5)
    images = _images()
    path = tmp_path / "tiny.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is ResNet
    assert loaded.get_config() == model.get_config()
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )


def test_trained_model_saves_and_loads_without_warnings(tmp_path, recwarn):
    """A compiled, trained model saves and loads compiled, as Keras models do."""
    model = TinyResNet()
    model.compile(keras.optimizers.SGD(0.01), label_smoothing=0.1, weight_decay=1e-4)
    model.fit(_images(8), np.arange(8) % 10, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "trained.keras")
    loaded = keras.saving.load_model(tmp_path / "trained.keras")
    assert loaded.compiled and loaded.get_compile_config() == model.get_compile_config()
    assert (loaded.label_smoothing, loaded.weight_decay) == (0.1, 1e-4)
    assert not [w for w in recwarn if "compile" in str(w.message)]


@pytest.mark.slow
def test_weights_saved_here_load_under_every_other_backend(tmp_path):
    """.keras and .weights.h5 from this backend give the same logits elsewhere."""
    saving_backend = current_backend()
    model = ResNet18()
    images = _images(4, seed=1)
    # Non-trivial BatchNorm statistics, so the check covers them too.
    model(images, training=True)
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "logits.npy", model.predict(images, verbose=0))
    model.save(tmp_path / "model.keras")
    model.save_weights(tmp_path / "model.weights.h5")

    for backend in BACKENDS:
        if backend == saving_backend:
            continue
        run_under_backend(
            backend,
            f"""
            import keras, numpy as np
            from keras_cifar_resnet import ResNet18
            folder = {str(tmp_path)!r}
            images = np.load(folder + "/images.npy")
            expected = np.load(folder + "/logits.npy")
            loaded = keras.saving.load_model(folder + "/model.keras")
            fresh = ResNet18()
            fresh.load_weights(folder + "/model.weights.h5")
            for name, model in (("keras", loaded), ("weights", fresh)):
                got = model.predict(images, verbose=0)
                diff = float(np.abs(got - expected).max())
                assert diff <= 1e-4, (name, diff)
                print(name, diff)
            """,
        )


@pytest.mark.slow
def test_building_a_model_imports_no_other_framework():
    backend = current_backend()
    others = {
        "jax": ["tensorflow", "torch"],
        "torch": ["tensorflow"],
        "tensorflow": ["torch"],
    }[backend]
    output = run_under_backend(
        backend,
        """
        import sys
        import numpy as np
        import keras_cifar_resnet
        from keras_cifar_resnet import ResNet18
        model = ResNet18()
        model.predict(np.zeros((2, 32, 32, 3), "uint8"), verbose=0)
        print(sorted(m for m in ("tensorflow", "torch", "jax") if m in sys.modules))
        """,
    )
    imported = eval(output.strip().splitlines()[-1])
    assert backend in imported
    assert not set(others) & set(imported), f"{backend} run imported {imported}"


def test_unknown_backend_is_refused_clearly():
    from keras_cifar_resnet.training.steps import backend_train_step_class

    with pytest.raises(ValueError, match="Received: backend='numpy'"):
        backend_train_step_class("numpy")


def test_the_architecture_table_is_what_the_builders_build():
    from keras_cifar_resnet.models import ARCHITECTURES, MODELS, architecture

    assert set(ARCHITECTURES) == set(MODELS)
    for name, builder in MODELS.items():
        config = builder().get_config()
        for key, value in architecture(name).items():
            expected = list(value) if isinstance(value, tuple) else value
            assert config[key] == expected, (name, key)
    # `ResNet()` alone is ResNet18.
    defaults = ResNet().get_config()
    assert all(
        defaults[key] == (list(value) if isinstance(value, tuple) else value)
        for key, value in architecture("resnet18").items()
        if key != "name"
    )


def test_a_channels_first_keras_setting_changes_nothing(tmp_path):
    """keras.json's image_data_format: the model is NHWC built or loaded."""
    import keras

    model = TinyResNet()
    path = tmp_path / "tiny.keras"
    model.save(path)
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8)
    expected = model.predict(images, verbose=0)
    keras.config.set_image_data_format("channels_first")
    try:
        built = TinyResNet()
        loaded = keras.saving.load_model(path)
        assert keras.config.image_data_format() == "channels_first"
        np.testing.assert_allclose(
            loaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6
        )
        assert built.predict(images, verbose=0).shape == (2, 10)
    finally:
        keras.config.set_image_data_format("channels_last")
