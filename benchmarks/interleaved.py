"""Speed ratios that hold from run to run: implementations interleaved in rounds.

Each implementation runs `--steps` steps per round, in a new random order
each round, in one process. Why, and the commands: docs/benchmarks.md,
"Ratios that hold".

    KERAS_BACKEND=torch python -m benchmarks.interleaved --rounds 9
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import random
import sys
import time
from pathlib import Path

import keras

from benchmarks import report
from benchmarks.accuracy import installed_versions, machine_description
from benchmarks.harness import CPUUse, KerasTrainStep
from benchmarks.statistics import mean_interval
from keras_cifar_resnet.training.run_folder import write_json

# The native variants timed, at the run's precision: (channels_last, compiled).
NATIVE = {
    "eager": (False, False),
    "channels_last": (True, False),
    "compiled-channels_last": (True, True),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.interleaved",
        description="Time the Keras step on the current backend and native "
        "PyTorch in interleaved rounds in one process; write each ratio's "
        "median and 95% interval as interleaved-*.json for benchmarks.report.",
    )
    add = parser.add_argument
    add("--model", default="resnet18", help="Default: resnet18.")
    add("--width-multiplier", type=float, default=1.0)
    add("--batch-size", type=int, default=128)
    add("--precision", choices=("float32", "mixed"), default="float32")
    add("--rounds", type=int, default=9, help="Default: 9.")
    add("--steps", type=int, default=3, help="steps per implementation per round.")
    add(
        "--compiled",
        action="store_true",
        help="add torch.compile'd native PyTorch (channels_last).",
    )
    add("--no-native", action="store_true", help="time the Keras step alone.")
    add("--output-dir", default="benchmark-results")
    return parser


def _runners(args):
    """{name: runner} with first_step() and run(steps)."""
    size = (args.model, args.batch_size, args.precision)
    width = args.width_multiplier
    runners = {
        f"keras-{keras.backend.backend()}": KerasTrainStep(
            *size, width_multiplier=width
        )
    }
    if args.no_native or importlib.util.find_spec("torch") is None:
        return runners
    from benchmarks.torch_reference import NativeTorchStep

    for variant, (channels_last, compiled) in NATIVE.items():
        if args.compiled or not compiled:
            runners[f"native-torch-{variant}"] = NativeTorchStep(
                *size, channels_last, compiled, width_multiplier=width
            )
    return runners


def interleave(runners, rounds, steps, seed=0):
    """{name: [seconds per step, one per round]}, [other cores busy per round]."""
    # One untimed round first (caches, allocator, the first compilation).
    for runner in runners.values():
        runner.first_step()
        runner.run(steps)
    order = random.Random(seed)
    seconds = {name: [] for name in runners}
    others = []
    for _ in range(rounds):
        names = list(runners)
        order.shuffle(names)
        with CPUUse() as use:
            for name in names:
                start = time.perf_counter()
                runners[name].run(steps)
                seconds[name].append((time.perf_counter() - start) / steps)
        others.append(use.other_busy_cores)
    return seconds, others


def _median(values):
    return sorted(values)[len(values) // 2]


def ratios(seconds, others=None):
    """Each Keras implementation's speed over each native one's, per round.

    The median and mean are over the rounds in which other processes kept at
    most `report.OTHER_LOAD_BOUND` cores busy (`others`, one per round; all
    rounds without it): a busy round slows the two sides unequally.
    """
    found = {}
    for keras_name, keras_seconds in seconds.items():
        for native, native_seconds in seconds.items():
            if keras_name.startswith("keras-") and native.startswith("native-"):
                per_round = [
                    n / k for n, k in zip(native_seconds, keras_seconds, strict=True)
                ]
                busy = others or [None] * len(per_round)  # None: not measured
                used = [
                    r
                    for r, b in zip(per_round, busy, strict=True)
                    if b is None or b <= report.OTHER_LOAD_BOUND
                ]
                interval = mean_interval(used) if used else None
                found[f"{keras_name} / {native}"] = {
                    "per_round": per_round,
                    "rounds_used": len(used),
                    "median": _median(used) if used else None,
                    "mean": interval and interval.mean,
                    "half_width": interval and interval.half_width,
                }
    return found


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.rounds < 3 or args.steps < 1 or args.batch_size < 1:
        print(
            "interleaved.py: --rounds must be 3 or more, --steps and --batch-size "
            f"1 or more. Received: --rounds {args.rounds} --steps {args.steps} "
            f"--batch-size {args.batch_size}",
            file=sys.stderr,
        )
        return 2
    runners = _runners(args)
    print(f"interleaved.py: {', '.join(runners)}; {args.rounds} rounds", flush=True)
    seconds, others = interleave(runners, args.rounds, args.steps)
    record = {
        "kind": "interleaved",
        "backend": keras.backend.backend(),
        "model": args.model,
        "width_multiplier": args.width_multiplier,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "ms_per_step_median": {name: 1000 * _median(s) for name, s in seconds.items()},
        "seconds_per_step": seconds,
        "other_busy_cores": others,
        "ratios": ratios(seconds, others),
        "machine": machine_description(),
        "versions": installed_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": " ".join(["python -m benchmarks.interleaved", *sys.argv[1:]]),
    }
    path = Path(args.output_dir) / (
        f"interleaved-{record['backend']}-{args.model}-w{args.width_multiplier:g}-"
        f"b{args.batch_size}-{args.precision}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    for pair, ratio in record["ratios"].items():
        print(f"{pair}: {report.ratio_summary(ratio, args.rounds)}")
    print(f"interleaved.py: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
