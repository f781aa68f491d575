"""Speed ratios that hold from run to run: implementations interleaved in rounds.

Every implementation (the Keras step on the current backend; native PyTorch
eager, channels_last and, with `--compiled`, compiled) runs `--steps` steps
per round, in a new random order each round, in one process, so a change of
machine speed hits both sides of a round's ratio alike. Why, and the
commands: docs/benchmarks.md, "Ratios that hold".

    KERAS_BACKEND=torch python -m benchmarks.interleaved --rounds 9
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import keras

from benchmarks.accuracy import installed_versions, machine_description
from benchmarks.harness import CPUUse, KerasTrainStep
from benchmarks.statistics import mean_interval

NATIVE = {  # variant: (channels_last, compiled)
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
    parser.add_argument("--model", default="resnet18", help="Default: resnet18.")
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--precision", choices=("float32", "mixed"), default="float32")
    parser.add_argument("--rounds", type=int, default=9, help="Default: 9.")
    parser.add_argument(
        "--steps", type=int, default=3, help="steps per implementation per round."
    )
    parser.add_argument(
        "--compiled",
        action="store_true",
        help="add torch.compile'd native PyTorch (channels_last).",
    )
    parser.add_argument(
        "--no-native", action="store_true", help="time the Keras step alone."
    )
    parser.add_argument("--output-dir", default="benchmark-results")
    return parser


def _runners(args):
    """{name: runner} with first_step() and run(steps)."""
    backend = keras.backend.backend()
    runners = {
        f"keras-{backend}": KerasTrainStep(
            args.model,
            args.batch_size,
            args.precision,
            width_multiplier=args.width_multiplier,
        )
    }
    if args.no_native or importlib.util.find_spec("torch") is None:
        return runners
    from benchmarks.torch_reference import NativeTorchStep

    for variant, (channels_last, compiled) in NATIVE.items():
        if compiled and not args.compiled:
            continue
        runners[f"native-torch-{variant}"] = NativeTorchStep(
            args.model,
            args.batch_size,
            args.precision,
            channels_last=channels_last,
            compile=compiled,
            width_multiplier=args.width_multiplier,
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


def ratios(seconds):
    """Each Keras implementation's speed over each native one's, per round."""
    found = {}
    for keras_name, keras_seconds in seconds.items():
        if not keras_name.startswith("keras-"):
            continue
        for native, native_seconds in seconds.items():
            if native.startswith("native-"):
                per_round = [
                    n / k for n, k in zip(native_seconds, keras_seconds, strict=True)
                ]
                interval = mean_interval(per_round)
                found[f"{keras_name} / {native}"] = {
                    "per_round": per_round,
                    "median": sorted(per_round)[len(per_round) // 2],
                    "mean": interval.mean,
                    "half_width": interval.half_width,
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
        "ms_per_step_median": {
            name: 1000 * sorted(s)[len(s) // 2] for name, s in seconds.items()
        },
        "seconds_per_step": seconds,
        "other_busy_cores": others,
        "ratios": ratios(seconds),
        "machine": machine_description(),
        "versions": installed_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": " ".join(["python -m benchmarks.interleaved", *sys.argv[1:]]),
    }
    output = Path(args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    name = (
        f"interleaved-{record['backend']}-{args.model}-w{args.width_multiplier:g}-"
        f"b{args.batch_size}-{args.precision}.json"
    )
    (output / name).write_text(json.dumps(record, indent=2) + "\n")
    for pair, ratio in record["ratios"].items():
        mean, half = ratio["mean"], ratio["half_width"]
        print(f"{pair}: median {ratio['median']:.3f}, mean {mean:.3f} ± {half:.3f}")
    print(f"interleaved.py: wrote {output / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
