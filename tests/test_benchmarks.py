"""The benchmark code keeps working: tiny runs, never a speed asserted.

The benchmarks themselves (benchmarks/) run in a subprocess under the current
backend, as `nox -s benchmark` runs them, in the CI profile (`--tiny`: the
test model, batch 8, one round); the report is built from what they wrote.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from benchmarks import accuracy, conftest as benchmark_options, interleaved, report
from keras_cifar_resnet.training.run_folder import LOG_COLUMNS
from tests.backend_subprocess import (
    current_backend,
    run_command_under_backend,
    run_only_in_session,
    run_under_backend,
)

REPO = Path(__file__).resolve().parent.parent


def _record(variant, images_per_second, precision="float32", function="train"):
    return {
        "name": variant,
        "extra_info": {
            "function": function,
            "variant": variant,
            "implementation": "native-torch" if "native" in variant else "keras",
            "backend": "native-torch" if "native" in variant else "jax",
            "model": "resnet18",
            "batch_size": 128,
            "precision": precision,
            "images_per_second": images_per_second,
        },
    }


def test_report_ratios_are_to_native_eager_of_the_same_precision():
    rows = report.rows_from_benchmarks(
        [
            _record("native-torch-eager", 50.0),
            _record("native-torch-eager-bf16", 80.0, precision="mixed"),
            _record("keras-jax", 25.0),
            _record("keras-jax", 40.0, precision="mixed"),
            {"name": "someone else's benchmark", "extra_info": {}},
        ]
    )
    ratios = {(r["variant"], r["precision"]): r.get("ratio_to_native") for r in rows}
    assert ratios == {
        ("native-torch-eager", "float32"): 1.0,
        ("native-torch-eager-bf16", "mixed"): 1.0,
        ("keras-jax", "float32"): 0.5,
        ("keras-jax", "mixed"): 0.5,
    }


def test_report_gives_bf16_gain_over_the_same_implementation_at_float32():
    rows = report.rows_from_benchmarks(
        [
            _record("native-torch-eager", 50.0),
            _record("native-torch-eager-bf16", 80.0, precision="mixed"),
            _record("native-torch-channels_last", 60.0),
            _record("native-torch-channels_last-bf16", 90.0, precision="mixed"),
            _record("keras-jax", 25.0),
            _record("keras-jax", 30.0, precision="mixed"),
            _record("keras-jax-keras-bn", 20.0, precision="mixed"),
        ]
    )
    gains = {(r["variant"], r["precision"]): r.get("ratio_to_float32") for r in rows}
    assert gains == {
        ("native-torch-eager", "float32"): None,
        ("native-torch-eager-bf16", "mixed"): 1.6,
        ("native-torch-channels_last", "float32"): None,
        ("native-torch-channels_last-bf16", "mixed"): 1.5,
        ("keras-jax", "float32"): None,
        ("keras-jax", "mixed"): pytest.approx(1.2),
        # No float32 row of that variant in the run: no gain to report.
        ("keras-jax-keras-bn", "mixed"): None,
    }
    table = "\n".join(report.format_rows(rows))
    assert "| 1.6 |" in table


def test_report_refuses_a_ratio_when_other_processes_loaded_one_row_more():
    quiet = _record("native-torch-eager", 50.0)
    busy = _record("keras-jax", 25.0)
    calm = _record("keras-jax", 40.0, precision="mixed")
    anchor_bf16 = _record("native-torch-eager-bf16", 80.0, precision="mixed")
    quiet["extra_info"]["other_busy_cores"] = 0.05
    busy["extra_info"]["other_busy_cores"] = 0.05 + report.OTHER_LOAD_BOUND + 0.01
    calm["extra_info"]["other_busy_cores"] = 0.3
    anchor_bf16["extra_info"]["other_busy_cores"] = 0.3 - report.OTHER_LOAD_BOUND
    rows = report.rows_from_benchmarks([quiet, busy, calm, anchor_bf16])
    by_name = {(r["variant"], r["precision"]): r for r in rows}
    refused = by_name[("keras-jax", "float32")]
    assert "ratio_to_native" not in refused
    assert refused["ratio_refused"] == "others busy 0.31 vs 0.05 cores"
    assert by_name[("keras-jax", "mixed")]["ratio_to_native"] == 0.5
    table = "\n".join(report.format_rows(rows))
    assert "- (others busy 0.31 vs 0.05 cores)" in table


def test_report_marks_rows_that_lost_more_than_five_percent(tmp_path):
    def run(date, jax_speed, native_speed):
        records = [_record("keras-jax", jax_speed), _record("native-torch-eager", 50.0)]
        records[1]["extra_info"]["images_per_second"] = native_speed
        for record in records:
            record["extra_info"].update(device="CPU X (2 cores)", date=date)
        return {"benchmarks": records}

    results = tmp_path / "results"
    for name, date, jax_speed in (
        ("old", "2026-12-01T00:00:00", 30.0),
        ("last", "2026-12-03T00:00:00", 26.0),
        ("later", "2026-12-09T00:00:00", 10.0),  # after the run: not "last"
    ):
        (results / name).mkdir(parents=True)
        (results / name / "b.json").write_text(json.dumps(run(date, jax_speed, 50)))
    rows = report.rows_from_benchmarks(
        run("2026-12-05T00:00:00", 24.0, 49.0)["benchmarks"]
    )
    folder, baseline = report.last_results_of_machine(rows, results=results)
    assert folder.name == "last"
    marked = report.mark_regressions(rows, baseline)
    # keras-jax 24/26 = 0.923 < 0.95; native 49/50 = 0.98 is not marked.
    assert [r["variant"] for r in marked] == ["keras-jax"]
    text = "\n".join(report.regression_lines(rows, folder, marked))
    assert "2 rows compared; 1 lost more than 5%" in text
    assert "keras-jax resnet18 b128 float32 train: 0.92x its last figure" in text
    other = [dict(r, device="another CPU") for r in rows]
    assert report.last_results_of_machine(other, results=results) == (None, [])


def test_interleaved_ratios_are_per_round():
    seconds = {
        "keras-torch": [0.10, 0.20, 0.40],
        "native-torch-eager": [0.11, 0.18, 0.44],
    }
    ratio = interleaved.ratios(seconds)["keras-torch / native-torch-eager"]
    # Each round's native seconds over Keras's: a slow round hits both alike.
    assert ratio["per_round"] == pytest.approx([1.1, 0.9, 1.1])
    assert ratio["median"] == pytest.approx(1.1)
    assert ratio["mean"] == pytest.approx(31 / 30)
    assert ratio["rounds_used"] == 3


def test_interleaved_ratios_leave_out_rounds_others_kept_busy():
    seconds = {
        "keras-torch": [0.10, 0.20, 0.40, 0.10],
        "native-torch-eager": [0.11, 0.18, 0.44, 0.30],
    }
    busy = report.OTHER_LOAD_BOUND + 0.5
    ratio = interleaved.ratios(seconds, [0.0, 0.01, 0.0, busy])[
        "keras-torch / native-torch-eager"
    ]
    assert len(ratio["per_round"]) == 4  # every round is kept in the record
    assert ratio["rounds_used"] == 3
    assert ratio["median"] == pytest.approx(1.1)
    assert ratio["mean"] == pytest.approx(31 / 30)
    assert "3 of 4 rounds quiet" in report.ratio_summary(ratio, 4)
    none_quiet = interleaved.ratios(seconds, [busy] * 4)
    ratio = none_quiet["keras-torch / native-torch-eager"]
    assert ratio["median"] is None and ratio["rounds_used"] == 0
    assert "no round was quiet" in report.ratio_summary(ratio, 4)


@pytest.mark.slow
def test_an_interleaved_run_writes_its_ratios_and_the_report_shows_them(tmp_path):
    run_only_in_session("torch", "Keras torch beside native PyTorch")
    run_command_under_backend(
        "torch",
        ["-m", "benchmarks.interleaved", "--model", "tiny", "--batch-size", "4"]
        + ["--rounds", "3", "--steps", "1", "--output-dir", str(tmp_path)],
        cwd=REPO,
        timeout=600,
    )
    (record_path,) = tmp_path.glob("interleaved-torch-tiny-w1-b4-float32.json")
    record = json.loads(record_path.read_text())
    assert set(record["ms_per_step_median"]) == {
        "keras-torch",
        "native-torch-eager",
        "native-torch-channels_last",
    }
    assert all(len(s) == 3 for s in record["seconds_per_step"].values())
    ratio = record["ratios"]["keras-torch / native-torch-eager"]
    assert len(ratio["per_round"]) == 3
    # On a busy machine some rounds are left out of the ratio, and said so.
    used = ratio["rounds_used"]
    assert 0 <= used <= 3 and len(record["other_busy_cores"]) == 3
    assert report.main([str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    rounds = "3" if used == 3 else f"{used} of 3"
    assert (
        f"| torch | tiny | 1 | 4 | float32 | keras-torch / native-torch-eager | "
        f"{rounds} |" in table
    )


def test_the_summary_gives_each_implementation_both_precisions_in_one_row():
    rows = report.rows_from_benchmarks(
        [
            _record("native-torch-eager", 50.0),
            _record("native-torch-eager-bf16", 80.0, precision="mixed"),
            _record("keras-jax", 25.0),
            _record("keras-jax", 40.0, precision="mixed"),
        ]
    )
    table = "\n".join(report.summary_throughput_lines(rows))
    assert "| Keras, JAX | resnet18 | 128 | 25.0 | 0.5 | 40.0 | 0.5 | 1.6 |" in table
    assert (
        "| native PyTorch, eager NCHW | resnet18 | 128 | 50.0 | 1 | 80.0 | 1 | 1.6 |"
        in table
    )


def test_report_without_native_leaves_the_ratio_empty():
    rows = report.rows_from_benchmarks([_record("keras-jax", 25.0)])
    assert "ratio_to_native" not in rows[0]
    table = "\n".join(report.format_rows(rows))
    assert "| keras-jax | resnet18 | 128 | float32 | 25.0 |" in table


def test_report_cli_rejects_missing_input(tmp_path, capsys):
    assert report.main([str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert report.main([str(tmp_path)]) == 2
    assert "no benchmark figures" in capsys.readouterr().err
    # An interrupted run's empty file, and a damaged one: one line each.
    (tmp_path / "benchmark-torch.json").write_text("")
    assert report.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip().endswith("is not readable JSON (empty)")
    (tmp_path / "benchmark-torch.json").write_text('{"benchmarks": [')
    assert report.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "benchmark-torch.json is not readable JSON (" in error
    assert len(error.strip().splitlines()) == 1


@pytest.mark.slow
def test_native_reference_is_the_keras_network():
    """Same parameter counts, same logits with Keras's weights, same BN update."""
    # Keras's torch backend beside plain PyTorch, in a subprocess, checked
    # in the jax session, which has the lightest load of run-once checks.
    run_only_in_session("jax", "plain PyTorch beside Keras torch")
    run_under_backend(
        "torch",
        """
        import numpy as np
        import torch
        import keras
        from benchmarks import torch_reference
        from keras_cifar_resnet import ResNet18

        keras_model = ResNet18(batch_norm_momentum=0.9)
        module = torch_reference.TorchResNet("resnet18", batch_norm_momentum=0.9)
        trainable, moving = torch_reference.parameter_counts(module)
        assert trainable + moving == keras_model.count_params() == 11_184_778
        assert moving == 7_808, moving

        torch_reference.load_keras_weights(module, keras_model)
        images = np.random.default_rng(0).integers(
            0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
        def relative_error(training):
            module.train(training)
            with torch.no_grad():
                native = module(torch.from_numpy(images)).numpy()
            # Eager calls: no XLA compilation of ResNet18 under JAX in a unit test.
            ours = keras.ops.convert_to_numpy(
                keras_model(keras.ops.convert_to_tensor(images), training=training))
            return np.abs(native - ours).max() / np.abs(ours).max()

        error = relative_error(training=False)
        assert error < 1e-4, error
        # One training-mode forward: batch statistics (eps) and the moving
        # average (momentum convention) must move the same way.
        error = relative_error(training=True)
        assert error < 1e-3, error
        keras_mean = keras.ops.convert_to_numpy(
            keras_model.get_layer("stage3_block1_bn1").moving_mean)
        native_mean = module.blocks[4].bn1.running_mean.numpy()
        assert np.allclose(keras_mean, native_mean, rtol=1e-4, atol=1e-5)
        # The width multiplier rounds the same way in both.
        for width in (0.25, 0.3):
            narrow = torch_reference.TorchResNet("resnet18", width_multiplier=width)
            counts = sum(torch_reference.parameter_counts(narrow))
            assert counts == ResNet18(width_multiplier=width).count_params(), width
        print("ok")
        """,
        cwd=REPO,
    )


