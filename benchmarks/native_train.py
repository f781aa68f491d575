"""The training command's default recipe in plain PyTorch: the accuracy anchor.

What a PyTorch user would write instead of this library, on the same network
as `torch_reference.py` (same width multiplier) and the same recipe
(`keras_cifar_resnet.config.RECIPES["default"]`): random crop, flip and
cutout on whole batches; softmax cross-entropy with label smoothing; Nesterov
SGD with coupled weight decay on conv and dense kernels; the linear warm-up
(step `s` of `w` at `(s + 1) / (w + 1)` of the peak) and cosine decay to 0;
BatchNorm momentum 0.9 in Keras's convention. The optimizer, BatchNorm and
random draws keep torch's own semantics (`torch.optim.SGD`'s momentum
buffer, `nn.BatchNorm2d`'s unbiased running variance, torch's generator).

The images come from the package's numpy data code, so both trainers see the
same split and the same batches in the same order: `load_cifar10`,
`split_validation(seed)`, and `TrainingBatches` (each epoch's order a pure
function of the seed and the epoch). Nothing that trains touches Keras.

The run folder matches the training command's for the files that hold
figures: `config.json`, `log.csv` (same columns), `best.pt` or `final.pt`
(the model chosen on validation accuracy, or the last one with
`--validation-size 0`) and `summary.json` (same keys; test accuracy with and
without flip TTA through `keras_cifar_resnet.evaluation.metrics_from_logits`).

    python -m benchmarks.native_train --width-multiplier 0.25 --epochs 10 \\
        --batch-size 256 --output-dir runs/native
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import time
from pathlib import Path

# The data module imports Keras (for its download helper and PyDataset);
# the torch backend keeps that from importing TensorFlow. No Keras op runs.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.torch_reference import (  # noqa: E402
    TorchResNet,
    augment,
    keras_initialization,
    load_keras_weights,
    make_optimizer,
)
from keras_cifar_resnet.config import INITIALIZERS, RECIPES  # noqa: E402
from keras_cifar_resnet.data import load_cifar10  # noqa: E402
from keras_cifar_resnet.evaluation import metrics_from_logits  # noqa: E402
from keras_cifar_resnet.input_pipeline import (  # noqa: E402
    TrainingBatches,
    split_validation,
    synthetic_cifar10,
)
from keras_cifar_resnet.run_folder import LOG_COLUMNS, write_json  # noqa: E402

RECIPE = RECIPES["default"]
EVALUATION_BATCH = 500


def warmup_steps(epochs, steps_per_epoch, warmup_epochs):
    """The training command's warm-up length: capped at half the run."""
    total = epochs * steps_per_epoch
    return min(round(warmup_epochs * steps_per_epoch), total // 2)


def learning_rate_factor(step, total_steps, warmup):
    """The fraction of the peak rate at `step` (0-based), as the command's schedule.

    Linear warm-up at `(step + 1) / (warmup + 1)`, then cosine decay to 0 at
    `total_steps`.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    decay_steps = total_steps - warmup
    progress = min(step - warmup, decay_steps) / decay_steps
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.native_train",
        description=(
            "Train the package's ResNet with the default recipe in plain "
            "PyTorch (no Keras), on the same data split and batch order as "
            "`python -m keras_cifar_resnet.train`, and write the same "
            "log.csv and summary.json."
        ),
    )
    parser.add_argument(
        "--model",
        choices=("resnet18", "resnet34", "tiny"),
        default="resnet18",
        help="Network, as train's --model. Default: resnet18.",
    )
    parser.add_argument(
        "--width-multiplier",
        type=float,
        default=1.0,
        metavar="W",
        help="Scales every layer's filters, as train's. Default: 1.0.",
    )
    parser.add_argument(
        "--epochs", type=int, default=RECIPE.epochs, help="Default: the recipe's."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=RECIPE.batch_size,
        help="Images per step. Default: the recipe's.",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=None,
        help="Peak learning rate. Default: the recipe's, scaled linearly from "
        "its batch size to --batch-size (as the training command does).",
    )
    parser.add_argument(
        "--warmup-epochs",
        type=float,
        default=RECIPE.warmup_epochs,
        help="Epochs of linear warm-up (capped at half the run). Default: the "
        "recipe's.",
    )
    parser.add_argument(
        "--max-train-examples",
        type=int,
        default=None,
        metavar="N",
        help="Train on the first N training images (after the split).",
    )
    parser.add_argument(
        "--validation-size",
        type=int,
        default=5000,
        help="Training images held out to choose the model; 0 keeps the final "
        "one. Default: 5000.",
    )
    parser.add_argument("--data-dir", default=None, metavar="DIR", help="CIFAR-10.")
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="Random images instead of CIFAR-10 (tests only).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Default: 0.")
    parser.add_argument(
        "--init",
        choices=("torch", "keras"),
        default="torch",
        help="Initial weights: torch's defaults (what a PyTorch user gets) or "
        "Keras's (Glorot-uniform kernels, zero biases), to separate the "
        "initialisation from the training step. Default: torch.",
    )
    parser.add_argument(
        "--keras-initializer",
        choices=INITIALIZERS,
        default=None,
        help="Start from the very weights the training command starts from "
        "with the same --seed and this --initializer (the package's model, "
        "built and copied over); overrides --init.",
    )
    parser.add_argument(
        "--output-dir", required=True, metavar="DIR", help="Where the run writes."
    )
    return parser


def _check(args, parser):
    problems = []
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1")
    if not (math.isfinite(args.width_multiplier) and args.width_multiplier > 0):
        problems.append("--width-multiplier must be a finite number > 0")
    if args.learning_rate is not None and not args.learning_rate > 0:
        problems.append("--learning-rate must be > 0")
    if not (math.isfinite(args.warmup_epochs) and args.warmup_epochs >= 0):
        problems.append("--warmup-epochs must be a number >= 0")
    if args.validation_size < 0 or args.seed < 0:
        problems.append("--validation-size and --seed must be >= 0")
    if args.max_train_examples is not None and args.max_train_examples < 1:
        problems.append("--max-train-examples must be >= 1")
    if (Path(args.output_dir) / "summary.json").exists():
        problems.append(f"--output-dir {args.output_dir} already holds a run")
    if problems:
        parser.error("; ".join(problems))


def load_data(args):
    """(train, validation, test) as (uint8 NHWC, int64) pairs, as the command's."""
    if args.synthetic:
        count = (args.max_train_examples or 50_000) + args.validation_size
        train, test = synthetic_cifar10(count, 1000, seed=args.seed)
    else:
        train, test = load_cifar10(args.data_dir)
    train, validation = split_validation(*train, args.validation_size, seed=args.seed)
    if args.max_train_examples is not None:
        train = tuple(array[: args.max_train_examples] for array in train)
    return train, validation, test


def package_initial_model(args):
    """The package's untrained model, built as the training command builds it."""
    import random

    from keras_cifar_resnet.build import build_model

    config = dataclasses.replace(
        RECIPE,
        model=args.model,
        width_multiplier=args.width_multiplier,
        initializer=args.keras_initializer,
    )
    # As the training loop does: the model draws its seed from `random`.
    random.seed(args.seed)
    return build_model(config)


def predict(model, images, device):
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(images), EVALUATION_BATCH):
            batch = torch.from_numpy(images[start : start + EVALUATION_BATCH])
            outputs.append(model(batch.to(device)).float().cpu().numpy())
    model.train()
    return np.concatenate(outputs)


