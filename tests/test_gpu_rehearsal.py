"""The GPU run (benchmarks/gpu/): its stages, budget, files, and a rehearsal.

The stage runner is checked with stand-in stages (small Python commands):
results after every stage, a failure reported, the budget and --max-files
kept. Then `prepare.sh --rehearse` and `run.sh --rehearse` run end to end on
a CPU, as a user would on a GPU machine: each test session rehearses its
share of the stages (`REHEARSED_IN`), so that over the three sessions every
stage runs once with the settings it uses on a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu import stages
from tests.backend_subprocess import current_backend

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / "benchmarks" / "gpu"


def test_throughput_comes_first_then_accuracy():
    names = [stage.name for stage in stages.STAGES]
    assert names[:4] == [
        "keras-jax",
        "keras-torch",
        "keras-torch-keras-bn",
        "keras-torch-keras-conv",
    ]
    assert len(set(names)) == len(names)
    # Every backend's step first; the compiled steps after the training runs.
    kinds = [stage.accuracy for stage in stages.STAGES]
    first_accuracy = kinds.index(True)
    assert first_accuracy == 6 and not any(kinds[:first_accuracy])
    assert names[-2:] == ["native-torch-compiled", "keras-torch-compiled"]
    assert {s.backend for s in stages.STAGES if s.accuracy} == {"jax", "torch"}


def _stand_in(name, code, accuracy=False):
    """A stage running `code` with the figures file's path as sys.argv[1]."""

    def argv(options, figures):
        return [sys.executable, "-c", code, str(figures)]

    return stages.Stage(name, "torch", f"stand-in {name}", argv, accuracy)


FIGURES = "import sys; open(sys.argv[1], 'w').write('{\"benchmarks\": []}')"


def _run(tmp_path, stand_ins, *extra):
    options = stages.build_parser().parse_args(
        ["--budget", "60", "--out", str(tmp_path / "out")]
        + ["--work", str(tmp_path / "work"), "--min-stage", "5", *extra]
    )
    options.started_at = time.time()
    options.title = "stand-in run"
    options.stage_limit = options.stage_limit or 180
    run = stages.Run(options, stand_ins)
    return run.run(), tmp_path / "out"


def test_each_stage_reports_and_a_failure_fails_the_run(tmp_path, capsys):
    status, out = _run(
        tmp_path,
        [
            _stand_in("first", FIGURES),
            _stand_in("broken", "raise SystemExit(3)"),
            _stand_in("last", FIGURES),
        ],
    )
    assert status == 1
    output = capsys.readouterr().out
    assert "STAGE broken FAILED" in output and "FAILED stages: broken" in output
    record = json.loads((out / "results.json").read_text())
    statuses = {s["stage"]: s["status"] for s in record["stages"]}
    assert statuses == {"first": "ok", "broken": "failed", "last": "ok"}
    table = (out / "table.md").read_text()
    assert "| broken | stand-in broken | failed (exit 3) |" in table


def test_an_empty_figures_file_fails_its_stage_in_one_line(tmp_path, capsys):
    # As a stage stopped while writing its figures leaves them.
    empty = "import sys; open(sys.argv[1], 'w').close()"
    status, out = _run(
        tmp_path, [_stand_in("empty", empty), _stand_in("last", FIGURES)]
    )
    assert status == 1
    output = capsys.readouterr().out
    assert "Traceback" not in output
    (line,) = [line for line in output.splitlines() if "STAGE empty FAILED" in line]
    assert line.endswith("empty.json is not valid JSON (damaged?)"), line
    record = json.loads((out / "results.json").read_text())
    statuses = {s["stage"]: s["status"] for s in record["stages"]}
    assert statuses == {"empty": "failed", "last": "ok"}
    assert "| empty | stand-in empty | failed (" in (out / "table.md").read_text()


def test_a_stage_past_its_own_limit_fails(tmp_path):
    sleep = "import time; time.sleep(60)"
    status, out = _run(
        tmp_path,
        [_stand_in("hung", sleep)],
        *("--stage-limit", "2", "--min-stage", "1", "--grace", "1"),
    )
    (hung,) = json.loads((out / "results.json").read_text())["stages"]
    assert (hung["status"], hung["detail"]) == ("failed", "timed out")
    assert hung["seconds"] < 10 and status == 1


def test_the_budget_stops_a_stage_and_skips_the_rest(tmp_path):
    sleep = "import time; time.sleep(60)"
    status, out = _run(
        tmp_path,
        [_stand_in("slow", sleep), _stand_in("late", FIGURES)],
        *("--budget", "4", "--reserve", "0", "--min-stage", "1", "--grace", "1"),
    )
    slow, late = json.loads((out / "results.json").read_text())["stages"]
    assert (slow["status"], slow["detail"]) == ("stopped", "the budget ran out")
    assert slow["seconds"] < 10
    assert late["status"] == "skipped"
    # Out of time is not a failure: every stage that could run did.
    assert status == 0


