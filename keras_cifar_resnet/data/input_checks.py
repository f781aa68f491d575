"""Checks of a user's own training data: one clear line instead of a tensor error.

The model takes channels-last images of raw 0-255 pixels and integer class
ids. Data prepared for another convention (channels-first tensors from a
torch pipeline, one-hot labels, images already scaled to [0, 1]) would
otherwise fail deep inside a backend with a message about tensor sizes, or
worse, train silently on the wrong scale. `check_batch` looks at shapes, which
are known when a step is traced, so it covers arrays, `tf.data`, torch
`DataLoader`s and `PyDataset`s alike; `check_pixel_range` needs values and
runs on numpy arrays and on the first batch wherever the step sees concrete
values.
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_cifar_resnet.data.cifar10 import CLASS_NAMES


class InputError(ValueError):
    """Training data in a form the model does not take; the message is one line."""


def _dims(shape):
    return tuple(None if d is None else int(d) for d in shape)


def check_batch(image_shape, label_shape, expected_image_shape, num_classes):
    """Raises `InputError` when images or labels have the wrong layout.

    Args:
        image_shape: tuple, the images' shape, `(N, H, W, C)` expected; a
            dimension may be None (unknown when traced).
        label_shape: tuple or None, the labels' shape: `(N,)` or `(N, 1)`.
        expected_image_shape: tuple of 3 ints, the model's `(H, W, C)`.
        num_classes: int, the model's number of classes.
    """
    image_shape = _dims(image_shape)
    expected = tuple(expected_image_shape)
    height, width, channels = expected
    if len(image_shape) != 4:
        raise InputError(
            f"images must be a batch of shape (N, {height}, {width}, {channels}); "
            f"Received: images.shape={image_shape}"
        )
    if image_shape[0] == 0:
        raise InputError(
            f"images hold no image; give at least one. Received: "
            f"images.shape={image_shape}"
        )
    if image_shape[1:] != expected and image_shape[1:] == (channels, height, width):
        raise InputError(
            f"images are channels-first {image_shape}, the model takes "
            f"channels-last (N, {height}, {width}, {channels}): transpose them, "
            "e.g. images.transpose(0, 2, 3, 1) (numpy) or "
            "images.permute(0, 2, 3, 1) (torch)"
        )
    if None not in image_shape[1:] and image_shape[1:] != expected:
        raise InputError(
            f"images must have shape (N, {height}, {width}, {channels}); "
            f"Received: images.shape={image_shape}"
        )
    if label_shape is None:
        return
    label_shape = _dims(label_shape)
    if len(label_shape) == 2 and label_shape[1] == num_classes and num_classes > 1:
        raise InputError(
            f"labels look one-hot {label_shape}; the model takes integer class "
            "ids of shape (N,): convert them with labels.argmax(axis=1)"
        )
    if not (len(label_shape) == 1 or (len(label_shape) == 2 and label_shape[1] == 1)):
        raise InputError(
            "labels must be integer class ids of shape (N,) or (N, 1); "
            f"Received: labels.shape={label_shape}"
        )
    sizes = (image_shape[0], label_shape[0])
    if None not in sizes and sizes[0] != sizes[1]:
        raise InputError(
            f"{label_shape[0]} labels for {image_shape[0]} images: give one "
            "integer class id per image"
        )


def check_label_values(labels, num_classes):
    """Raises `InputError` unless `labels` (numpy) are integer ids in range."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or not np.all(
            labels == np.round(labels)
        ):
            raise InputError(
                f"labels must be integer class ids 0-{num_classes - 1}; "
                f"Received: labels of dtype {labels.dtype}"
            )
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise InputError(
            f"labels must be class ids 0-{num_classes - 1}; Received: labels "
            f"from {low:g} to {high:g}"
        )


_warned_about_scale = False


def check_pixel_range(images):
    """Raises `InputError` unless `images` (numpy) are finite raw 0-255 pixels.

    NaN or infinite pixels would train into NaN weights, and values outside
    0-255 are not pixels the model scales correctly. Float images inside
    [0, 1] look already scaled: a warning, once per process, since the
    model scales raw pixels itself and such images train badly without any
    error.
    """
    global _warned_about_scale
    images = np.asarray(images)
    if images.size == 0:
        return  # refused by `check_batch`, which knows the shape
    if images.dtype.kind not in "biuf":
        raise InputError(
            f"images must hold numbers (raw 0-255 pixels); Received: images of "
            f"dtype {images.dtype}"
        )
    low, high = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(low) and np.isfinite(high)):
        bad = int(images.size - np.count_nonzero(np.isfinite(images)))
        raise InputError(
            f"images hold {bad:,} NaN or infinite pixel values; the model takes "
            "raw 0-255 pixels"
        )
    if low < 0 or high > 255:
        raise InputError(
            f"pixel values must be raw 0-255; Received: images from {low:g} to "
            f"{high:g}"
        )
    if _warned_about_scale:
        return
    if images.dtype.kind == "f" and high <= 1.0:
        _warned_about_scale = True
        warnings.warn(
            f"images look scaled to [0, 1] (largest pixel {high:.3g}); the "
            "model takes raw 0-255 pixels and scales them itself: pass the "
            "unscaled images (e.g. images * 255)",
            UserWarning,
            stacklevel=3,
        )


def check_evaluation_data(model, images, labels):
    """Raises `InputError` unless `model` can be evaluated on `images`, `labels`.

    Args:
        model: a Keras model returning logits.
        images: array, (N, H, W, C) raw pixels.
        labels: array, (N,) or (N, 1) integer class ids of the model's classes.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise InputError(
            f"`model` must be a Keras model; Received: model={short_repr(model)}"
        )
    images, labels = np.asarray(images), np.asarray(labels)
    expected = tuple(model.input_shape[1:])
    if None in expected or len(expected) != 3:
        expected = tuple(images.shape[1:]) if images.ndim == 4 else (32, 32, 3)
    num_classes = int(model.output_shape[-1])
    check_batch(images.shape, labels.shape, expected, num_classes)
    check_label_values(labels, num_classes)
    check_pixel_range(images)


def short_repr(value):
    """`repr(value)`, cut to 60 characters, for a `Received:` part."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def single_class_warning(labels):
    """One line when every label is the same class (training learns nothing), else None.

    Args:
        labels: sequence of int, the training labels.
    """
    classes = np.unique(np.asarray(labels))
    if len(classes) != 1:
        return None
    label = int(classes[0])
    name = CLASS_NAMES[label] if 0 <= label < len(CLASS_NAMES) else str(label)
    return (
        f"every one of the {len(labels)} training labels is class {label} "
        f"({name}): the model can only learn to answer {name}, and its training "
        "accuracy of 100% means nothing"
    )
