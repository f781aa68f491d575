"""Evaluate a saved model on the CIFAR-10 test set.

Test loss and accuracy, accuracy with horizontal-flip test-time augmentation
(the mean of the logits of each image and its mirror image), per-class
accuracy and the confusion matrix, as a JSON-ready dict (`evaluate_model`),
and the command that prints them, writes them as JSON and draws the confusion
matrix and the most confidently wrong test images beside it:

    python -m keras_cifar_resnet.evaluate runs/resnet18-default-... --help

The model runs in float32 on raw uint8 pixels, so a model saved under one
backend gives the same predictions under the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import zipfile
from pathlib import Path

import numpy as np


def predict_logits(model, images, batch_size=500, verbose=0):
    """The model's float32 logits for uint8 images.

    Args:
        model: a Keras model taking raw 0-255 pixels, (N, 32, 32, 3).
        images: (N, H, W, C) uint8 array.
        batch_size: int, images per forward pass. Defaults to 500.
        verbose: Keras `predict` verbosity: 0 silent, 1 progress bar.

    Returns:
        (N, num_classes) float32 numpy array.
    """
    if len(images) == 0:
        return np.zeros((0, model.output_shape[-1]), dtype=np.float32)
    logits = model.predict(images, batch_size=batch_size, verbose=verbose)
    return np.asarray(logits, dtype=np.float32)


def flip_horizontally(images):
    """Mirror images left to right ((N, H, W, C) arrays, width is axis 2)."""
    return np.ascontiguousarray(images[:, :, ::-1, :])


def softmax(logits):
    """Row-wise softmax in float64 (for reports, not training)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy of integer labels, in float64 numpy."""
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
    from keras_cifar_resnet.data import CLASS_NAMES

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
        "loss": cross_entropy(logits, labels),
        "accuracy": accuracy(predicted == labels),
        "tta_loss": cross_entropy(tta_logits, labels),
        "tta_accuracy": accuracy(tta_predicted == labels),
        "class_names": class_names,
        "per_class_accuracy": per_class(predicted),
        "tta_per_class_accuracy": per_class(tta_predicted),
        "confusion_matrix": confusion_matrix(labels, predicted, num_classes).tolist(),
    }


def evaluate_model(model, images, labels, batch_size=500, class_names=None, verbose=0):
    """Evaluate `model` on uint8 `images`: loss, accuracy, flip TTA, per class.

    Args:
        model: a Keras model taking raw 0-255 pixels and returning logits.
        images: (N, H, W, C) uint8 array.
        labels: (N,) int array of true classes.
        batch_size: int, images per forward pass. Defaults to 500.
        class_names: sequence of str or None (CIFAR-10's names).
        verbose: Keras `predict` verbosity. Defaults to 0 (silent).

    Returns:
        dict, see `metrics_from_logits`.

    Example:

    >>> (_, _), (x_test, y_test) = load_cifar10(data_dir)
    >>> report = evaluate_model(model, x_test, y_test)
    >>> report["accuracy"], report["tta_accuracy"]
    """
    logits = predict_logits(model, images, batch_size, verbose)
    flipped = flip_horizontally(images)
    flipped_logits = predict_logits(model, flipped, batch_size, verbose)
    return metrics_from_logits(logits, flipped_logits, labels, class_names)


# --- Loading a saved model --------------------------------------------------

# What a training run's output folder may hold, in order of preference: the
# checkpoint chosen on validation, then the model at the end of training.
RUN_MODEL_FILES = ("best.keras", "final.keras")


class ModelFileError(Exception):
    """A model path that is not a usable `.keras` file (message: one line)."""

    def __init__(self, message, usage=False):
        super().__init__(message)
        # True when the user named the wrong thing (exit status 2), False
        # when the named file itself is broken.
        self.usage = usage


def resolve_model_path(path):
    """The `.keras` file that `path` names: the file itself, or a run's folder's.

    A folder resolves to its first file of `RUN_MODEL_FILES`, else to its
    only `.keras` file.

    Raises:
        ModelFileError: nothing there, a folder without a model, or a file
            that is not `.keras` (usage errors).
    """
    path = Path(path)
    if path.is_dir():
        for name in RUN_MODEL_FILES:
            if (path / name).is_file():
                return path / name
        candidates = sorted(path.glob("*.keras"))
        if len(candidates) == 1:
            return candidates[0]
        found = f"{len(candidates)} .keras files" if candidates else "no .keras file"
        raise ModelFileError(
            f"{path} is a folder with {found}; expected one of "
            f"{', '.join(RUN_MODEL_FILES)} or a single .keras file",
            usage=True,
        )
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}", usage=True)
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path} is not a .keras file (Keras 3 saves models with "
            "`model.save('name.keras')`)",
            usage=True,
        )
    return path


def load_model(path):
    """Load a saved model (a `.keras` file or a run's folder) for inference.

    Args:
        path: str or Path, a `.keras` file or a training run's output folder.

    Returns:
        (keras.Model, Path): the model and the file it came from.

    Raises:
        ModelFileError: with a one-line message, for a missing, misnamed,
            corrupt or unloadable file.
    """
    import keras

    # Registers `keras_cifar_resnet>ResNet` so Keras can rebuild the model.
    import keras_cifar_resnet.models  # noqa: F401

    model_path = resolve_model_path(path)
    # Keras reports a corrupt archive as "File not found"; say what it is.
    if not zipfile.is_zipfile(model_path):
        raise ModelFileError(
            f"{model_path} is not a valid .keras file (not a zip archive; "
            "corrupt or truncated?)"
        )
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as error:  # noqa: BLE001 - any failure is the file's fault
        message = " ".join(str(error).split())[:300]
        raise ModelFileError(
            f"cannot load model {model_path}: {type(error).__name__}: {message}"
        ) from error
    return model, model_path


# --- Command line -----------------------------------------------------------


def _percent(value):
    return "    -" if value is None else f"{100 * value:5.1f}%"


def format_report(report):
    """The report as a plain-text table (what the command prints).

    Args:
        report: dict from `evaluate_model` / `metrics_from_logits`.

    Returns:
        str, several lines.
    """
    names = report["class_names"]
    width = max(len(name) for name in names)
    lines = [
        f"{'':{width}}  {'plain':>9}  {'flip TTA':>9}",
        f"{'loss':{width}}  {report['loss']:9.4f}  {report['tta_loss']:9.4f}",
        f"{'accuracy':{width}}  {100 * report['accuracy']:8.2f}%"
        f"  {100 * report['tta_accuracy']:8.2f}%",
        "",
        f"{'class':{width}}  {'accuracy':>9}  {'flip TTA':>9}",
    ]
    for name in names:
        lines.append(
            f"{name:{width}}  {_percent(report['per_class_accuracy'][name]):>9}"
            f"  {_percent(report['tta_per_class_accuracy'][name]):>9}"
        )
    # Columns are the first letters of each class; the rows spell them out.
    short = [name[:5] for name in names]
    cell = max(6, len(str(max(max(row) for row in report["confusion_matrix"]))) + 1)
    lines += [
        "",
        "confusion matrix (rows: true class, columns: predicted class, no TTA)",
        f"{'':{width}}" + "".join(f"{name:>{cell}}" for name in short),
    ]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{name:{width}}" + "".join(f"{count:>{cell}}" for count in row))
    return "\n".join(lines)


def default_output_path(model_path, model_argument):
    """Where the JSON goes without --output: the run's folder, or beside the file."""
    if Path(model_argument).is_dir():
        return Path(model_argument) / "evaluation.json"
    return model_path.with_name(f"{model_path.stem}-evaluation.json")


def picture_paths(output_path):
    """The pictures written beside the JSON: (confusion matrix, mistakes)."""
    output_path = Path(output_path)
    stem = output_path.with_suffix("")
    return (
        stem.with_name(f"{stem.name}-confusion-matrix.png"),
        stem.with_name(f"{stem.name}-mistakes.png"),
    )


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-cifar-resnet-evaluate",
        description=(
            "Evaluate a saved model on the CIFAR-10 test set: loss and accuracy, "
            "with and without horizontal-flip test-time augmentation (the mean "
            "of the logits of each image and its mirror image), per-class "
            "accuracy and the confusion matrix. Prints a table, writes JSON and, "
            "with matplotlib installed, two pictures beside it: the confusion "
            "matrix and the most confidently wrong test images."
        ),
        epilog=(
            "Exit status: 0 success, 1 the model or data could not be used, "
            "2 bad usage (unknown flag, missing model file)."
        ),
    )
    parser.add_argument(
        "model",
        help=(
            "a .keras file, or a training run's output folder (uses its "
            f"{' or '.join(RUN_MODEL_FILES)}, in that order)"
        ),
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help=(
            "the CIFAR-10 folder or archive, as for training (default: "
            "$KERAS_CIFAR_RESNET_DATA, then the Keras cache, else download it)"
        ),
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=positive_int,
        default=500,
        help="test images per forward pass (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        default=None,
        help=(
            "the JSON report to write; the pictures go beside it as "
            "NAME-confusion-matrix.png and NAME-mistakes.png (default: "
            "evaluation.json in the run's folder, or MODEL-evaluation.json "
            "beside a .keras file)"
        ),
    )
    parser.add_argument(
        "--max-examples",
        metavar="N",
        type=positive_int,
        default=None,
        help="evaluate only the first N test images, for a quick look (default: all)",
    )
    parser.add_argument(
        "--mistakes",
        metavar="N",
        type=int,
        default=24,
        help=(
            "how many confidently wrong images to show in the mistakes picture "
            "(default: %(default)s; 0 draws no pictures)"
        ),
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress bar while predicting"
    )
    return parser


def write_pictures(report, images, labels, logits, output_path, mistakes):
    """Draw the confusion matrix and the most confident mistakes beside the JSON.

    Returns:
        list of Path, the pictures written.
    """
    from keras_cifar_resnet import plots

    confusion_path, mistakes_path = picture_paths(output_path)
    accuracy = 100 * report["accuracy"]
    plots.plot_confusion_matrix(
        report["confusion_matrix"],
        report["class_names"],
        confusion_path,
        title=f"{report['num_images']:,} test images, accuracy {accuracy:.2f}%",
    )
    probabilities = softmax(logits)
    indices = plots.most_confident_mistakes(probabilities, labels, mistakes)
    predicted = probabilities.argmax(axis=1)
    names = report["class_names"]
    captions = [
        f"true: {names[labels[i]]}\npredicted: {names[predicted[i]]} "
        f"{100 * probabilities[i, predicted[i]]:.0f}%"
        for i in indices
    ]
    plots.plot_image_grid(
        images[indices],
        captions,
        mistakes_path,
        title="most confidently wrong test images (no TTA)",
    )
    return [confusion_path, mistakes_path]


def main(argv=None):
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ModelFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if error.usage else 1


def _run(args):
    from keras_cifar_resnet.data import DataError, load_cifar10

    model, model_path = load_model(args.model)
    try:
        _, (images, labels) = load_cifar10(args.data_dir)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.max_examples is not None:
        images, labels = images[: args.max_examples], labels[: args.max_examples]
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    output_path = Path(args.output or default_output_path(model_path, args.model))

    import keras

    print(
        f"Evaluating {model_path} on {len(images)} CIFAR-10 test images "
        f"(backend {keras.backend.backend()}), then their mirror images.",
        file=sys.stderr,
    )
    verbose = 0 if args.quiet else 1
    logits = predict_logits(model, images, args.batch_size, verbose)
    flipped = flip_horizontally(images)
    flipped_logits = predict_logits(model, flipped, args.batch_size, verbose)
    report = metrics_from_logits(logits, flipped_logits, labels)
    report = {
        "model": str(model_path),
        "backend": keras.backend.backend(),
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        **report,
    }
    print(format_report(report))

    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(report, indent=2) + "\n")
    written = [output_path]
    if args.mistakes > 0:
        from keras_cifar_resnet.plots import PlotsUnavailableError

        try:
            written += write_pictures(
                report, images, labels, logits, output_path, args.mistakes
            )
        except PlotsUnavailableError as error:
            print(f"warning: no pictures: {error}", file=sys.stderr)
    print("\nwrote " + ", ".join(str(path) for path in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