@pytest.mark.slow
def test_tiny_benchmark_run_and_report(tmp_path):
    """The benchmark files run end to end and the report reads their JSON."""
    backend = current_backend()
    output = tmp_path / f"benchmark-{backend}.json"
    run_command_under_backend(
        backend,
        [
            "-m",
            "pytest",
            "benchmarks/test_step_throughput.py",
            "-p",
            "no:cacheprovider",
            "-q",
            "--tiny",
            "--native",
            "eager",
            "--batch-norm",
            "both",
            f"--benchmark-json={output}",
        ],
        cwd=REPO,
        timeout=600,
    )

    records = {
        (b["extra_info"]["variant"], b["extra_info"]["function"]): b["extra_info"]
        for b in json.loads(output.read_text())["benchmarks"]
    }
    assert set(records) == {
        (f"keras-{backend}", "train"),
        (f"keras-{backend}", "inference"),
        (f"keras-{backend}-keras-bn", "train"),
        (f"keras-{backend}-keras-bn", "inference"),
        ("native-torch-eager", "train"),
        ("native-torch-eager", "inference"),
    }
    for record in records.values():
        assert record["images_per_second"] > 0
        assert record["first_step_s"] > 0
        assert record["peak_memory_mib"] > 0
        assert record["rounds"] == 1
    assert records[(f"keras-{backend}", "train")]["versions"]["keras"]

    assert report.main([str(tmp_path), "--command", "tiny"]) == 0
    table = (tmp_path / "table.md").read_text()
    row = next(
        line for line in table.splitlines() if line.startswith(f"| keras-{backend}")
    )
    ratio = row.split("|")[7].strip()
    keras_row = records[(f"keras-{backend}", "train")]
    native_row = records[("native-torch-eager", "train")]
    others = (keras_row["other_busy_cores"], native_row["other_busy_cores"])
    if abs(others[0] - others[1]) > report.OTHER_LOAD_BOUND:
        # The machine was busier during one row: the ratio is refused, said so.
        assert ratio == f"- (others busy {others[0]:.2f} vs {others[1]:.2f} cores)"
    else:
        assert float(ratio) > 0
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_seconds_to_reach_sums_epochs_until_the_first_epoch_at_threshold():
    log = [
        {"seconds": "10", "val_accuracy": "0.90"},
        {"seconds": "12", "val_accuracy": "0.945"},
        {"seconds": "11", "val_accuracy": "0.93"},
        {"seconds": "9", "val_accuracy": "0.951"},
    ]
    assert accuracy.seconds_to_reach(log, 0.94) == 22.0
    assert accuracy.seconds_to_reach(log, 0.95) == 42.0
    assert accuracy.seconds_to_reach(log, 0.96) is None
    assert (
        accuracy.seconds_to_reach([{"seconds": "5", "val_accuracy": ""}], 0.1) is None
    )


