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