def test_the_output_folder_takes_at_most_max_files(tmp_path):
    status, out = _run(tmp_path, [_stand_in("only", FIGURES)], "--max-files", "2")
    assert status == 0
    assert sorted(p.name for p in out.iterdir()) == ["results.json", "table.md"]


# Which test session rehearses which stages: every stage once over the three
# sessions (every framework is installed in each), the time spread evenly.
# The compiled torch steps take longest on a CPU; the TensorFlow session,
# which has no stage of its own, rehearses them.
REHEARSED_IN = {
    "jax": ("keras-jax", "keras-jax-float32", "accuracy-jax", "keras-torch-keras-conv"),
    "torch": ("keras-torch", "keras-torch-keras-bn", "native-torch", "accuracy-torch"),
    "tensorflow": ("native-torch-compiled", "keras-torch-compiled"),
}


def test_every_stage_is_rehearsed_in_exactly_one_test_session():
    rehearsed = [name for names in REHEARSED_IN.values() for name in names]
    assert sorted(rehearsed) == sorted(stage.name for stage in stages.STAGES)


def _settings(argv):
    """What a command keeps from the GPU run in a rehearsal: all but its size."""
    sizes = {
        "--models", "--batch-sizes", "--rounds", "--steps-per-round", "--model",
        "--epochs", "--output-dir", "--max-train-examples", "--validation-size",
        "--batch-size",
    }  # fmt: skip
    kept, skip = [], False
    for arg in map(str, argv):
        if skip or arg.startswith("--benchmark-json") or arg == "--synthetic":
            skip = False
            continue
        if arg in sizes:
            skip = True
            continue
        kept.append(arg)
    return kept


@pytest.mark.parametrize("stage", stages.STAGES, ids=lambda stage: stage.name)
def test_a_rehearsal_keeps_each_stages_precision_compile_and_layers(stage, tmp_path):
    gpu = stages.build_parser().parse_args(
        ["--budget", "1", "--out", "o", "--work", "w"]
    )
    stages.configure(gpu)
    rehearsal = stages.build_parser().parse_args(
        ["--budget", "1", "--out", "o", "--work", "w", "--rehearse"]
    )
    stages.configure(rehearsal)
    figures = tmp_path / "figures.json"
    assert _settings(stage.argv(rehearsal, figures)) == _settings(
        stage.argv(gpu, figures)
    )


@pytest.mark.slow
def test_the_rehearsal_runs_from_prepare_to_table(tmp_path):
    """prepare.sh --rehearse in parts, then run.sh --rehearse with this test
    session's stages (REHEARSED_IN), each with its GPU settings."""
    names = REHEARSED_IN[current_backend()]
    bundle, out = tmp_path / "bundle", tmp_path / "out"
    prepare = ["bash", GPU / "prepare.sh", "--rehearse", "--bundle", bundle]
    subprocess.run([*prepare, "--part-size", "1"], check=True, cwd=tmp_path)
    assert not bundle.exists() and Path(f"{bundle}.SHA256SUMS").is_file()
    command = ["bash", GPU / "run.sh", "--rehearse", "--bundle", bundle]
    command += ["--budget", "1200", "--out", out, "--max-files", "3"]
    command += ["--stages", ",".join(names)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == [
        "results.json",
        "run.log",
        "table.md",
    ]
    record = json.loads((out / "results.json").read_text())
    outcomes = {o["stage"]: o for o in record["stages"]}
    assert sorted(outcomes) == sorted(names)
    for name, outcome in outcomes.items():
        assert outcome["status"] == "ok", (name, outcome)
        figures = outcome["figures"]
        assert figures.get("benchmarks") or figures.get("test_accuracy") is not None
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in names)


def test_a_python_without_keras_is_named_with_how_to_choose_another(tmp_path):
    # A new environment without Keras (and without pip to install it).
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", tmp_path / "bare"], check=True
    )
    python = tmp_path / "bare" / "bin" / "python"
    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    (bundle / "requirements.txt").write_text("keras\n")
    command = ["bash", GPU / "run.sh", "--bundle", bundle]
    command += ["--budget", "60", "--out", tmp_path / "out"]
    done = subprocess.run(
        command,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHON=str(python)),
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"run.sh: {python} (Python 3.") and "lacks Keras" in line
    assert "PYTHON=/path/to/python" in line
