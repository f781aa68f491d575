"""The GPU run (benchmarks/gpu/) keeps working between leases.

The arithmetic that fits the accuracy run's epochs to the time left, and the
files the run leaves, are checked directly. The slow test runs the script
end to end as on a GPU machine, in its CPU rehearsal: `prepare.sh
--rehearse`, then `run.sh --rehearse` (Keras installed from the carried
wheels into a fresh folder with no index, every stage, the epochs fitted to
a deadline, the files copied to $OUT), then once more with a stage broken on
purpose, which must fail the run loudly and still leave the table.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backend_subprocess import current_backend

REPO = Path(__file__).resolve().parent.parent
GPU = REPO / "benchmarks" / "gpu"


def _load(name):
    # Registered before running: dataclasses look their module up by name.
    spec = importlib.util.spec_from_file_location(f"gpu_{name}", GPU / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


plan = _load("plan")
results = _load("results")

STAGE_NAMES = [
    "probe-jax",
    "probe-torch",
    "accuracy",
    "native",
    "jax-float32",
    "torch-keras-bn",
    "native-compiled",
    "torch-compiled",
    "accuracy-other",
    "report",
]


def test_plan_repeats_the_default_recipe():
    from keras_cifar_resnet.config import TrainConfig

    recipe = TrainConfig()
    assert plan.RECIPE_EPOCHS == recipe.epochs
    assert plan.RECIPE_BATCH_SIZE == recipe.batch_size
    assert plan.RECIPE_VALIDATION_IMAGES == recipe.validation_size
    gpu = plan.PROFILES["gpu"]
    assert (gpu.model, gpu.batch_size) == ("resnet18", recipe.batch_size)
    assert plan.steps_per_epoch(gpu) == (50_000 - recipe.validation_size) // 512


def test_both_profiles_run_the_same_stages_headline_first():
    for profile in plan.PROFILES.values():
        assert [s.name for s in profile.stages] == STAGE_NAMES
        assert [s.name for s in profile.stages if s.required] == ["accuracy"]
    # The rehearsal's data slice is what its train flags ask for.
    rehearsal = plan.PROFILES["rehearsal"]
    names, values = rehearsal.train_flags[::2], rehearsal.train_flags[1::2]
    flags = dict(zip(names, values, strict=True))
    assert int(flags["--max-train-examples"]) == rehearsal.train_images
    assert int(flags["--validation-size"]) == rehearsal.validation_images
    assert int(flags["--batch-size"]) == rehearsal.batch_size


def test_gpu_lease_fits_the_issue_limits():
    gpu = plan.PROFILES["gpu"]
    # The main device call's limit is 600 s; the script leaves 60 s for the
    # copy back. The lease: start 120 + two staging calls 2 x 25 + transfer
    # 25 + the deadline + 60 must stay under 13 minutes.
    assert gpu.deadline_s + 60 <= 600
    assert 120 + 2 * 25 + 25 + gpu.deadline_s + 60 <= 13 * 60


def test_fit_epochs_fills_the_time_and_stops_at_the_recipe():
    gpu = plan.PROFILES["gpu"]
    estimate = plan.fit_epochs(gpu, 400, step_s=0.025, first_step_s=30)
    assert 1 <= estimate.epochs < plan.RECIPE_EPOCHS
    usable = 400 * (1 - gpu.margin)
    assert estimate.total_s <= usable < estimate.total_s + estimate.epoch_s
    assert estimate.fixed_s == gpu.startup_s + 2 * 30 + gpu.final_eval_s
    # Time to spare: the recipe's own length, no more.
    assert gpu.max_epochs == plan.RECIPE_EPOCHS
    assert plan.fit_epochs(gpu, 10_000, 0.025, 30).epochs == plan.RECIPE_EPOCHS
    # Not even one epoch: zero (the driver then skips the run and says so).
    assert plan.fit_epochs(gpu, 60, 0.025, 30).epochs == 0
    # A slower step never fits more epochs.
    fits = [plan.fit_epochs(gpu, 400, s, 30).epochs for s in (0.02, 0.04, 0.08)]
    assert fits == sorted(fits, reverse=True)


def test_pick_backend_takes_the_faster_probe():
    assert plan.pick_backend({"jax": (0.03, 40.0), "torch": (0.05, 5.0)}) == (
        "jax",
        0.03,
        40.0,
        True,
    )
    assert plan.pick_backend({"jax": None, "torch": (0.05, 5.0)})[0] == "torch"
    assert plan.pick_backend({"jax": None, "torch": None}) == ("jax", None, None, False)
    assert plan.other_backend("jax") == "torch"


def _write_log(run_dir, backend, rows):
    folder = run_dir / f"accuracy-run-{backend}"
    folder.mkdir(parents=True)
    lines = ["epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,seconds"]
    lines += [f"{i},1.0,0.5,1.0,{v},0.1,{s}" for i, (v, s) in enumerate(rows)]
    (folder / "log.csv").write_text("\n".join(lines) + "\n")


def test_stopped_accuracy_run_keeps_its_epochs_from_log_csv(tmp_path):
    _write_log(tmp_path, "torch", [(0.90, 10), (0.945, 12), (0.951, 11)])
    record = results.accuracy_record(
        tmp_path,
        "torch",
        model="resnet18",
        precision="mixed_bfloat16",
        planned_epochs=40,
        wall_seconds=80.0,
        device="GPU",
        stopped=True,
    )
    assert record["epochs"] == 3 and record["planned_epochs"] == 40
    assert record["test_accuracy"] is None
    assert record["seconds_to_94"] == 22 and record["seconds_to_95"] == 33
    assert [p["epoch"] for p in record["curve"]] == [1, 2, 3]
    assert "stopped after 3 of 40" in record["note"]
    # No epoch finished: nothing to record.
    assert (
        results.accuracy_record(
            tmp_path / "none",
            "jax",
            model="resnet18",
            precision="mixed_bfloat16",
            planned_epochs=40,
            wall_seconds=1.0,
            device=None,
            stopped=True,
        )
        is None
    )


def _accuracy(backend, epochs, planned, test_accuracy, curve):
    return {
        "backend": backend,
        "model": "resnet18",
        "precision": "mixed_bfloat16",
        "epochs": epochs,
        "planned_epochs": planned,
        "test_accuracy": test_accuracy,
        "test_accuracy_flip_tta": test_accuracy,
        "curve": [{"epoch": e, "val_accuracy": v} for e, v in curve],
    }


def test_headline_says_whether_the_published_figures_compare():
    full = {"accuracy": _accuracy("jax", 100, 100, 0.95, [(1, 0.5)])}
    text = "\n".join(results.accuracy_lines(full, plan.RECIPE_EPOCHS))
    assert "The full recipe (100 epochs), beside" in text and "93.02%" in text
    short = {
        "accuracy": _accuracy("jax", 40, 40, 0.93, [(1, 0.5), (2, 0.6), (3, 0.7)]),
        "accuracy-other": _accuracy("torch", 2, 40, None, [(1, 0.45), (2, 0.58)]),
    }
    lines = results.accuracy_lines(short, plan.RECIPE_EPOCHS)
    assert any(line.startswith("Not the full recipe") for line in lines)
    # The two backends side by side at the epochs both reached.
    assert "| 2 | 60.00% | 58.00% |" in lines
    assert not any(line.startswith("| 3 |") for line in lines)


def test_copy_to_out_keeps_within_what_comes_back(tmp_path):
    files = []
    for i in range(9):
        files.append(tmp_path / f"f{i}.txt")
        files[-1].write_text("x")
    with pytest.raises(ValueError, match="at most 8 files"):
        results.copy_to_out(tmp_path / "out", files)
    results.copy_to_out(tmp_path / "out", files[:8] + [tmp_path / "missing"])
    assert len(list((tmp_path / "out").iterdir())) == 8


def _shared():
    shared = Path(os.environ.get("SHARED", REPO.parent / "shared"))
    if (shared / "wheels" / "gpu-py312").is_dir() and (
        shared / "data" / "cifar10"
    ).is_dir():
        return shared
    reason = f"no {shared}/wheels/gpu-py312 and data/cifar10 beside the repo"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI has ../shared beside the clone)")
    pytest.skip(reason)


def _run(arguments, env, timeout):
    result = subprocess.run(
        ["bash", *arguments],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, result.stdout + result.stderr


@pytest.mark.slow
def test_rehearsal_runs_every_stage_and_fails_loudly_on_a_broken_one(tmp_path):
    """run.sh --rehearse, then with BREAK_STAGE; about 3 minutes on 2 cores."""
    if current_backend() != "jax":
        pytest.skip(
            "the rehearsal starts its own JAX and torch processes, whatever "
            "the session's backend: it runs once, in the jax session"
        )
    shared = _shared()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("OUT", "BREAK_STAGE", "RESULTS_DIR", "KERAS_BACKEND")
    }
    env.update(
        SHARED=str(shared),
        PYTHON=sys.executable,
        TMPDIR=str(tmp_path),
        PYTHONWARNINGS="ignore",
    )
    prepared, output = _run(["benchmarks/gpu/prepare.sh", "--rehearse"], env, 300)
    assert prepared.returncode == 0, output[-3000:]

    out = tmp_path / "out"
    env_good = dict(env, OUT=str(out), RESULTS_DIR=str(tmp_path / "results"))
    good, output = _run(["benchmarks/gpu/run.sh", "--rehearse"], env_good, 480)
    assert good.returncode == 0, output[-6000:]
    assert "every stage that ran succeeded" in output

    names = sorted(p.name for p in out.iterdir())
    assert len(names) <= results.OUT_FILE_LIMIT
    table = next(n for n in names if n.startswith("rehearsal-") and n.endswith(".md"))
    record = json.loads((out / "gpu-run.json").read_text())
    backend = record["decisions"]["accuracy backend"]["backend"]
    assert {"gpu-run.json", "run-log.txt", "chart.png", f"curves-{backend}.png"} <= set(
        names
    )
    stages = {s["name"]: s for s in record["stages"]}
    assert list(stages) == STAGE_NAMES
    for name in ("probe-jax", "probe-torch", "accuracy", "native", "report"):
        assert stages[name]["status"] == "ok", stages[name]
    for name in plan.PROFILES["rehearsal"].collect_only:
        # torch-compiled waits for benchmarks/conftest.py's --jit-compile.
        assert stages[name]["status"] == "ok" or (
            name == "torch-compiled" and "--jit-compile" in stages[name]["detail"]
        ), stages[name]
    # Whatever time is left: it may finish, stop at its limit, or not fit.
    assert stages["accuracy-other"]["status"] in ("ok", "stopped", "skipped")
    for name in ("probe-jax", "probe-torch", "native"):
        benchmarks = record["files"][f"{name}.json"]["benchmarks"]
        assert benchmarks and all(
            b["extra_info"]["model"] == "tiny" for b in benchmarks
        )

    # The epochs were fitted to the time, at most the rehearsal's few.
    decision = record["decisions"]["accuracy"]
    headline = record["accuracy"]["accuracy"]
    assert 1 <= decision["epochs"] <= plan.PROFILES["rehearsal"].max_epochs
    assert decision["estimate"]["total_s"] <= decision["estimate"]["budget_s"]
    assert headline["epochs"] == headline["planned_epochs"] == decision["epochs"]
    assert headline["backend"] == backend
    assert headline["test_accuracy"] is not None
    assert headline["test_accuracy_flip_tta"] is not None
    assert headline["train_examples"] == plan.PROFILES["rehearsal"].train_images
    assert len(headline["curve"]) == headline["epochs"]

    text = (out / table).read_text()
    for heading in ("## Accuracy", "## Training-step throughput", "## Stages"):
        assert heading in text
    assert "| accuracy | " in text and "native-torch-eager-bf16" in text
    log = (out / "run-log.txt").read_text()
    # Keras came from the fresh folder, not from the environment's own.
    assert f"from {tmp_path}/keras-site." in log

    # The stage files come back inside gpu-run.json and rebuild the table.
    assert results.unpack(out / "gpu-run.json", tmp_path / "unpacked")
    report = results._benchmarks_module("report")
    assert report.main([str(tmp_path / "unpacked")]) == 0

    out2 = tmp_path / "out-broken"
    env_broken = dict(
        env,
        OUT=str(out2),
        RESULTS_DIR=str(tmp_path / "results-broken"),
        BREAK_STAGE="probe-jax",
    )
    broken, output = _run(
        ["benchmarks/gpu/run.sh", "--rehearse", "--stages", "probe-jax,probe-torch"],
        env_broken,
        300,
    )
    assert broken.returncode == 1, output[-6000:]
    assert "STAGE probe-jax FAILED (exit 4)" in output
    assert "FAILED stages: probe-jax" in output
    record = json.loads((out2 / "gpu-run.json").read_text())
    stages = {s["name"]: s for s in record["stages"]}
    assert stages["probe-jax"]["failed"] and stages["probe-jax"]["exit_status"] == 4
    # The stages after it still ran, and the table says what failed.
    assert stages["probe-torch"]["status"] == "ok"
    assert stages["report"]["status"] == "ok"
    assert stages["accuracy"]["detail"] == "not selected (--stages)"
    table = next(p for p in out2.iterdir() if p.suffix == ".md").read_text()
    assert "| probe-jax | " in table and "failed: exit 4" in table
    assert "STAGE probe-jax FAILED" in (out2 / "run-log.txt").read_text()


def test_gpu_profile_out_of_time_skips_each_stage_and_fails_loudly(tmp_path):
    """The GPU profile's own logic, in a second: no stage fits 30 s."""
    result = subprocess.run(
        [
            sys.executable,
            str(GPU / "driver.py"),
            "--profile",
            "gpu",
            "--data-dir",
            str(tmp_path / "no-data"),
            "--results",
            str(tmp_path / "results"),
            "--deadline",
            "30",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "STAGE probe-jax SKIPPED (needs at least 60 s" in result.stdout
    # The headline run is required: not running it fails the run.
    assert "STAGE accuracy FAILED" in result.stdout
    record = json.loads((tmp_path / "out" / "gpu-run.json").read_text())
    assert [s["name"] for s in record["stages"]] == STAGE_NAMES
    assert record["settings"]["model"] == "resnet18"
    assert any(p.suffix == ".md" for p in (tmp_path / "out").iterdir())
