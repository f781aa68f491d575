"""Accuracy per backend: the default recipe through the real training command
(or, with `--native`, `native_train.py`), recorded as `accuracy-<backend>.json`.

The profiles and the seeds: benchmarks/README.md and docs/benchmarks.md.

    python -m benchmarks.accuracy --profile quick --output-dir benchmark-results
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from keras_cifar_resnet.config.train_config import RECIPES
from keras_cifar_resnet.training.first_run import QUICK_RUN_FLAGS
from keras_cifar_resnet.training.precision_support import NATIVE_FLAGS, cpu_flags
from keras_cifar_resnet.training.run_folder import (
    RunFolder,
    package_versions,
    read_run_json,
    write_json,
)

THRESHOLDS = (0.94, 0.95)
# Native PyTorch runs of a seed start from the weights the command draws.
DEFAULT_INITIALIZER = RECIPES["default"].initializer
# Each profile's flags for the trainer, and the description its records hold.
PROFILES = {
    "full": ("", "default recipe, full length"),
    # The training command scales the recipe's 0.2 at batch 512 to 0.05.
    "quick": (
        "--max-train-examples 2048 --validation-size 1000 --epochs 2 --batch-size 128",
        "CPU smoke profile (2,048 images, 2 epochs): not the GPU figure",
    ),
    # The README's first run, as the training command suggests it.
    "cpu": (
        QUICK_RUN_FLAGS,
        "CPU profile: ResNet18 at width 0.125, 6 epochs, batch 256",
    ),
    "gpu": ("", "default recipe, shortened to {epochs} epochs"),
    # CI only: the test model on 64 random images, to keep this file working.
    "tiny": (
        "--model tiny --synthetic --max-train-examples 64 --validation-size 32 "
        "--epochs 1 --batch-size 32",
        "CI check on random images: meaningless accuracy",
    ),
}


def seconds_to_reach(log_rows, threshold):
    """Summed epoch seconds up to the first at or above `threshold`, or None."""
    elapsed = 0.0
    for row in log_rows:
        elapsed += float(row["seconds"])
        value = row.get("val_accuracy")
        if value not in (None, "") and float(value) >= threshold:
            return elapsed
    return None


def accuracy_record(run_dir, **fields):
    """A finished run's figures, `fields` first: the last epoch's model on the
    test set; the best-validation model's apart, labelled as chosen on the
    validation split (`best_validation_*`)."""
    rows = RunFolder(run_dir).read_log()
    summary = read_run_json(Path(run_dir) / "summary.json")
    test = summary.get("test") or {}
    best = summary.get("best_validation") or {}
    best_test = best.get("test") or {}
    return {
        "kind": "accuracy",
        **fields,
        "epochs": len(rows),
        "train_examples": summary.get("train_images"),
        "test_model": "the last epoch's model",
        "test_accuracy": test.get("accuracy"),
        "test_accuracy_flip_tta": test.get("tta_accuracy"),
        "best_validation_accuracy": summary.get("validation_accuracy"),
        "best_validation_epoch": best.get("epoch"),
        "best_validation_test_accuracy": best_test.get("accuracy"),
        "best_validation_test_accuracy_flip_tta": best_test.get("tta_accuracy"),
        "train_seconds": summary.get("train_seconds"),
        "run_dir": str(run_dir),
        **{
            f"seconds_to_{round(t * 100)}": seconds_to_reach(rows, t)
            for t in THRESHOLDS
        },
    }


def installed_versions():
    """The installed packages' versions, as the training command records them."""
    return {name: v for name, v in package_versions().items() if v is not None}


def machine_description():
    """The CPU model, its cores, and its native bf16 flags (AVX-512, AMX, Arm)."""
    from benchmarks.harness import cpu_name

    flags = cpu_flags() or frozenset()
    return {
        "cpu": cpu_name(),
        "native_bf16": sorted(flags & NATIVE_FLAGS["mixed_bfloat16"]),
    }


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy",
        usage="python -m benchmarks.accuracy [options] [-- TRAIN_FLAGS...]",
        description="Train with the default recipe on the current backend "
        "(KERAS_BACKEND), or in plain PyTorch with --native, and record test "
        "accuracy and time to 94%/95%. TRAIN_FLAGS after `--` go to the "
        "trainer after the profile's own flags, so they override them (e.g. "
        "`-- --max-train-examples 512`).",
    )
    add = parser.add_argument
    add(
        "--profile",
        choices=sorted(PROFILES),
        default="quick",
        help="how far to train: full (the recipe unchanged), gpu (the recipe for "
        "--epochs), quick (a CPU smoke run, not the GPU figure), cpu (the "
        "README's first run), tiny (CI only). Default: quick.",
    )
    add(
        "--native",
        action="store_true",
        help="train with benchmarks/native_train.py (plain PyTorch, the same "
        "recipe, data and order) instead of the Keras training command; "
        "recorded as backend native-torch.",
    )
    add("--epochs", type=int, help="epochs for the gpu profile (default 30).")
    add("--model", default="resnet18", help="as train's. Default: resnet18.")
    add(
        "--mixed-precision",
        default="off",
        help="as train's (Keras only). Default: off.",
    )
    add(
        "--data-dir",
        help="CIFAR-10 folder (default: train's lookup, e.g. KERAS_CIFAR_RESNET_DATA).",
    )
    add(
        "--output-dir",
        default="benchmark-results",
        help="where the run and accuracy-<backend>.json go. "
        "Default: benchmark-results.",
    )
    add(
        "--seeds",
        type=int,
        metavar="N",
        help="train N runs, seeds 0..N-1 (seed k gives every implementation "
        "the same initial weights and batches), each recorded as "
        "accuracy-<backend>-seed<k>.json. Default: one run at the trainer's "
        "--seed, recorded as accuracy-<backend>.json.",
    )
    add(
        "--first-seed",
        type=int,
        default=0,
        metavar="K",
        help="with --seeds: start at seed K (to add seeds to a set). Default: 0.",
    )
    add("--device", help="device name to record (default: the backend's).")
    return parser