@pytest.mark.slow
def test_accuracy_run_records_what_the_training_command_wrote(tmp_path):
    """The real training command (tiny profile), read back into the record."""
    run_only_in_session(
        "tensorflow", "the record's reading does not depend on the backend trained"
    )
    backend = current_backend()
    run_command_under_backend(
        backend,
        [
            "-m",
            "benchmarks.accuracy",
            "--profile",
            "tiny",
            "--seeds",
            "2",
            "--first-seed",
            "3",
            "--output-dir",
            str(tmp_path),
        ],
        cwd=REPO,
        timeout=600,
    )
    for seed in (3, 4):
        record = json.loads(
            (tmp_path / f"accuracy-{backend}-seed{seed}.json").read_text()
        )
        run = tmp_path / f"accuracy-run-{backend}-seed{seed}"
        summary = json.loads((run / "summary.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert record["seed"] == config["config"]["seed"] == seed
        assert f"--seed {seed}" in record["command"]
        # The last epoch's model; the best-validation one labelled apart.
        assert record["test_model"] == "the last epoch's model"
        assert record["test_accuracy"] == summary["test"]["accuracy"]
        best = summary["best_validation"]
        assert record["best_validation_test_accuracy"] == best["test"]["accuracy"]
        assert record["backend"] == backend and record["model"] == "tiny"
        assert record["epochs"] == 1 and record["train_examples"] == 64
        assert record["versions"]["keras"] and record["machine"]["cpu"]
    rows, accuracy = report.load([str(tmp_path)])
    assert rows == [] and len(accuracy[(backend, "tiny", "tiny")]) == 2
    assert report.main([str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text()
    assert f"| {backend} | tiny | tiny |" in table and "| 2 | 3, 4 |" in table


@pytest.mark.slow
def test_native_accuracy_run_writes_the_same_records(tmp_path):
    """`accuracy.py --native`: plain PyTorch, the same files and record keys."""
    run_only_in_session("tensorflow", "plain PyTorch, in a subprocess")
    run_command_under_backend(
        "torch",
        [
            "-m",
            "benchmarks.accuracy",
            "--native",
            "--profile",
            "tiny",
            "--output-dir",
            str(tmp_path),
            "--",
            "--epochs",
            "2",
        ],
        cwd=REPO,
        timeout=600,
    )
    record = json.loads((tmp_path / "accuracy-native-torch.json").read_text())
    run = tmp_path / "accuracy-run-native-torch"
    summary = json.loads((run / "summary.json").read_text())
    assert record["backend"] == summary["backend"] == "native-torch"
    # TRAIN_FLAGS after `--` override the profile's.
    assert record["epochs"] == 2 and record["train_examples"] == 64
    assert record["test_accuracy"] == summary["test"]["accuracy"]
    assert set(summary["test"]) >= {"accuracy", "tta_accuracy", "loss"}
    with open(run / "log.csv", newline="") as file:
        assert tuple(csv.DictReader(file).fieldnames) == LOG_COLUMNS
    assert (run / "best.pt").is_file() and (run / "final.pt").is_file()
    assert summary["test_model"] == "the last epoch's model"
    assert summary["best_validation"]["chosen_on"] == "validation split"


def test_accuracy_cli_needs_a_backend(monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", "numpy")
    assert accuracy.main(["--profile", "tiny"]) == 2
    assert "set KERAS_BACKEND" in capsys.readouterr().err


class _Options:
    """A pytest config's `getoption` for the benchmark options, `--quick` given."""

    def __init__(self, **given):
        self.options = {
            "--tiny": False,
            "--quick": True,
            "--native": ("auto",),
            "--no-inference": False,
            "--jit-compile": "auto",
            "--batch-norm": "fused",
            "--conv": "both",
            **given,
        }

    def getoption(self, name):
        return self.options.get(name)


@pytest.mark.parametrize("native_bf16", [True, False, None])
def test_cpu_profile_leaves_out_bf16_only_without_native_bf16(monkeypatch, native_bf16):
    from benchmarks import harness
    from keras_cifar_resnet.training import precision_support

    monkeypatch.setattr(harness, "gpu_present", lambda framework=None: False)
    monkeypatch.setattr(precision_support, "cpu_has_native", lambda p: native_bf16)
    settings = benchmark_options.settings_from(_Options())
    assert settings.fused_convs == (True, False)
    if native_bf16 is False:
        assert settings.precisions == ("float32",)
        assert settings.native == (
            "eager",
            "channels_last",
            "compiled-eager",
            "compiled-channels_last",
        )
        assert "no native bf16" in settings.skipped
    else:
        assert settings.precisions == ("float32", "mixed")
        assert "channels_last-bf16" in settings.native
        assert "compiled-eager-bf16" in settings.native
        assert settings.skipped == ""
    # Asked for by name, bf16 runs anyway.
    explicit = benchmark_options.settings_from(
        _Options(**{"--precisions": ("mixed",), "--native": ("eager-bf16",)})
    )
    assert explicit.precisions == ("mixed",) and explicit.native == ("eager-bf16",)
    assert explicit.skipped == ""


def test_jit_compile_both_times_keras_default_and_forced_compile_side_by_side():
    settings = benchmark_options.settings_from(_Options(**{"--jit-compile": "both"}))
    assert settings.jit_compiles == ("auto", "on")
    assert benchmark_options.keras_suffix(True, True, "on") == "-jit"
    assert benchmark_options.keras_suffix(False, True, "auto") == "-keras-bn"
