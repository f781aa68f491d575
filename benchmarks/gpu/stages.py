"""The GPU run's stages, in order of importance, within a wall-clock budget.

`run.sh` calls this; benchmarks/README.md ("On a GPU") says what each stage
measures, how the time is shared and what the output folder holds. To add a
stage, add a `Stage` to `STAGES` where its importance puts it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from keras_cifar_resnet.errors import RunFileError
from keras_cifar_resnet.training.run_folder import (
    RunFolder,
    read_run_json,
    write_json,
)

REPO = Path(__file__).resolve().parents[2]
# Popen's own process group, so that a limit reaches grandchildren too.
NEW_GROUP = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One command: `argv(options, figures file)` under KERAS_BACKEND=`backend`.

    An `accuracy` stage is a training run: it takes its share of the time
    left and, at its limit, stops with a checkpoint instead of failing.
    """

    name: str
    backend: str
    job: str
    argv: object
    accuracy: bool = False


def throughput(precision, *extra):
    """The command of a step-throughput stage (benchmarks/test_step_throughput.py)."""
    select = "test_native_torch" if "--native" in extra else "test_keras"

    def argv(options, figures):
        return [
            sys.executable, "-m", "pytest", "benchmarks/test_step_throughput.py",
            "-p", "no:cacheprovider", "-q", "--no-inference",
            "--models", options.model, "--batch-sizes", str(options.batch_size),
            "--precisions", precision, "-k", select,
            "--rounds", str(options.rounds), "--steps-per-round", str(options.steps),
            "--warmup-rounds", "1", f"--benchmark-json={figures}",
            *extra,
        ]  # fmt: skip

    return argv


def accuracy(options, figures):
    """The command of an accuracy stage (benchmarks.accuracy, the recipe)."""
    return [
        sys.executable, "-m", "benchmarks.accuracy", "--profile", "full",
        "--model", options.model, "--mixed-precision", "mixed_bfloat16",
        "--output-dir", str(figures.parent), "--",
        "--epochs", str(options.epochs), *options.train_flags,
    ]  # fmt: skip


KERAS_TORCH = "Keras torch, mixed_bfloat16"
STAGES = [
    Stage("keras-jax", "jax", "Keras JAX, mixed_bfloat16", throughput("mixed")),
    Stage("keras-torch", "torch", KERAS_TORCH, throughput("mixed")),
    Stage(
        "keras-torch-keras-bn",
        "torch",
        f"{KERAS_TORCH}, Keras's own BatchNorm",
        throughput("mixed", "--batch-norm", "keras"),
    ),
    Stage(
        "keras-torch-keras-conv",
        "torch",
        f"{KERAS_TORCH}, Keras's own Conv2D",
        throughput("mixed", "--conv", "keras"),
    ),
    Stage(
        "native-torch",
        "torch",
        "native PyTorch, eager and channels_last, bf16",
        throughput("mixed", "--native", "eager-bf16,channels_last-bf16"),
    ),
    Stage("keras-jax-float32", "jax", "Keras JAX, float32", throughput("float32")),
    Stage("accuracy-jax", "jax", "default recipe, Keras JAX", accuracy, True),
    Stage("accuracy-torch", "torch", "default recipe, Keras torch", accuracy, True),
    Stage(
        "native-torch-compiled",
        "torch",
        "native PyTorch, torch.compile, channels_last bf16",
        throughput("mixed", "--native", "compiled-channels_last-bf16"),
    ),
    Stage(
        "keras-torch-compiled",
        "torch",
        f"{KERAS_TORCH}, jit_compile (torch.compile)",
        throughput("mixed", "--jit-compile", "on"),
    ),
]

# What a rehearsal on a CPU changes: the test model, a small batch, a few
# rounds, one epoch on a slice of random images.
REHEARSAL = {
    "model": "tiny",
    "batch_size": 32,
    "rounds": 2,
    "steps": 2,
    "epochs": 1,
    "train_flags": (
        "--synthetic", "--max-train-examples", "128", "--validation-size", "64",
        "--batch-size", "32",
    ),
}  # fmt: skip


def say(message):
    print(f"run.sh: {message}", flush=True)


