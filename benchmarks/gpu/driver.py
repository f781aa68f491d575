"""Runs the GPU plan (plan.py): each stage in its own process group, with its
own time limit and its own output file, most important first.

A stage that breaks prints `STAGE <name> FAILED (...)`, the run goes on with
the next, and the exit status is 1 at the end; the table, gpu-run.json and
the log are written, and copied to --out, after every stage, so a later
failure (or the device tool's own time limit) never loses an earlier figure.
run.sh calls it after staging the data and installing Keras:

    python3 benchmarks/gpu/driver.py --profile gpu \\
        --data-dir .gpu-data/cifar-10-batches-bin \\
        --results benchmark-results-gpu --started-at "$(date +%s)" --out "$OUT"

Environment: BREAK_STAGE=<stage> adds an unknown option to that stage's
command, so its own tool fails (how the rehearsal's test checks that a
broken stage fails the run loudly).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = HERE.parent
REPO = BENCHMARKS.parent
sys.path.insert(0, str(HERE))

import plan  # noqa: E402
import results  # noqa: E402

BROKEN_OPTION = "--deliberately-broken-by-BREAK_STAGE"
# Popen's own process group (Python 3.11+), else the same through setpgrp.
NEW_PROCESS_GROUP = (
    {"process_group": 0} if sys.version_info >= (3, 11) else {"preexec_fn": os.setpgrp}
)
CIFAR10_FILES = 6
# Even past the deadline the report gets this long: the device call's own
# limit is 60 s beyond the deadline (plan.py).
REPORT_FLOOR_S = 20


class Interrupted(BaseException):
    """SIGTERM or SIGINT reached the driver (a user, or the tool's limit).

    A BaseException, so that `save`'s guard does not swallow it.
    """


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@dataclasses.dataclass
class Outcome:
    """What became of one stage."""

    name: str
    job: str
    status: str  # ok, failed, stopped, skipped
    detail: str = ""
    exit_status: int | None = None
    seconds: float | None = None
    limit_s: float | None = None
    command: list | None = None
    output: str | None = None
    failed: bool = False


class Run:
    """One run of the plan: stages, decisions, and the files they leave."""

    def __init__(self, profile, *, results_dir, data_dir, started_at, out, selected):
        self.profile = profile
        self.results = Path(results_dir)
        self.stages_dir = self.results / results.STAGES_DIR
        self.runs_dir = self.results / results.RUNS_DIR
        for folder in (self.stages_dir, self.runs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.data_dir = Path(data_dir)
        self.started_at = started_at
        self.out = Path(out) if out else None
        self.selected = selected
        self.outcomes = []
        self.decisions = {}
        self.accuracy = {}
        self.probes = {}
        self.broken = os.environ.get("BREAK_STAGE", "")
        self.card, self.card_name = card()
        if profile.name == "rehearsal":
            # Never mistaken for, or overwriting, a real card's table.
            self.card = f"rehearsal-{self.card}"
            self.card_name = f"Rehearsal on {self.card_name}"
        self.day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
        self.child = None

    # ------------------------------------------------------------- time

    def elapsed(self):
        return time.time() - self.started_at

    def left(self):
        return self.profile.deadline_s - self.elapsed()

    def limit_for(self, stage):
        """The stage's limit: its own cap, within the deadline less the
        report's reserve and the grace a stage cut short gets to end."""
        if stage.name == "report":
            return min(stage.max_s, max(self.left(), REPORT_FLOOR_S))
        left = self.left() - self.profile.report_reserve_s - self.profile.grace_s
        return left if stage.max_s is None else min(stage.max_s, left)

    # ----------------------------------------------------------- stages

    def run_stage(
        self,
        name,
        argv,
        *,
        backend,
        output=None,
        limit=None,
        stop_at_limit=False,
        skip=None,
    ):
        """Runs one stage unless it is not selected, not possible or out of time.

        Args:
            name: str, a stage of the profile.
            argv: list, the command.
            backend: str, `jax` or `torch` (KERAS_BACKEND; JAX preallocation).
            output: Path or None, the file the stage must leave.
            limit: float or None, seconds; None: `limit_for(stage)`.
            stop_at_limit: bool, reaching the limit is the plan, not a failure.
            skip: str or None, a reason not to run it (counted as a failure
                for a required stage).
        """
        stage = self.profile.stage(name)
        argv = [str(a) for a in argv]
        outcome = Outcome(stage.name, stage.job, "skipped")
        if stage.name not in self.selected:
            outcome.detail = "not selected (--stages)"
            return self._finish(outcome)
        limit = self.limit_for(stage) if limit is None else limit
        if skip is None and limit < stage.min_s:
            skip = f"needs at least {stage.min_s:.0f} s, {max(0, limit):.0f} s left"
        if skip is not None:
            outcome.detail = skip
            outcome.failed = stage.required
            return self._finish(outcome)
        collect_only = stage.name in self.profile.collect_only
        if collect_only:
            argv = [*argv, "--collect-only"]
            output = None
        if self.broken == stage.name:
            argv = break_command(argv)
        outcome.command, outcome.limit_s = argv, limit
        say(
            f"STAGE {stage.name} ({stage.job}): limit {limit:.0f} s, "
            f"{self.elapsed():.0f} s so far"
        )
        say("  $ " + shlex.join(str(a) for a in argv))
        exit_status, timed_out, seconds = self.run_process(argv, backend, limit)
        outcome.exit_status, outcome.seconds = exit_status, seconds
        if timed_out and stop_at_limit:
            outcome.status = "stopped"
            outcome.detail = f"at its limit ({limit:.0f} s), as planned"
        elif timed_out:
            outcome.status, outcome.failed = "failed", True
            outcome.detail = f"timed out after {limit:.0f} s"
        elif exit_status != 0:
            outcome.status, outcome.failed = "failed", True
            outcome.detail = f"exit {exit_status}"
        elif output is not None and not Path(output).exists():
            outcome.status, outcome.failed = "failed", True
            outcome.detail = f"exit 0 but no {Path(output).name}"
        else:
            outcome.status = "ok"
            if collect_only:
                outcome.detail = "collected only, as this profile says"
        if output is not None and Path(output).exists():
            outcome.output = Path(output).name
        return self._finish(outcome)

    def _finish(self, outcome):
        line = f"STAGE {outcome.name} {outcome.status.upper()}"
        if outcome.failed:
            line = f"STAGE {outcome.name} FAILED"
        if outcome.detail:
            line += f" ({outcome.detail})"
        if outcome.seconds is not None:
            line += f" after {outcome.seconds:.0f} s"
        say(line)
        self.outcomes.append(outcome)
        self.save()
        return outcome

    def run_process(self, argv, backend, limit):
        """(exit status, timed out, seconds); the whole process group is ended."""
        env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1")
        # JAX takes 75% of a GPU at its first use; only JAX's own stages may
        # (Keras imports jax under every backend).
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true" if backend == "jax" else "false"
        env.pop("BREAK_STAGE", None)
        start = time.monotonic()
        # Its own process group, so that a limit reaches the grandchildren
        # (accuracy.py's train command, torch.compile's workers).
        self.child = subprocess.Popen(argv, cwd=REPO, env=env, **NEW_PROCESS_GROUP)
        timed_out = False
        try:
            exit_status = self.child.wait(timeout=max(limit, 1))
        except subprocess.TimeoutExpired:
            timed_out = True
            say(f"limit of {limit:.0f} s reached: SIGTERM (the train command saves)")
            exit_status = self.end_child(self.profile.grace_s)
        finally:
            signal_group(self.child, signal.SIGKILL)
        self.child = None
        return exit_status, timed_out, time.monotonic() - start

    def end_child(self, grace_s):
        """SIGTERM to the child's group, SIGKILL after `grace_s`; its status."""
        signal_group(self.child, signal.SIGTERM)
        try:
            return self.child.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(self.child, signal.SIGKILL)
            return self.child.wait()

    # ------------------------------------------------------- the stages

    def pytest_argv(self, name, *, precision, select, native=None, extra=()):
        p = self.profile
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "benchmarks/test_step_throughput.py",
            "-p",
            "no:cacheprovider",
            "-q",
            "--models",
            p.model,
            "--batch-sizes",
            str(p.batch_size),
            "--precisions",
            precision,
            "--rounds",
            str(p.rounds),
            "--steps-per-round",
            str(p.steps_per_round),
            "--warmup-rounds",
            str(p.warmup_rounds),
            "--no-inference",
            "-k",
            select,
            f"--benchmark-json={self.stages_dir / (name + '.json')}",
            *extra,
        ]
        if native:
            argv += ["--native", native]
        return argv

    def throughput(self, name, *, backend, precision, select, native=None, **kwargs):
        extra = kwargs.pop("extra", ())
        output = self.stages_dir / f"{name}.json"
        argv = self.pytest_argv(
            name, precision=precision, select=select, native=native, extra=extra
        )
        return self.run_stage(name, argv, backend=backend, output=output, **kwargs)

    def probe(self, backend):
        name = f"probe-{backend}"
        outcome = self.throughput(
            name, backend=backend, precision="mixed", select="test_keras"
        )
        figure = None
        if outcome.status == "ok":
            figure = results.step_figure(self.stages_dir / f"{name}.json")
        self.probes[backend] = figure
        return outcome

    def accuracy_argv(self, name, backend, epochs):
        argv = [
            sys.executable,
            "benchmarks/accuracy.py",
            "--profile",
            "gpu",
            "--epochs",
            str(epochs),
            "--model",
            self.profile.model,
            "--mixed-precision",
            plan.ACCURACY_PRECISION,
            "--data-dir",
            str(self.data_dir),
            "--output-dir",
            str(self.runs_dir / name),
        ]
        if self.profile.train_flags:
            argv += ["--", *self.profile.train_flags]
        return argv

    def data_problem(self):
        found = len(list(self.data_dir.glob("*.bin")))
        if found == CIFAR10_FILES:
            return None
        return (
            f"needs the {CIFAR10_FILES} CIFAR-10 files in {self.data_dir}, found "
            f"{found} (carry the three parts: benchmarks/README.md)"
        )

    def accuracy_run(
        self, name, backend, *, fit=None, epochs=None, stop_at_limit=False
    ):
        """One accuracy stage; its record goes to `stages/<name>.json`.

        Args:
            name: str, `accuracy` or `accuracy-other`.
            backend: str.
            fit: (step_s, first_step_s) or None: fit the epochs to the time
                left (the headline run).
            epochs: int or None: repeat this schedule instead.
            stop_at_limit: bool, the limit ends it by design.
        """
        stage = self.profile.stage(name)
        if name not in self.selected:
            return self.run_stage(name, [], backend=backend)
        limit = self.limit_for(stage)
        decision = {"backend": backend, "limit_s": round(limit, 1)}
        skip = self.data_problem()
        if fit is not None:
            reserve = self.profile.report_reserve_s
            if "native" in self.selected:
                # The ratios' anchor runs next, whatever the accuracy run needs.
                reserve += self.profile.stage("native").min_s
            budget = self.left() - reserve
            estimate = plan.fit_epochs(self.profile, budget, *fit)
            epochs = estimate.epochs
            decision["estimate"] = {
                key: round(value, 2) for key, value in estimate.to_dict().items()
            }
            if epochs < 1 and skip is None:
                skip = f"no epoch fits in {budget:.0f} s ({decision['estimate']})"
        decision["epochs"] = epochs
        self.decisions[name] = decision
        if skip is None:
            say(f"{name}: {backend}, {epochs} epochs ({json.dumps(decision)})")
        run_dir = self.runs_dir / name
        outcome = self.run_stage(
            name,
            self.accuracy_argv(name, backend, epochs or 1),
            backend=backend,
            limit=limit,
            stop_at_limit=stop_at_limit,
            skip=skip,
        )
        if outcome.command is None:
            return outcome
        record = results.accuracy_record(
            run_dir,
            backend,
            model=self.profile.model,
            precision=plan.ACCURACY_PRECISION,
            planned_epochs=epochs,
            wall_seconds=outcome.seconds,
            device=(self.probes.get(backend) or {}).get("device"),
            stopped=outcome.status != "ok",
        )
        if record is not None:
            record["stage_status"] = outcome.status
            self.accuracy[name] = record
            path = self.stages_dir / f"{name}.json"
            results.write_json(path, record)
            outcome.output = path.name
            self.save()
        return outcome

    def execute(self):
        """Every stage, in order; returns the exit status (1 if any failed)."""
        p = self.profile
        say(
            f"driver: profile {p.name}, deadline {p.deadline_s:.0f} s, "
            f"{self.left():.0f} s left, stages {', '.join(sorted(self.selected))}"
        )
        self.save()
        for backend in plan.BACKENDS:
            self.probe(backend)
        probes = {
            b: (f["step_s"], f["first_step_s"]) if f else None
            for b, f in self.probes.items()
        }
        backend, step_s, first_step_s, measured = plan.pick_backend(probes)
        if not measured:
            step_s, first_step_s = p.assumed_step_s, p.assumed_first_step_s
        self.decisions["accuracy backend"] = {
            "backend": backend,
            "step_s": step_s,
            "first_step_s": first_step_s,
            "measured": measured,
            "probes": self.probes,
        }
        main = self.accuracy_run("accuracy", backend, fit=(step_s, first_step_s))
        other = plan.other_backend(backend)
        other_done = False
        if main.status == "failed" and probes.get(other) is not None:
            # The headline figure from the other backend, before anything else.
            say(f"accuracy on {backend} did not finish: {other} takes its place")
            self.accuracy_run("accuracy-other", other, fit=probes[other])
            other_done = True

        self.throughput(
            "native",
            backend="torch",
            precision="mixed",
            select="test_native_torch",
            native="eager-bf16,channels_last-bf16",
        )
        self.throughput(
            "jax-float32", backend="jax", precision="float32", select="test_keras"
        )
        self.throughput(
            "torch-keras-bn",
            backend="torch",
            precision="mixed",
            select="test_keras",
            extra=("--batch-norm", "keras"),
            skip=no_option("--batch-norm"),
        )
        self.throughput(
            "native-compiled",
            backend="torch",
            precision="mixed",
            select="test_native_torch",
            native="compiled-channels_last-bf16",
        )
        self.throughput(
            "torch-compiled",
            backend="torch",
            precision="mixed",
            select="test_keras",
            extra=("--jit-compile", "on"),
            skip=no_option("--jit-compile"),
        )
        if not other_done:
            if main.status == "ok":
                self.accuracy_run(
                    "accuracy-other",
                    other,
                    epochs=self.decisions["accuracy"]["epochs"],
                    stop_at_limit=True,
                )
            else:
                fit = probes.get(other) or (step_s, first_step_s)
                self.accuracy_run("accuracy-other", other, fit=fit)
        self.report()
        return self.conclude()

    def report(self):
        report_dir = self.results / results.REPORT_DIR
        argv = [
            sys.executable,
            "benchmarks/report.py",
            str(self.stages_dir),
            "--output-dir",
            str(report_dir),
            "--command",
            self.command(),
        ]
        skip = None
        if not any(self.stages_dir.glob("*.json")):
            skip = "no stage left a figure to report"
        self.run_stage(
            "report", argv, backend="jax", output=report_dir / "table.md", skip=skip
        )

    def conclude(self):
        failed = [o for o in self.outcomes if o.failed]
        skipped = [o for o in self.outcomes if o.status == "skipped" and not o.failed]
        self.save()
        # The table first, the verdict last: the device tool shows the end.
        print(self.markdown_path().read_text(), flush=True)
        say(f"driver: {len(self.outcomes)} stages in {self.elapsed():.0f} s")
        for name, record in self.accuracy.items():
            say(
                f"  {name}: {record['backend']}, {record.get('epochs')} of "
                f"{record.get('planned_epochs')} epochs, test accuracy "
                f"{record.get('test_accuracy')}, flip TTA "
                f"{record.get('test_accuracy_flip_tta')}"
            )
        for o in skipped:
            say(f"  skipped {o.name}: {o.detail}")
        for o in failed:
            say(f"  STAGE {o.name} FAILED ({o.detail})")
        if failed:
            say(f"driver: FAILED stages: {', '.join(o.name for o in failed)}")
            return 1
        say("driver: every stage that ran succeeded")
        return 0

    # ------------------------------------------------------------ files

    def command(self):
        mode = " --rehearse" if self.profile.name == "rehearsal" else ""
        return f"bash benchmarks/gpu/run.sh{mode}"

    def markdown_path(self):
        return self.results / results.result_name(self.card, self.day)

    def record(self):
        files = {}
        for path in sorted(self.stages_dir.glob("*.json")):
            try:
                files[path.name] = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                files[path.name] = {"unreadable": str(err)}
        return {
            "profile": self.profile.name,
            "settings": dataclasses.asdict(self.profile),
            "card": self.card,
            "card_name": self.card_name,
            "day": self.day,
            "command": self.command(),
            "started_at": self.started_at,
            "elapsed_s": self.elapsed(),
            "deadline_s": self.profile.deadline_s,
            "stages": [dataclasses.asdict(o) for o in self.outcomes],
            "decisions": self.decisions,
            "accuracy": self.accuracy,
            "files": files,
        }

    def save(self):
        """gpu-run.json and the table now, and a copy of both (and the log) out.

        Never raises: a problem here must not cost a stage its figures.
        """
        try:
            record = self.record()
            results.write_json(self.results / results.RECORD_NAME, record)
            text = results.markdown(
                record, results.throughput_lines(self.stages_dir), plan.RECIPE_EPOCHS
            )
            results.write_text(self.markdown_path(), text)
            if self.out is not None:
                self.copy_out()
        except Exception as err:  # noqa: BLE001
            say(f"driver: could not write the results ({type(err).__name__}: {err})")

    def copy_out(self):
        paths = [
            self.markdown_path(),
            self.results / results.RECORD_NAME,
            self.results / results.LOG_NAME,
            self.results / results.REPORT_DIR / results.CHART_NAME,
        ]
        for record in self.accuracy.values():
            curves = Path(record["run_dir"]) / "curves.png"
            if curves.exists():
                target = self.results / f"curves-{record['backend']}.png"
                target.write_bytes(curves.read_bytes())
                paths.append(target)
        results.copy_to_out(self.out, paths)


