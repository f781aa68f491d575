"""A user's own data in the wrong form: one clear line, or one warning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from keras_cifar_resnet.data import input_checks
from keras_cifar_resnet.data.input_checks import InputError


@pytest.fixture
def model():
    from keras_cifar_resnet.models import TinyResNet

    model = TinyResNet()
    model.compile("sgd")
    return model


def _data(count=8):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, count)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("one-hot", "labels look one-hot (8, 10)"),
        ("channels-first", "images are channels-first (8, 3, 32, 32)"),
        ("short labels", "4 labels for 8 images"),
        ("float labels", "labels must be integer class ids 0-9"),
        ("label out of range", "labels must be class ids 0-9"),
    ],
)
def test_bad_arrays_are_one_line_before_training(model, case, expected):
    images, labels = _data()
    if case == "one-hot":
        labels = np.eye(10)[labels]
    elif case == "channels-first":
        images = images.transpose(0, 3, 1, 2)
    elif case == "short labels":
        labels = labels[:4]
    elif case == "float labels":
        labels = labels + 0.5
    else:
        labels[0] = 10
    with pytest.raises(InputError) as error:
        model.fit(images, labels, epochs=1, verbose=0)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


def test_a_loader_of_channels_first_images_fails_in_the_step(model):
    """A pipeline's batches are checked when the step sees them."""
    images, labels = _data()

    def batches():
        while True:
            yield images.transpose(0, 3, 1, 2), labels

    with pytest.raises(InputError, match="channels-first"):
        model.fit(batches(), steps_per_epoch=1, epochs=1, verbose=0)


def test_images_scaled_to_one_warn_once(model, monkeypatch):
    monkeypatch.setattr(input_checks, "_warned_about_scale", False)
    images, labels = _data()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(images / 255.0, labels, epochs=1, verbose=0)
        model.fit(images / 255.0, labels, epochs=1, verbose=0)
    messages = [str(w.message) for w in caught if "0-255" in str(w.message)]
    assert len(messages) == 1 and "scaled to [0, 1]" in messages[0]


def test_raw_pixels_and_integer_ids_pass(model):
    images, labels = _data()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*0-255.*")
        # Float pixels in 0-255 are as good as uint8 ones.
        model.fit(images.astype("float32"), labels.reshape(-1, 1), epochs=1, verbose=0)


def _bad_pixels(case):
    images = _data()[0].astype("float32")
    if case == "NaN":
        images[0, 0, 0, 0] = np.nan
    elif case == "infinite":
        images[1, 2, 3, 1] = np.inf
    elif case == "below 0":
        images[0, 0, 0, 0] = -1e6
    else:
        images[0, 0, 0, 0] = 255_000
    return images


BAD_PIXELS = [
    ("NaN", "images hold 1 NaN or infinite pixel values"),
    ("infinite", "images hold 1 NaN or infinite pixel values"),
    ("below 0", "pixel values must be raw 0-255; Received: images from -1e+06"),
    ("above 255", "pixel values must be raw 0-255; Received: images from 0 to 255000"),
]


@pytest.mark.parametrize("case, expected", BAD_PIXELS)
def test_pixels_that_are_not_raw_0_to_255_are_one_line(model, case, expected):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*0-255.*")  # no scale warning
        with pytest.raises(InputError) as error:
            model.fit(_bad_pixels(case), _data()[1], epochs=1, verbose=0)
    assert str(error.value).startswith(expected), error.value
    assert model.get_weights()[0].shape and all(
        np.isfinite(w).all() for w in model.get_weights()
    )


@pytest.mark.parametrize("fit", [True, False], ids=["fit", "evaluate_model"])
def test_empty_arrays_are_one_line_on_every_backend(model, fit):
    from keras_cifar_resnet.reporting.evaluation import evaluate_model

    images = np.zeros((0, 32, 32, 3), np.uint8)
    labels = np.zeros((0,), np.int64)
    with pytest.raises(InputError, match=r"^images hold no image; give at least one"):
        if fit:
            model.fit(images, labels, epochs=1, verbose=0)
        else:
            evaluate_model(model, images, labels)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("5 labels", "5 labels for 8 images"),
        ("label 10", "labels must be class ids 0-9; Received: labels from 0 to 10"),
        ("NaN", "images hold 1 NaN or infinite pixel values"),
        ("not a model", "`model` must be a Keras model; Received: model=None"),
    ],
)
def test_evaluate_model_checks_its_inputs_in_one_line(model, case, expected):
    from keras_cifar_resnet.reporting.evaluation import evaluate_model

    images, labels = _data()
    if case == "5 labels":
        labels = labels[:5]
    elif case == "label 10":
        labels[3] = 10
    elif case == "NaN":
        images = _bad_pixels("NaN")
    with pytest.raises(InputError) as error:
        evaluate_model(None if case == "not a model" else model, images, labels)
    assert str(error.value).startswith(expected) and "\n" not in str(error.value)


@pytest.mark.parametrize("given", [None, "resnet18"])
def test_compile_for_training_takes_only_a_resnet(given):
    from keras_cifar_resnet import compile_for_training

    with pytest.raises(InputError, match=r"^`model` must be a keras_cifar_resnet"):
        compile_for_training(given, steps_per_epoch=1)


def test_negative_pixels_in_0_to_1_do_not_get_the_scale_warning(monkeypatch):
    monkeypatch.setattr(input_checks, "_warned_about_scale", False)
    with pytest.raises(InputError, match="must be raw 0-255"):
        input_checks.check_pixel_range(np.array([-0.5, 0.5], np.float32))
    assert not input_checks._warned_about_scale
