"""The training command's default recipe in plain PyTorch: the accuracy anchor.

The network of `torch_reference.py` with torch's own optimizer, BatchNorm and
random draws, on the package's data split and batch order; nothing that
trains touches Keras. The run folder is the command's, with `best.pt` and
`final.pt` for its models.

    python -m benchmarks.native_train --width-multiplier 0.25 --epochs 10 \\
        --batch-size 256 --output-dir runs/native
"""

from __future__ import annotations

import argparse
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
from keras_cifar_resnet import messages  # noqa: E402
from keras_cifar_resnet.config import (  # noqa: E402
    INITIALIZERS,
    UsageError,
    add_flags,
    config_from_flags,
    explicit_flags,
    warmup_steps,
)
from keras_cifar_resnet.data.cifar10 import DataError  # noqa: E402
from keras_cifar_resnet.data.input_pipeline import (  # noqa: E402
    TrainingBatches,
    prepare_data,
)
from keras_cifar_resnet.reporting.evaluation import (  # noqa: E402
    flip_horizontally,
    metrics_from_logits,
)
from keras_cifar_resnet.training.precision_support import accelerator_present  # noqa: E402
from keras_cifar_resnet.training.run_folder import RunFolder  # noqa: E402

EVALUATION_BATCH = 500
# The training command's flags that mean the same here (their help included).
TRAIN_FLAGS = (
    "model",
    "width_multiplier",
    "epochs",
    "batch_size",
    "learning_rate",
    "warmup_epochs",
    "max_train_examples",
    "validation_size",
    "data_dir",
    "synthetic",
    "seed",
    "output_dir",
)


def learning_rate_factor(step, total_steps, warmup):
    """The fraction of the peak rate at `step` (0-based), as the command's schedule."""
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
            "log.csv and summary.json. The flags below mean what the "
            "training command's do, defaults from the default recipe; a "
            "--batch-size without --learning-rate scales the recipe's rate "
            "linearly, as the training command does."
        ),
    )
    add_flags(parser, TRAIN_FLAGS)
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
    return parser


def parse(argv=None):
    """(args, config): the command line, resolved by the training command's rules."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_flags(explicit_flags(args))
    except ValueError as error:
        parser.error(str(error))
    if config.output_dir is None:
        parser.error("--output-dir is required")
    if (Path(config.output_dir) / "summary.json").exists():
        parser.error(f"--output-dir {config.output_dir} already holds a run")
    return args, config


def initial_model(args, config):
    """The untrained network: torch's weights, Keras's draws, or the command's own."""
    model = TorchResNet(
        config.model,
        batch_norm_momentum=config.batch_norm_momentum,
        width_multiplier=config.width_multiplier,
    )
    if args.keras_initializer:
        import random

        from keras_cifar_resnet.training.build import build_model

        # As the training loop does: the model draws its seed from `random`.
        random.seed(config.seed)
        initializer = args.keras_initializer
        load_keras_weights(
            model, build_model(dataclasses.replace(config, initializer=initializer))
        )
    elif args.init == "keras":
        keras_initialization(model)
    return model


def predict(model, images, device):
    model.eval()
    with torch.no_grad():
        outputs = [
            model(torch.from_numpy(images[start : start + EVALUATION_BATCH]).to(device))
            .float()
            .cpu()
            .numpy()
            for start in range(0, len(images), EVALUATION_BATCH)
        ]
    model.train()
    return np.concatenate(outputs)


def test_report(model, images, labels, device):
    """The test figures of `model`, with flip TTA, as the command reports them."""
    flipped = predict(model, flip_horizontally(images), device)
    return metrics_from_logits(predict(model, images, device), flipped, labels)