class Run:
    """The stages within the budget; the output folder after each."""

    def __init__(self, options, stages):
        self.options = options
        self.stages = stages
        self.work = Path(options.work)
        self.figures = self.work / "figures"
        self.figures.mkdir(parents=True, exist_ok=True)
        self.out = Path(options.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.outcomes = []

    def left(self):
        return self.options.budget - (time.time() - self.options.started_at)

    def limit(self, stage, index):
        """A throughput stage's: --stage-limit; a training run's: a share."""
        left = self.left() - self.options.reserve
        if not stage.accuracy:
            return min(self.options.stage_limit or left, left)
        later = self.stages[index:]
        runs_left = sum(s.accuracy for s in later)
        # The throughput stages after the training runs keep their usual
        # time, but never more than half of what is left.
        usual = sum(not s.accuracy for s in later) * (self.options.stage_limit or 0)
        return (left - min(usual, left / 2)) / runs_left

    def run(self):
        say(
            f"{len(self.stages)} stages within {self.options.budget:.0f} s, "
            f"{self.left():.0f} s left; results in {self.out}"
        )
        for index, stage in enumerate(self.stages):
            self.outcomes.append(self.run_stage(stage, self.limit(stage, index)))
            self.write_results()
        self.write_results(chart=True)
        failed = [o["stage"] for o in self.outcomes if o["status"] == "failed"]
        print((self.out / "table.md").read_text(), flush=True)
        if failed:
            say(f"FAILED stages: {', '.join(failed)}")
            return 1
        say("every stage that ran succeeded")
        return 0

    def run_stage(self, stage, limit):
        outcome = {"stage": stage.name, "job": stage.job, "backend": stage.backend}
        if limit < self.options.min_stage:
            say(f"STAGE {stage.name} SKIPPED ({max(limit, 0):.0f} s left)")
            return outcome | {"status": "skipped"}
        figures = self.work / "runs" / stage.name / f"{stage.name}.json"
        figures.parent.mkdir(parents=True, exist_ok=True)
        argv = [str(a) for a in stage.argv(self.options, figures)]
        if os.environ.get("BREAK_STAGE") == stage.name:
            argv.append("--no-such-option")  # how the test checks a failure
        say(f"STAGE {stage.name} ({stage.job}): limit {limit:.0f} s")
        say("  $ " + " ".join(argv))
        status, seconds, timed_out = self.run_process(argv, stage.backend, limit)
        outcome |= {"seconds": round(seconds, 1), "limit_s": round(limit, 1)}
        if stage.accuracy:
            figures = self.accuracy_figures(stage, figures.parent, seconds)
        unread = None
        if figures is not None and figures.exists():
            # Only readable figures reach the table (a stage stopped while
            # writing them leaves an empty or partial file).
            try:
                outcome["figures"] = read_run_json(figures)
                shutil.copy(figures, self.figures / f"{stage.name}.json")
            except RunFileError as error:
                unread = str(error)
        if timed_out and (stage.accuracy or limit != self.options.stage_limit):
            at_limit = f"at its limit ({limit:.0f} s) with a checkpoint"
            detail = at_limit if stage.accuracy else "the budget ran out"
            outcome |= {"status": "stopped", "detail": detail}
        elif timed_out:
            outcome |= {"status": "failed", "detail": "timed out"}
        elif status != 0:
            outcome |= {"status": "failed", "detail": f"exit {status}"}
        elif "figures" not in outcome:
            outcome |= {"status": "failed", "detail": unread or "no figures written"}
        else:
            outcome["status"] = "ok"
        say(
            f"STAGE {stage.name} {outcome['status'].upper()} after {seconds:.0f} s"
            + (f": {outcome['detail']}" if "detail" in outcome else "")
        )
        return outcome

    def run_process(self, argv, backend, limit):
        """(exit status, seconds, timed out); SIGTERM at the limit, then SIGKILL."""
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1")
        # JAX takes most of a GPU's memory at its first use; only its stages may.
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true" if backend == "jax" else "false"
        start = time.monotonic()
        child = subprocess.Popen(argv, cwd=REPO, env=env, **NEW_GROUP)
        timed_out = False
        try:
            status = child.wait(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            status = self.end(child)
        except BaseException:  # the run itself was stopped: so is the stage
            self.end(child)
            raise
        return status, time.monotonic() - start, timed_out

    def end(self, child):
        """SIGTERM to the stage's group (training saves a checkpoint), then SIGKILL."""
        os.killpg(child.pid, signal.SIGTERM)
        try:
            return child.wait(timeout=self.options.grace)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            return child.wait()

    def accuracy_figures(self, stage, folder, seconds):
        """accuracy.py's record; for a run stopped early, its log so far."""
        finished = sorted(folder.glob("accuracy-*.json"))
        if finished:
            return finished[0]
        log = next(folder.glob("accuracy-run-*/log.csv"), None)
        rows = RunFolder(log.parent).read_log() if log else []
        if not rows:
            return None
        from keras_cifar_resnet.messages import resume_command

        path = folder / f"stopped-{stage.name}.json"
        write_json(
            path,
            {
                "kind": "accuracy",
                "backend": f"{stage.backend} (stopped)",
                "model": self.options.model,
                "epochs": len(rows),
                "best_validation_accuracy": max(
                    float(r["val_accuracy"] or 0) for r in rows
                ),
                "train_seconds": sum(float(r["seconds"]) for r in rows),
                "wall_seconds": seconds,
                "note": "stopped at its limit; continue with: "
                + resume_command(log.parent),
            },
        )
        return path

    def write_results(self, *, chart=False):
        """table.md, results.json and the log in the output folder, now."""
        try:
            from benchmarks import report

            rows, accuracy_rows = report.load([self.figures])
            stages = []
            for o in self.outcomes:
                status = o["status"] + (f" ({o['detail']})" if "detail" in o else "")
                stages.append([o["stage"], o["job"], status, o.get("seconds", "-")])
            lines = [f"# {self.options.title}", ""]
            lines += report.format_rows(rows, accuracy_rows)
            lines += report.table(
                "**Stages**", "stage|job|status|seconds", "llll", stages
            )
            lines += ["Environment:", "", *report.environment_lines(rows)]
            (self.work / "table.md").write_text("\n".join(lines) + "\n")
            results = {"options": vars(self.options), "stages": self.outcomes}
            text = json.dumps(results, indent=1, default=str)
            (self.work / "results.json").write_text(text)
            if chart and rows:
                report.chart(rows, self.work / "chart.png")
        except Exception as error:  # noqa: BLE001 - never lose a stage's figures
            say(f"could not write the table ({type(error).__name__}: {error})")
        self.copy_out()

    def copy_out(self):
        """The most important files, at most --max-files of them."""
        wanted = ["table.md", "results.json", "run.log", "chart.png"]
        wanted += [
            f"runs/{s.name}/accuracy-run-{s.backend}/curves.png"
            for s in self.stages
            if s.accuracy
        ]
        present = [self.work / name for name in wanted if (self.work / name).is_file()]
        for path in present[: self.options.max_files]:
            name = path.name
            if name == "curves.png":
                name = f"curves-{path.parent.parent.name}.png"
            shutil.copyfile(path, self.out / name)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.stages",
        description="Run the GPU stages within a budget (run.sh calls this).",
    )
    add = parser.add_argument
    add("--budget", type=float, required=True, metavar="SECONDS")
    add("--out", required=True, metavar="DIR")
    add("--work", required=True, metavar="DIR")
    add("--max-files", type=int, default=8, metavar="N")
    add("--started-at", type=float, default=None)
    add("--rehearse", action="store_true")
    add("--stages", default=None, help="comma-separated names")
    add("--data-dir", default=None, metavar="DIR")
    add("--epochs", type=int, default=100)
    add(
        "--stage-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="at most this long per throughput stage (default 180; in a "
        "rehearsal, what the budget leaves)",
    )
    add("--min-stage", type=float, default=30, metavar="SECONDS")
    add("--reserve", type=float, default=20, metavar="SECONDS")
    add("--grace", type=float, default=30, metavar="SECONDS")
    return parser


def configure(options):
    """Completes the parsed options: the GPU run's sizes, or the rehearsal's."""
    options.started_at = options.started_at or time.time()
    vars(options).update(model="resnet18", batch_size=512, rounds=10, steps=10)
    options.train_flags = ("--data-dir", options.data_dir) if options.data_dir else ()
    options.title = "GPU run"
    if options.rehearse:
        vars(options).update(REHEARSAL)
        options.title = "GPU run, rehearsed on a CPU"
    elif options.stage_limit is None:
        options.stage_limit = 180
    return options


def main(argv=None):
    parser = build_parser()
    options = configure(parser.parse_args(argv))
    stages = STAGES
    if options.stages:
        names = options.stages.split(",")
        unknown = sorted(set(names) - {s.name for s in STAGES})
        if unknown:
            parser.error(f"unknown stages: {', '.join(unknown)}")
        stages = [s for s in STAGES if s.name in names]
    run = Run(options, stages)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stop)
    try:
        return run.run()
    except Stopped as stop:
        signum = stop.args[0]
        say(f"stopped by {signal.Signals(signum).name}")
        run.write_results()
        return 128 + signum


class Stopped(BaseException):
    """SIGINT or SIGTERM (its number, the one argument) reached the run."""


def _stop(signum, frame):
    raise Stopped(signum)


if __name__ == "__main__":
    sys.exit(main())