# ------------------------------------------------------------------ helpers


def say(message):
    print(f"run.sh: {message}", flush=True)


def signal_group(process, signum):
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def break_command(argv):
    """The command with an option its tool rejects, before any `--`."""
    argv = list(argv)
    at = next(i for i, a in enumerate(argv) if str(a).startswith("--"))
    return argv[:at] + [BROKEN_OPTION] + argv[at:]


def no_option(option):
    """Why a stage needing a benchmark option cannot run, or None if it can."""
    if option in (BENCHMARKS / "conftest.py").read_text():
        return None
    return f"benchmarks/conftest.py has no {option} option yet"


def card():
    """(file-name slug, display name) of the GPU, or of the CPU rehearsal."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        name = result.stdout.strip().splitlines()[0] if result.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError, IndexError):
        name = ""
    if not name:
        return "cpu", "CPU (no GPU found)"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug, name


def build_parser():
    stage_names = [s.name for s in plan.GPU_STAGES]
    parser = argparse.ArgumentParser(
        prog="python3 benchmarks/gpu/driver.py",
        description="Run the GPU plan's stages (benchmarks/gpu/plan.py), each "
        "with its own limit and output file. Called by benchmarks/gpu/run.sh, "
        "which stages the data and installs Keras first.",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(plan.PROFILES),
        default="gpu",
        help="gpu: ResNet18 at batch 512; rehearsal: the test model on a CPU "
        "with a slice of the data. Default: gpu.",
    )
    parser.add_argument(
        "--data-dir", required=True, help="the unpacked cifar-10-batches-bin folder."
    )
    parser.add_argument(
        "--results", required=True, help="results folder (see results.py)."
    )
    parser.add_argument(
        "--started-at",
        type=float,
        default=None,
        help="Unix time the run began (run.sh's start, so staging counts "
        "against the deadline). Default: now.",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds from --started-at by which the last stage ends. "
        "Default: the profile's ("
        + ", ".join(f"{n} {p.deadline_s:.0f}" for n, p in plan.PROFILES.items())
        + ").",
    )
    parser.add_argument(
        "--stages",
        default=",".join(stage_names),
        help="comma-separated stages to run (the report always runs): "
        f"{', '.join(stage_names)}. Default: all.",
    )
    parser.add_argument(
        "--out",
        default=os.environ.get("OUT"),
        help="folder the device tool brings back; the table, gpu-run.json, "
        "log and charts are copied there after every stage. Default: $OUT.",
    )
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    profile = plan.PROFILES[args.profile]
    if args.deadline is not None:
        profile = dataclasses.replace(profile, deadline_s=args.deadline)
    selected = {s.strip() for s in args.stages.split(",") if s.strip()} | {"report"}
    unknown = sorted(selected - {s.name for s in profile.stages})
    if unknown:
        parser.error(f"--stages: unknown {', '.join(unknown)}")
    run = Run(
        profile,
        results_dir=args.results,
        data_dir=args.data_dir,
        started_at=args.started_at or time.time(),
        out=args.out,
        selected=selected,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_interrupted)
    try:
        return run.execute()
    except Interrupted as stop:
        signum = stop.args[0]
        # run_process has already ended the stage's process group.
        say(f"driver: stopped by {signal.Signals(signum).name}")
        run.save()
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
