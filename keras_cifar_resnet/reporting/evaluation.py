"""The numpy half of evaluation: logits, flip TTA, softmax, the report.

`evaluate_model(model, images, labels)` runs the model on uint8 images and on
their mirror images and returns loss and accuracy, both plain and with
horizontal-flip test-time augmentation (the mean of the logits of each image
and its mirror image), per-class accuracy and the confusion matrix, as a
JSON-ready dict. The model runs on raw uint8 pixels; everything after its
logits is numpy, so the numbers agree across backends whenever the logits do.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

from keras_cifar_resnet.data.cifar10 import CLASS_NAMES
from keras_cifar_resnet.data.input_checks import check_evaluation_data


def predict_logits(model, images, batch_size=500, verbose=0):
    """The model's float32 logits for uint8 images.

    Args:
        model: a Keras model taking raw 0-255 pixels, (N, 32, 32, 3).
        images: (N, H, W, C) uint8 array.
        batch_size: int, images per forward pass. Defaults to 500.
        verbose: Keras `predict` verbosity: 0 silent, 1 progress bar (on
            stderr).

    Returns:
        (N, num_classes) float32 numpy array.
    """
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    # Keras draws its progress bar on stdout; here it goes to stderr, so that
    # stdout holds only results (`evaluate ... > results.txt`).
    with contextlib.redirect_stdout(sys.stderr if verbose else sys.stdout):
        logits = model.predict(images, batch_size=batch_size, verbose=verbose)
    return np.asarray(logits, dtype=np.float32)


def progress_verbosity():
    """Keras's `verbose` for an evaluation's progress: 1 on a terminal, else 0.

    The bar goes to stderr (`predict_logits`); Keras writes terminal codes
    into it even when it is not a terminal, which a log file should not hold.
    """
    return 1 if sys.stderr.isatty() else 0


def _announce(what, verbose):
    """Names the pass whose progress bar follows (stderr, like the bar)."""
    if verbose:
        print(f"evaluating: {what}", file=sys.stderr, flush=True)


def flip_horizontally(images):
    """Mirror images left to right ((N, H, W, C) arrays, width is axis 2)."""
    return np.ascontiguousarray(images[:, :, ::-1, :])


def softmax(logits):
    """Row-wise softmax in float64 (for reports, not training)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def cross_entropy(labels, logits):
    """Mean softmax cross-entropy of integer labels, in float64 numpy.

    Labels first, as `train_steps.common.cross_entropy` (the training loss).
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) == 0:
        return float("nan")
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def confusion_matrix(labels, predicted, num_classes):
    """(C, C) int64 counts, rows the true class, columns the predicted one."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels).reshape(-1), np.asarray(predicted)), 1)
    return counts


def default_class_names(num_classes):
    """CIFAR-10's names for 10 classes, else `class_0`, `class_1`, ..."""
    if num_classes == len(CLASS_NAMES):
        return list(CLASS_NAMES)
    return [f"class_{index}" for index in range(num_classes)]


def metrics_from_logits(logits, flipped_logits, labels, class_names=None):
    """The evaluation report from logits already computed.

    Args:
        logits: (N, C) float array, the logits of the test images.
        flipped_logits: (N, C) float array, the logits of their mirror images.
        labels: (N,) int array, the true classes.
        class_names: sequence of C str, or None for CIFAR-10's names (or
            `class_0`, ... when C is not 10).

    Returns:
        dict (JSON-ready: plain floats, ints, lists), with keys
        `num_images`, `loss` (mean softmax cross-entropy, no label
        smoothing), `accuracy`, `tta_loss` and `tta_accuracy` (from the mean
        of `logits` and `flipped_logits`), `class_names`,
        `per_class_accuracy` and `tta_per_class_accuracy` (dicts keyed by
        class name; NaN-free: a class without test images gets None), and
        `confusion_matrix` (list of C lists, rows true, columns predicted,
        without TTA).
    """
    logits = np.asarray(logits, dtype=np.float32)
    flipped_logits = np.asarray(flipped_logits, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    num_classes = logits.shape[-1]
    if class_names is None:
        class_names = default_class_names(num_classes)
    class_names = [str(name) for name in class_names]
    if len(class_names) != num_classes:
        raise ValueError(
            f"`class_names` must name the model's {num_classes} classes. "
            f"Received: {len(class_names)} names"
        )
    # The mean in float32 is the same float32 sum on every backend, so the
    # TTA predictions agree across backends whenever the logits do.
    tta_logits = (logits + flipped_logits) / np.float32(2)
    predicted = logits.argmax(axis=1)
    tta_predicted = tta_logits.argmax(axis=1)

    def accuracy(correct):
        return float(correct.mean()) if len(correct) else float("nan")

    def per_class(predictions):
        result = {}
        for index, name in enumerate(class_names):
            in_class = labels == index
            hits = predictions[in_class] == index
            result[name] = float(hits.mean()) if in_class.any() else None
        return result

    return {
        "num_images": int(len(labels)),
        "loss": cross_entropy(labels, logits),
        "accuracy": accuracy(predicted == labels),
        "tta_loss": cross_entropy(labels, tta_logits),
        "tta_accuracy": accuracy(tta_predicted == labels),
        "class_names": class_names,
        "per_class_accuracy": per_class(predicted),
        "tta_per_class_accuracy": per_class(tta_predicted),
        "confusion_matrix": confusion_matrix(labels, predicted, num_classes).tolist(),
    }


def evaluate_model(
    model,
    images,
    labels,
    batch_size=500,
    class_names=None,
    verbose=0,
    *,
    return_logits=False,
):
    """Evaluate `model` on uint8 `images`: loss, accuracy, flip TTA, per class.

    Args:
        model: a Keras model taking raw 0-255 pixels and returning logits.
        images: (N, H, W, C) uint8 array.
        labels: (N,) int array of true classes.
        batch_size: int, images per forward pass. Defaults to 500.
        class_names: sequence of str or None (CIFAR-10's names).
        verbose: Keras `predict` verbosity. Defaults to 0 (silent).
        return_logits: bool, also return the logits of the (unflipped)
            images, for pictures of the mistakes. Defaults to False.

    Returns:
        dict, see `metrics_from_logits`; with `return_logits`, the tuple
        `(report, logits)`.

    Example:

    >>> (_, _), (x_test, y_test) = load_cifar10(data_dir)
    >>> report = evaluate_model(model, x_test, y_test)
    >>> report["accuracy"], report["tta_accuracy"]
    """
    # One line for data the model cannot take, before any backend sees it.
    check_evaluation_data(model, images, labels)
    # Two passes, each with its own bar when verbose: say which is which.
    _announce("pass 1 of 2, the images as given", verbose)
    logits = predict_logits(model, images, batch_size, verbose)
    _announce("pass 2 of 2, their mirror images (flip TTA)", verbose)
    flipped = flip_horizontally(images)
    flipped_logits = predict_logits(model, flipped, batch_size, verbose)
    report = metrics_from_logits(logits, flipped_logits, labels, class_names)
    return (report, logits) if return_logits else report