def main(argv=None):
    args, config = parse(argv)
    device = torch.device("cuda" if accelerator_present("torch") else "cpu")
    torch.manual_seed(config.seed)
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    try:
        data = prepare_data(config)
    except UsageError as error:
        build_parser().error(str(error))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    x_val, y_val = data.val_images, data.val_labels
    batches = TrainingBatches(
        data.train_images, data.train_labels, config.batch_size, seed=config.seed
    )
    steps_per_epoch = batches.steps_per_epoch
    total_steps = config.epochs * steps_per_epoch
    warmup = warmup_steps(config, steps_per_epoch)
    model = initial_model(args, config).to(device)
    model.train()
    optimizer = make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(step, total_steps, warmup)
    )
    settings = {name: getattr(config, name) for name in TRAIN_FLAGS} | {
        "init": args.init,
        "keras_initializer": args.keras_initializer,
        "recipe": "default",
    }
    folder = RunFolder(config.output_dir)
    folder.start(
        {
            "config": settings,
            "backend": "native-torch",
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "device": str(device),
            "threads": torch.get_num_threads(),
        }
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"native PyTorch: {config.model} at width {config.width_multiplier:g} "
        f"({parameters:,} parameters), {len(batches.images):,} training images, "
        f"{len(x_val):,} validation, {len(data.test_images):,} test; "
        f"{config.epochs} epochs of {steps_per_epoch} steps; peak learning rate "
        f"{config.learning_rate:g}; writing to {folder.path}",
        flush=True,
    )

    best_epoch, best_accuracy, train_seconds = None, None, 0.0
    for epoch in range(config.epochs):
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            images, labels = batches[epoch * steps_per_epoch + step]
            images = torch.from_numpy(images).to(device)
            labels = torch.from_numpy(labels).to(device)
            logits = model(augment(images, config, generator))
            loss = F.cross_entropy(
                logits, labels, label_smoothing=config.label_smoothing
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
            "epoch": epoch + 1,  # from 1, as the training command's log
            "loss": float(loss_sum) / steps_per_epoch,
            "accuracy": float(correct) / (steps_per_epoch * config.batch_size),
            # The rate the next step will use, as the command logs it.
            "learning_rate": schedule.get_last_lr()[0],
            "seconds": seconds,
        }
        best = {}
        if len(x_val):
            val_logits = torch.from_numpy(predict(model, x_val, device))
            # The training loss, label smoothing included, as the command's.
            row["val_loss"] = float(
                F.cross_entropy(
                    val_logits,
                    torch.from_numpy(y_val),
                    label_smoothing=config.label_smoothing,
                )
            )
            row["val_accuracy"] = float((val_logits.argmax(1).numpy() == y_val).mean())
            if best_accuracy is None or row["val_accuracy"] > best_accuracy:
                best_epoch, best_accuracy = epoch + 1, row["val_accuracy"]
                torch.save(model.state_dict(), folder.path / "best.pt")
                best = {"best_model": "best.pt"}
        folder.append_log_row(row)
        print("\r" + messages.epoch_line(epoch, config.epochs, row | best), flush=True)
    # The headline is the last epoch's model; the best-validation one is
    # recorded apart, chosen on the validation split only (as the command).
    torch.save(model.state_dict(), folder.path / "final.pt")
    report = test_report(model, data.test_images, data.test_labels, device)
    best = None
    if best_epoch:
        model.load_state_dict(torch.load(folder.path / "best.pt", weights_only=True))
        best = {
            "model_file": "best.pt",
            "chosen_on": "validation split",
            "epoch": best_epoch,
            "validation_accuracy": best_accuracy,
            "test": test_report(model, data.test_images, data.test_labels, device),
        }
    folder.write_summary(
        {
            "model_file": "final.pt",
            "test_model": "the last epoch's model",
            "epochs": config.epochs,
            "validation_accuracy": best_accuracy,
            "train_images": len(batches.images),
            "synthetic": config.synthetic,
            "train_seconds": round(train_seconds, 1),
            "backend": "native-torch",
            "test": report,
            "best_validation": best,
        }
    )
    print(
        f"test accuracy {report['accuracy']:.2%} (flip TTA "
        f"{report['tta_accuracy']:.2%}), the last epoch's model; results in "
        f"{folder.path}",
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
