"""The evaluation command: a saved model on the CIFAR-10 test set.

Prints test loss and accuracy, with and without horizontal-flip test-time
augmentation, per-class accuracy and the confusion matrix (computed by
`keras_cifar_resnet.reporting.evaluation.evaluate_model`), writes them as JSON and draws
the confusion matrix and the most confidently wrong test images beside it:

    python -m keras_cifar_resnet.evaluate runs/resnet18-default-... --help

The model runs in float32 on raw uint8 pixels, so a model saved under one
backend gives the same predictions under the others.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from keras_cifar_resnet import messages
from keras_cifar_resnet.backend_choice import (
    BackendError,
    choose_backend,
    keep_framework_warnings_as_warnings,
    use_package_keras_settings,
)
from keras_cifar_resnet.closed_output import closed_stdout_guard
from keras_cifar_resnet.compilation_cache import enable_compilation_cache
from keras_cifar_resnet.config import TrainConfig, positive_int
from keras_cifar_resnet.data.cifar10 import DataError, load_cifar10
from keras_cifar_resnet.output_paths import clobber_problem

# Re-exported: `evaluate_model` is public API here since the first release.
from keras_cifar_resnet.reporting.evaluation import (
    evaluate_model,
    progress_verbosity,
    softmax,
)
from keras_cifar_resnet.reporting.model_files import (
    ModelFileError,
    load_model,
    resolve_model_path,
)
from keras_cifar_resnet.run_files import RUN_MODEL_FILES
from keras_cifar_resnet.safe_files import unwritable_reason, write_json

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


def build_parser():
    parser = argparse.ArgumentParser(
        prog=messages.PROGRAMS["evaluate"],
        description=(
            "Evaluate a saved model on the CIFAR-10 test set: loss and accuracy, "
            "with and without horizontal-flip test-time augmentation (the mean "
            "of the logits of each image and its mirror image), per-class "
            "accuracy and the confusion matrix. Prints a table, writes JSON and, "
            "with matplotlib installed, two pictures beside it: the confusion "
            "matrix and the most confidently wrong test images."
        ),
        epilog=(
            "Exit status: 0 success, 1 the model or data could not be used "
            "or the backend is not installed, 2 bad usage (unknown flag, "
            "missing model file, an --output that cannot be written, a wrong "
            "KERAS_BACKEND)."
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
        default=TrainConfig.eval_batch_size,
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
        "--quiet",
        action="store_true",
        help=(
            "no progress bar while predicting (shown on stderr when it is a "
            "terminal, so that stdout holds only the results)"
        ),
    )
    return parser


def write_pictures(report, images, labels, logits, output_path, mistakes):
    """Draw the confusion matrix and the most confident mistakes beside the JSON.

    Returns:
        list of Path, the pictures written.
    """
    from keras_cifar_resnet.reporting import plots

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
    keep_framework_warnings_as_warnings()
    try:
        # A reader that stops early (`| head`) is no failure: the rest of
        # the output is dropped, the files are still written.
        with closed_stdout_guard(rest_to_stderr=False):
            return _run(args)
    except (ModelFileError, BackendError) as error:
        print(messages.failure_line(error), file=sys.stderr)
        return messages.exit_status(error)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C: the report is written at the end, atomically; nothing lost.
        print(messages.stopped_before_writing(), file=sys.stderr)
        return messages.exit_status(interrupt)


def _note(line):
    if line:
        print(messages.printable(line), file=sys.stderr)


def output_problem(output_path, given, model_path=None):
    """Why the report cannot be written to `output_path`, or None (no work done).

    The JSON and the pictures beside it must each be a new or a regular
    file, not the model read nor a file of a training run
    (`output_paths.clobber_problem`).

    Args:
        output_path: Path, where the JSON goes.
        given: bool, whether the user named it with `--output`.
        model_path: Path or None, the model being evaluated. Defaults to None.
    """
    where = f"--output {output_path}" if given else f"{output_path}"
    if os.path.isdir(output_path):  # False for a name too long: judged below
        return f"{where} is a folder; name the JSON file to write"
    inputs = () if model_path is None else (model_path,)
    for path in (output_path, *picture_paths(output_path)):
        clobbered = clobber_problem(path, inputs=inputs)
        if clobbered is not None:
            named = where if path == output_path else f"{where}: {path}"
            return f"{named} {clobbered}; choose another --output"
    reason = unwritable_reason(output_path.parent)
    if reason is None:
        return None
    hint = "" if given else "; choose another place with --output PATH"
    return f"{where}: {reason}{hint}"


def _run(args):
    # Where the results go is checked first, before minutes of evaluation.
    model_path = resolve_model_path(args.model)
    output_path = Path(args.output or default_output_path(model_path, args.model))
    problem = output_problem(output_path, args.output is not None, model_path)
    if problem is not None:
        print(messages.failure_line(problem), file=sys.stderr)
        return messages.EXIT_USAGE
    choose_backend()
    enable_compilation_cache(choose_backend().name)
    import keras  # with the backend chosen

    _note(use_package_keras_settings())

    model, model_path = load_model(model_path)
    try:
        _, (images, labels) = load_cifar10(args.data_dir)
    except DataError as error:
        print(messages.failure_line(error), file=sys.stderr)
        return messages.exit_status(error)
    if args.max_examples is not None:
        images, labels = images[: args.max_examples], labels[: args.max_examples]
    labels = np.asarray(labels).reshape(-1).astype(np.int64)

    print(
        messages.printable(
            f"Evaluating {model_path} on {len(images)} CIFAR-10 test images "
            f"(backend {keras.backend.backend()}), then their mirror images."
        ),
        file=sys.stderr,
    )
    # Overflowing outputs are refused below, in one line, not warned about.
    with np.errstate(invalid="ignore", over="ignore"):
        report, logits = evaluate_model(
            model,
            images,
            labels,
            args.batch_size,
            verbose=0 if args.quiet else progress_verbosity(),
            return_logits=True,
        )
    if not np.isfinite(logits).all():
        print(
            messages.failure_line(
                f"{model_path}: the model's outputs are not finite numbers "
                "(its weights overflow); no report written"
            ),
            file=sys.stderr,
        )
        return messages.EXIT_FAILED
    report = {
        "model": str(model_path),
        "backend": keras.backend.backend(),
        "data_dir": None if args.data_dir is None else str(args.data_dir),
        **report,
    }
    print(format_report(report))

    try:
        output_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(output_path, report)
    except OSError as error:  # a disk that filled up during the evaluation
        print(messages.failure_line(error), file=sys.stderr)
        return messages.exit_status(error)
    written = [output_path]
    if args.mistakes > 0:
        from keras_cifar_resnet.reporting.plots import PlotsUnavailableError

        try:
            written += write_pictures(
                report, images, labels, logits, output_path, args.mistakes
            )
        except PlotsUnavailableError as error:
            print(f"warning: no pictures: {error}", file=sys.stderr)
        except OSError as error:  # a full disk: the JSON is written already
            reason = error.strerror or error
            print(
                f"warning: no pictures: cannot write them ({reason})", file=sys.stderr
            )
    print("\n" + messages.printable("wrote " + ", ".join(map(str, written))))
    return messages.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