def smoothed_cross_entropy(logits, labels):
    """The training loss on numpy logits: val_loss, as the command reports it."""
    with torch.no_grad():
        return float(
            F.cross_entropy(
                torch.from_numpy(logits),
                torch.from_numpy(labels),
                label_smoothing=RECIPE.label_smoothing,
            )
        )


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(args, parser)
    learning_rate = args.learning_rate or (
        RECIPE.learning_rate * args.batch_size / RECIPE.batch_size
    )
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(args.seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(args.seed)

    try:
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = load_data(args)
    except Exception as error:  # noqa: BLE001 - DataError and size problems
        print(f"error: {error}", file=sys.stderr)
        return 1
    if len(x_train) < args.batch_size:
        parser.error(
            f"--batch-size {args.batch_size} is larger than the {len(x_train)} "
            "training images"
        )
    batches = TrainingBatches(x_train, y_train, args.batch_size, seed=args.seed)
    steps_per_epoch = batches.steps_per_epoch
    total_steps = args.epochs * steps_per_epoch
    warmup = warmup_steps(args.epochs, steps_per_epoch, args.warmup_epochs)

    model = TorchResNet(
        args.model,
        batch_norm_momentum=RECIPE.batch_norm_momentum,
        width_multiplier=args.width_multiplier,
    )
    if args.keras_initializer:
        load_keras_weights(model, package_initial_model(args))
    elif args.init == "keras":
        keras_initialization(model)
    model = model.to(device)
    model.train()
    optimizer = make_optimizer(
        model,
        learning_rate=learning_rate,
        momentum=RECIPE.momentum,
        nesterov=True,
        weight_decay=RECIPE.weight_decay,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total_steps, warmup)
    )
    augmentation = dict(
        crop_padding=RECIPE.crop_padding,
        flip=RECIPE.flip,
        cutout_size=RECIPE.cutout_size,
        generator=generator,
    )
    settings = {
        key: value for key, value in vars(args).items() if key != "learning_rate"
    } | {"learning_rate": learning_rate, "recipe": "default"}
    write_json(
        output_dir / "config.json",
        {
            "config": settings,
            "backend": "native-torch",
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"native PyTorch: {args.model} at width {args.width_multiplier:g} "
        f"({parameters:,} parameters), {len(x_train):,} training images, "
        f"{len(x_val):,} validation, {len(x_test):,} test; {args.epochs} epochs of "
        f"{steps_per_epoch} steps; peak learning rate {learning_rate:g}; writing to "
        f"{output_dir}",
        flush=True,
    )

    model_file = "best.pt" if len(x_val) else "final.pt"
    best_epoch, best_accuracy, train_seconds = None, None, 0.0
    with open(output_dir / "log.csv", "w", newline="") as log_file:
        log = csv.DictWriter(log_file, LOG_COLUMNS)
        log.writeheader()
        for epoch in range(args.epochs):
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device)
            for step in range(steps_per_epoch):
                images, labels = batches[epoch * steps_per_epoch + step]
                images = torch.from_numpy(images).to(device)
                labels = torch.from_numpy(labels).to(device)
                logits = model(augment(images, **augmentation))
                loss = F.cross_entropy(
                    logits, labels, label_smoothing=RECIPE.label_smoothing
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += loss.detach()
                correct += (logits.detach().argmax(1) == labels).sum()
                _progress(epoch, step, steps_per_epoch, started)
            seconds = time.perf_counter() - started
            train_seconds += seconds
            row = {
                "epoch": epoch,
                "loss": float(loss_sum) / steps_per_epoch,
                "accuracy": float(correct) / (steps_per_epoch * args.batch_size),
                # The rate the next step will use, as the command logs it.
                "learning_rate": learning_rate
                * learning_rate_factor(
                    (epoch + 1) * steps_per_epoch, total_steps, warmup
                ),
                "seconds": seconds,
            }
            marker = ""
            if len(x_val):
                val_logits = predict(model, x_val, device)
                row["val_loss"] = smoothed_cross_entropy(val_logits, y_val)
                row["val_accuracy"] = float((val_logits.argmax(1) == y_val).mean())
                if best_accuracy is None or row["val_accuracy"] > best_accuracy:
                    best_epoch, best_accuracy = epoch + 1, row["val_accuracy"]
                    torch.save(model.state_dict(), output_dir / model_file)
                    marker = "  (best so far)"
            log.writerow({k: v if k == "epoch" else f"{v:.6g}" for k, v in row.items()})
            log_file.flush()
            print(
                f"\repoch {epoch + 1}/{args.epochs}  loss {row['loss']:.4f}  "
                f"accuracy {row['accuracy']:.4f}"
                + (
                    f"  val_accuracy {row['val_accuracy']:.4f}"
                    if "val_accuracy" in row
                    else ""
                )
                + f"  {seconds:.1f} s{marker}",
                flush=True,
            )
    if not len(x_val):
        torch.save(model.state_dict(), output_dir / model_file)
    model.load_state_dict(torch.load(output_dir / model_file, weights_only=True))
    logits = predict(model, x_test, device)
    flipped = predict(model, np.ascontiguousarray(x_test[:, :, ::-1]), device)
    report = metrics_from_logits(logits, flipped, y_test)
    summary = {
        "model_file": model_file,
        "selected_epoch": best_epoch or args.epochs,
        "validation_accuracy": best_accuracy,
        "epochs": args.epochs,
        "train_images": len(x_train),
        "synthetic": args.synthetic,
        "train_seconds": round(train_seconds, 1),
        "backend": "native-torch",
        "test": report,
    }
    write_json(output_dir / "summary.json", summary)
    print(
        f"test accuracy {report['accuracy']:.2%} (flip TTA "
        f"{report['tta_accuracy']:.2%}); {model_file} from epoch "
        f"{summary['selected_epoch']}; results in {output_dir}",
        flush=True,
    )
    return 0


def _progress(epoch, step, steps, started):
    """A one-line progress bar on a terminal, every step; silent in logs."""
    if not sys.stdout.isatty():
        return
    done = step + 1
    elapsed = time.perf_counter() - started
    bar = "=" * (30 * done // steps)
    print(
        f"\repoch {epoch + 1}: {done}/{steps} [{bar:<30}] "
        f"{elapsed / done * (steps - done):.0f} s left",
        end="",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
