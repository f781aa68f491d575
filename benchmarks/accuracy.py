"""Accuracy per backend: the default recipe through the real training command.

Runs `python -m keras_cifar_resnet.train` under the current KERAS_BACKEND (or,
with `--native`, the same recipe in plain PyTorch: `native_train.py`) and
writes `accuracy-<backend>.json` for `benchmarks/report.py`: test accuracy,
and the training seconds until validation accuracy first reached 94% and 95%.
Profiles (`PROFILE_NOTES`): full (the recipe unchanged), quick (a CPU smoke
run, NOT the GPU figure), cpu (the README's first run: width 0.125, 6
epochs), gpu (the recipe shortened to --epochs), tiny (CI only).

    python -m benchmarks.accuracy --profile quick --output-dir benchmark-results
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from keras_cifar_resnet.config.train_config import RECIPES
from keras_cifar_resnet.training.first_run import QUICK_RUN_FLAGS
from keras_cifar_resnet.training.precision_support import NATIVE_FLAGS, cpu_flags
from keras_cifar_resnet.training.run_folder import package_versions

THRESHOLDS = (0.94, 0.95)
# Native PyTorch runs of a seed start from the weights the command draws.
DEFAULT_INITIALIZER = RECIPES["default"].initializer
ACCURACY_PROFILES = {
    "full": [],
    # The training command scales the recipe's 0.2 at batch 512 to 0.05.
    "quick": "--max-train-examples 2048 --validation-size 1000 --epochs 2 "
    "--batch-size 128".split(),
    # The README's first run, as the training command suggests it.
    "cpu": QUICK_RUN_FLAGS.split(),
    "gpu": [],
    # CI only: the test model on 64 random images, to keep this file working.
    "tiny": "--model tiny --synthetic --max-train-examples 64 --validation-size 32 "
    "--epochs 1 --batch-size 32".split(),
}
PROFILE_NOTES = {
    "full": "default recipe, full length",
    "quick": "CPU smoke profile (2,048 images, 2 epochs): not the GPU figure",
    "cpu": "CPU profile: ResNet18 at width 0.125, 6 epochs, batch 256",
    "gpu": "default recipe, shortened to {epochs} epochs",
    "tiny": "CI check on random images: meaningless accuracy",
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


def read_run(run_dir):
    """(log rows, summary dict) of a finished training run."""
    run_dir = Path(run_dir)
    with open(run_dir / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    summary = json.loads((run_dir / "summary.json").read_text())
    return rows, summary


def accuracy_record(
    run_dir, *, backend, model, profile, device, wall_seconds, note, seed=None
):
    """A finished run's figures: the last epoch's model on the test set.

    The best-validation model's test figures are kept apart, labelled as
    chosen on the validation split (`best_validation_*`); runs written before
    summary.json named its test model record theirs under the same labels.
    """
    rows, summary = read_run(run_dir)
    test = summary.get("test") or {}
    best = summary.get("best_validation") or {}
    if "test_model" not in summary:  # an older run: its test figure is best.keras's
        best = {"epoch": summary.get("selected_epoch"), "test": test}
        test = {}
    record = {
        "kind": "accuracy",
        "backend": backend,
        "model": model,
        "profile": profile,
        "seed": seed,
        "note": note,
        "device": device,
        "epochs": len(rows),
        "train_examples": summary.get("train_images"),
        "test_model": "the last epoch's model",
        "test_accuracy": test.get("accuracy"),
        "test_accuracy_flip_tta": test.get("tta_accuracy"),
        "best_validation_accuracy": summary.get("validation_accuracy"),
        "best_validation_epoch": best.get("epoch"),
        "best_validation_test_accuracy": (best.get("test") or {}).get("accuracy"),
        "best_validation_test_accuracy_flip_tta": (best.get("test") or {}).get(
            "tta_accuracy"
        ),
        "train_seconds": summary.get("train_seconds"),
        "wall_seconds": wall_seconds,
        "run_dir": str(run_dir),
    }
    for threshold in THRESHOLDS:
        record[f"seconds_to_{round(threshold * 100)}"] = seconds_to_reach(
            rows, threshold
        )
    return record


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
        choices=sorted(ACCURACY_PROFILES),
        default="quick",
        help="how far to train (see the module docstring). Default: quick.",
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


def _split_train_flags(argv):
    """(own arguments, TRAIN_FLAGS): what follows the first `--` goes to the trainer."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--" not in argv:
        return argv, []
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _fail(message):
    print(f"accuracy.py: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    argv, train_flags = _split_train_flags(argv)
    args = build_parser().parse_args(argv)
    if args.native:
        backend = "native-torch"
        if args.mixed_precision != "off":
            return _fail("--native trains in float32; drop --mixed-precision")
    else:
        backend = os.environ.get("KERAS_BACKEND")
        if backend not in ("jax", "tensorflow", "torch"):
            return _fail(
                "set KERAS_BACKEND to jax, tensorflow or torch (or give --native). "
                f"Received: KERAS_BACKEND={backend!r}"
            )
    flags = list(ACCURACY_PROFILES[args.profile])
    epochs = None
    if args.profile == "gpu":
        epochs = args.epochs or 30
        flags += ["--epochs", str(epochs)]
    elif args.epochs is not None:
        return _fail("--epochs is for the gpu profile only")
    if args.seeds is not None and args.seeds < 1:
        return _fail(f"--seeds must be 1 or more. Received: {args.seeds}")
    if args.seeds is not None and "--seed" in train_flags:
        return _fail("--seeds chooses the seeds; drop --seed after `--`")
    seeds = (
        [None]
        if args.seeds is None
        else range(args.first_seed, args.first_seed + args.seeds)
    )
    for seed in seeds:
        status = train_one(args, backend, seed, flags, epochs, train_flags)
        if status:
            return status
    return 0


def train_one(args, backend, seed, flags, epochs, train_flags):
    """Trains one run (one seed) and writes its accuracy JSON; exit status."""
    output_dir = Path(args.output_dir)
    suffix = "" if seed is None else f"-seed{seed}"
    run_dir = output_dir / f"accuracy-run-{backend}{suffix}"
    model = "tiny" if args.profile == "tiny" else args.model
    if args.native:
        trainer = ["-m", "benchmarks.native_train"]
        precision = []
        # The very initial weights the Keras runs of this seed start from.
        if seed is not None and "--keras-initializer" not in train_flags:
            precision = ["--keras-initializer", DEFAULT_INITIALIZER]
    else:
        trainer = ["-m", "keras_cifar_resnet.train", "--recipe", "default"]
        precision = ["--mixed-precision", args.mixed_precision]
    command = [
        sys.executable,
        *trainer,
        "--model",
        model,
        *precision,
        "--output-dir",
        str(run_dir),
        *flags,
    ]
    if seed is not None:
        command += ["--seed", str(seed)]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    command += train_flags
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
        device=device,
        wall_seconds=wall,
        note=PROFILE_NOTES[args.profile].format(epochs=epochs),
        seed=seed,
    )
    # On a shared machine the seconds depend on what else ran.
    record["load_average_1min"] = {
        "before": round(load_before[0], 2),
        "after": round(os.getloadavg()[0], 2),
    }
    record["command"] = " ".join(command[1:])
    record["machine"] = machine_description()
    record["versions"] = installed_versions()
    path = output_dir / f"accuracy-{backend}{suffix}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"accuracy.py: test accuracy {record['test_accuracy']:.4f}, the last "
        f"epoch's model ({record['note']}); wrote {path}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
