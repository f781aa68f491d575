"""Pictures of a run: training curves, confusion matrix, confidently wrong images.

matplotlib is an optional dependency (the `plots` extra) and is imported only
when a picture is drawn. The figures are drawn on matplotlib's Agg canvas
through `matplotlib.figure.Figure`, never through `pyplot`, so drawing a
picture neither needs a display nor changes the caller's pyplot backend.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from keras_cifar_resnet.safe_files import write_atomically

_INSTALL_HINT = "pip install 'keras-cifar-resnet[plots]'"


class PlotsUnavailableError(ImportError):
    """matplotlib (the `plots` extra) is not installed."""


def _new_figure(**kwargs):
    """A matplotlib `Figure` on the Agg canvas, or a clear error without it."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise PlotsUnavailableError(
            f"drawing pictures needs matplotlib, which is not installed: "
            f"{_INSTALL_HINT}"
        ) from error
    figure = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, output_path):
    # Atomically, like every file of a run: a crash or a full disk while
    # drawing leaves the previous picture, not half a PNG.
    output_path = Path(output_path)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(
        output_path,
        lambda temporary: figure.savefig(temporary, dpi=120, bbox_inches="tight"),
    )
    return output_path


def read_training_log(log_csv_path):
    """The columns of a training CSV log as float arrays, by column name.

    Empty cells (for example `val_loss` when validation is off) become NaN;
    a column absent from the file is absent from the result.

    Args:
        log_csv_path: str or Path, a CSV with a header row (Keras `CSVLogger`).

    Returns:
        dict of column name to a float64 numpy array, one value per row.

    Raises:
        ValueError: the file has no header row.
    """
    with open(log_csv_path, newline="") as file:
        reader = csv.DictReader(file)
        if not reader.fieldnames:
            raise ValueError(f"training log {log_csv_path} is empty (no header row)")
        rows = list(reader)
    columns = {}
    for name in reader.fieldnames:
        values = []
        for row in rows:
            cell = (row.get(name) or "").strip()
            try:
                values.append(float(cell) if cell else math.nan)
            except ValueError:
                values.append(math.nan)
        columns[name] = np.asarray(values, dtype=np.float64)
    return columns


def epoch_numbers(columns, num_rows):
    """The log's epochs counted from 1, as the console counts them.

    Keras's CSVLogger, and run logs written by earlier versions of this
    package, count from 0; a run's log now counts from 1.
    """
    epochs = columns.get("epoch", np.arange(num_rows, dtype=np.float64))
    return epochs + 1 if num_rows and epochs[0] == 0 else epochs


def plot_training_curves(log_csv_path, output_path):
    """Loss and accuracy per epoch, training and validation, as one PNG.

    Args:
        log_csv_path: str or Path, the run's CSV log with columns `epoch`,
            `loss`, `accuracy` and, when validation was on, `val_loss`,
            `val_accuracy` (absent or empty cells are skipped).
        output_path: str or Path, the PNG to write; parent folders are made.

    Returns:
        Path, the written picture.

    Raises:
        PlotsUnavailableError: matplotlib is not installed.
        ValueError: the log has no header row.
    """
    columns = read_training_log(log_csv_path)
    num_rows = len(next(iter(columns.values())))
    epochs = epoch_numbers(columns, num_rows)
    figure = _new_figure(figsize=(10, 4))
    axes = figure.subplots(1, 2)
    for ax, metric, title in (
        (axes[0], "loss", "loss (cross-entropy)"),
        (axes[1], "accuracy", "accuracy"),
    ):
        for column, label, style in (
            (metric, "train", "-o"),
            (f"val_{metric}", "validation", "-s"),
        ):
            values = columns.get(column)
            if values is None or np.all(np.isnan(values)):
                continue
            keep = ~np.isnan(values)
            ax.plot(epochs[keep], values[keep], style, markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    axes[1].set_ylim(0, 1)
    return _save(figure, output_path)


def plot_confusion_matrix(confusion_matrix, class_names, output_path, title=None):
    """The confusion matrix as a heat map, rows true, columns predicted.

    Colours show each row's share (recall per true class), so classes of
    any size compare; the cells print the counts.

    Args:
        confusion_matrix: (C, C) int array-like, `[true][predicted]` counts.
        class_names: sequence of C str.
        output_path: str or Path, the PNG to write.
        title: str or None, the figure title.

    Returns:
        Path, the written picture.
    """
    counts = np.asarray(confusion_matrix, dtype=np.int64)
    row_totals = counts.sum(axis=1, keepdims=True)
    shares = counts / np.maximum(row_totals, 1)
    num_classes = len(class_names)
    figure = _new_figure(figsize=(1.0 + 0.75 * num_classes, 0.5 + 0.7 * num_classes))
    ax = figure.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xticks(range(num_classes), class_names, rotation=45, ha="right")
    ax.set_yticks(range(num_classes), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for true in range(num_classes):
        for predicted in range(num_classes):
            ax.text(
                predicted,
                true,
                str(counts[true, predicted]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[true, predicted] > 0.5 else "black",
            )
    if title:
        ax.set_title(title)
    return _save(figure, output_path)


def most_confident_mistakes(probabilities, labels, count):
    """Indices of the `count` wrong predictions made with the highest probability.

    Args:
        probabilities: (N, C) float array, softmax of the logits.
        labels: (N,) int array, true classes.
        count: int, how many to return at most.

    Returns:
        (K,) int64 array, K <= count, most confident first.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels).reshape(-1)
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    # Stable sort: ties keep test-set order, so the picture is reproducible.
    order = np.argsort(-confidence, kind="stable")
    return wrong[order[:count]].astype(np.int64)


def plot_image_grid(images, captions, output_path, columns=6, title=None):
    """Images in a grid, each with a caption underneath.

    Args:
        images: (N, H, W, 3) uint8 array.
        captions: sequence of N str.
        output_path: str or Path, the PNG to write.
        columns: int, images per row. Defaults to 6.
        title: str or None, the figure title.

    Returns:
        Path, the written picture.
    """
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    figure = _new_figure(figsize=(2.0 * columns, 2.3 * rows + (0.4 if title else 0)))
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    # zip stops at the images: the grid may have spare cells at the end.
    for ax, image, caption in zip(axes, images, captions, strict=False):
        # Nearest-neighbour upscaling shows the 32x32 pixels as they are.
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=8)
    if count == 0:
        axes[0].text(0.5, 0.5, "no images", ha="center", va="center")
    if title:
        figure.suptitle(title)
    return _save(figure, output_path)