def _fail(message):
    print(f"accuracy.py: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # What follows the first `--` goes to the trainer.
    cut = argv.index("--") if "--" in argv else len(argv)
    args, train_flags = build_parser().parse_args(argv[:cut]), argv[cut + 1 :]
    backend = "native-torch" if args.native else os.environ.get("KERAS_BACKEND")
    if args.native and args.mixed_precision != "off":
        return _fail("--native trains in float32; drop --mixed-precision")
    if not args.native and backend not in ("jax", "tensorflow", "torch"):
        return _fail(
            "set KERAS_BACKEND to jax, tensorflow or torch (or give --native). "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    if args.epochs is not None and args.profile != "gpu":
        return _fail("--epochs is for the gpu profile only")
    if args.seeds is not None and args.seeds < 1:
        return _fail(f"--seeds must be 1 or more. Received: {args.seeds}")
    if args.seeds is not None and "--seed" in train_flags:
        return _fail("--seeds chooses the seeds; drop --seed after `--`")
    flags, note = PROFILES[args.profile]
    epochs = (args.epochs or 30) if args.profile == "gpu" else None
    flags = flags.split() + (["--epochs", str(epochs)] if epochs else [])
    note = note.format(epochs=epochs)
    first = args.first_seed
    seeds = [None] if args.seeds is None else range(first, first + args.seeds)
    for seed in seeds:
        status = train_one(args, backend, seed, flags + train_flags, note)
        if status:
            return status
    return 0


def train_one(args, backend, seed, flags, note):
    """Trains one run (one seed) and writes its accuracy JSON; exit status."""
    output_dir = Path(args.output_dir)
    suffix = "" if seed is None else f"-seed{seed}"
    run_dir = output_dir / f"accuracy-run-{backend}{suffix}"
    model = "tiny" if args.profile == "tiny" else args.model
    if args.native:
        trainer = ["-m", "benchmarks.native_train"]
        # The very initial weights the Keras runs of this seed start from.
        if seed is not None and "--keras-initializer" not in flags:
            trainer += ["--keras-initializer", DEFAULT_INITIALIZER]
    else:
        trainer = ["-m", "keras_cifar_resnet.train", "--recipe", "default"]
        trainer += ["--mixed-precision", args.mixed_precision]
    command = [sys.executable, *trainer, "--model", model]
    command += ["--output-dir", str(run_dir)]
    command += [] if seed is None else ["--seed", str(seed)]
    command += ["--data-dir", args.data_dir] if args.data_dir else []
    command += flags
    print("accuracy.py:", " ".join(command), flush=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    status = subprocess.run(command).returncode
    wall = time.perf_counter() - start
    if status != 0:
        print(
            f"accuracy.py: training failed (exit status {status}); no accuracy "
            "recorded",
            file=sys.stderr,
        )
        return 1
    device = args.device
    if device is None:
        # harness imports Keras; under --native the torch backend avoids
        # importing TensorFlow just to name the device.
        os.environ.setdefault("KERAS_BACKEND", "torch")
        from benchmarks.harness import device_name

        device = device_name("torch" if args.native else backend)
    record = accuracy_record(
        run_dir,
        backend=backend,
        model=model,
        profile=args.profile,
        seed=seed,
        note=note,
        device=device,
        wall_seconds=wall,
        # On a shared machine the seconds depend on what else ran.
        load_average_1min={
            "before": round(load_before[0], 2),
            "after": round(os.getloadavg()[0], 2),
        },
        command=" ".join(command[1:]),
        machine=machine_description(),
        versions=installed_versions(),
    )
    path = output_dir / f"accuracy-{backend}{suffix}.json"
    write_json(path, record)
    print(
        f"accuracy.py: test accuracy {record['test_accuracy']:.4f}, the last "
        f"epoch's model ({note}); wrote {path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
