"""The GPU run's results folder: file names, how each is written, the table.

    <results>/
        run-log.txt        everything the run printed (run.sh tees it)
        stages/<stage>.json  each stage's own output: pytest-benchmark JSON,
                           or an accuracy record (benchmarks/accuracy.py's,
                           plus the per-epoch curve)
        runs/<stage>/      the accuracy runs' folders (train's output)
        report/            benchmarks/report.py's table.md and chart.png
        gpu-run.json       the plan, every stage's outcome and decision, and
                           the content of every stage file: what comes back
        <card>-<date>.md   the headline, throughput table and stage table

At most 8 files come back from the device machine ($OUT), so the stage
files travel inside gpu-run.json; `unpack` writes them out again:

    python benchmarks/gpu/results.py unpack gpu-run.json DIR
    python benchmarks/report.py DIR
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

STAGES_DIR = "stages"
RUNS_DIR = "runs"
REPORT_DIR = "report"
RECORD_NAME = "gpu-run.json"
LOG_NAME = "run-log.txt"
CHART_NAME = "chart.png"
# What the device tool brings back: at most 8 files of 16 MiB each.
OUT_FILE_LIMIT = 8
OUT_BYTES_LIMIT = 15 * 2**20
BENCHMARKS = Path(__file__).resolve().parent.parent

# Published ResNet18 CIFAR-10 test accuracies (200 epochs, batch 128, step
# schedule), the figures the full recipe is put beside.
PUBLISHED = (
    "kuangliu/pytorch-cifar ResNet18 93.02% (crop + flip); DeVries & Taylor, "
    "*Improved Regularization of Convolutional Neural Networks with Cutout* "
    "(2017), ResNet18 95.28% (crop + flip) and 96.01% (crop + flip + 16x16 "
    "cutout), means of 5 runs"
)


_MODULES = {}


def _benchmarks_module(name):
    """benchmarks/<name>.py (`accuracy`, `report`), loaded by path: reused, not
    repeated, and without putting benchmarks/ on sys.path (its conftest.py)."""
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(
            f"_gpu_run_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[name] = module
    return _MODULES[name]


def write_json(path, data):
    """Writes JSON atomically: a reader sees the old file or the new, whole."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w") as file:
        json.dump(data, file, indent=2)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def write_text(path, text):
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def read_curve(log_csv):
    """The train command's log.csv as a list of per-epoch dicts (1-based epochs)."""
    path = Path(log_csv)
    if not path.exists():
        return []
    curve = []
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            point = {"epoch": int(row["epoch"]) + 1}
            for key in ("loss", "accuracy", "val_accuracy", "learning_rate", "seconds"):
                value = row.get(key)
                point[key] = float(value) if value not in (None, "") else None
            curve.append(point)
    return curve


def step_figure(path):
    """The probe's median step, first call and device from its JSON, or None."""
    try:
        benchmarks = json.loads(Path(path).read_text())["benchmarks"]
        info = benchmarks[0]["extra_info"]
        return {
            "step_s": round(info["ms_per_step_median"] / 1000, 5),
            "first_step_s": round(info["first_step_s"], 2),
            "device": info.get("device"),
        }
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def accuracy_record(
    run_dir, backend, *, model, precision, planned_epochs, wall_seconds, device, stopped
):
    """accuracy.py's record plus the curve, or one built from log.csv alone.

    A run stopped at its limit has no summary.json and accuracy.py wrote no
    record: its epochs, curve and time to 94%/95% still come from log.csv.
    """
    accuracy = _benchmarks_module("accuracy")
    written = Path(run_dir) / f"accuracy-{backend}.json"
    log_csv = Path(run_dir) / f"accuracy-run-{backend}" / "log.csv"
    curve = read_curve(log_csv)
    if written.exists() and not stopped:
        record = json.loads(written.read_text())
    elif curve:
        rows = [
            {"seconds": str(p["seconds"]), "val_accuracy": p["val_accuracy"] or ""}
            for p in curve
        ]
        record = {
            "kind": "accuracy",
            "backend": backend,
            "model": model,
            "profile": "gpu",
            "device": device,
            "epochs": len(curve),
            "test_accuracy": None,
            "test_accuracy_flip_tta": None,
            "best_validation_accuracy": max(
                (p["val_accuracy"] for p in curve if p["val_accuracy"] is not None),
                default=None,
            ),
            "train_seconds": sum(p["seconds"] or 0 for p in curve),
            "wall_seconds": wall_seconds,
            "run_dir": str(log_csv.parent),
        }
        for threshold in accuracy.THRESHOLDS:
            record[f"seconds_to_{round(threshold * 100)}"] = accuracy.seconds_to_reach(
                rows, threshold
            )
    else:
        return None
    record["precision"] = precision
    record["planned_epochs"] = planned_epochs
    record["curve"] = curve
    record["note"] = (
        f"stopped after {len(curve)} of {planned_epochs} epochs (schedule of "
        f"{planned_epochs}); no test figure"
        if stopped
        else f"default recipe, {planned_epochs} epochs (cosine schedule fitted to it)"
    )
    return record


def throughput_lines(stages_dir):
    """benchmarks/report.py's throughput table of the stage files so far."""
    report = _benchmarks_module("report")
    try:
        rows, _ = report.load([str(stages_dir)])
    except (OSError, ValueError, KeyError) as err:
        return [f"(no table: {err})", ""]
    if not rows:
        return ["No throughput figure yet.", ""]
    return (
        report.format_rows(rows)
        + ["Environment:", ""]
        + report.environment_lines(rows)
        + [""]
    )


def result_name(card, day):
    return f"{card}-{day}.md"


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _seconds(value):
    return "not reached" if value is None else f"{value:.0f} s"


def accuracy_lines(records, recipe_epochs):
    """The headline: each accuracy stage's figures, then the published ones."""
    if not records:
        return ["No accuracy run finished in this run (see the stages below).", ""]
    lines = [
        "| stage | backend | precision | epochs | test accuracy | with flip TTA | "
        "best validation | to 94% val | to 95% val | training (s) | wall (s) |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage, record in records.items():
        epochs = f"{record.get('epochs', 0)} of {record.get('planned_epochs', '?')}"
        lines.append(
            f"| {stage} | {record['backend']} | {record.get('precision', '-')} | "
            f"{epochs} | {_percent(record.get('test_accuracy'))} | "
            f"{_percent(record.get('test_accuracy_flip_tta'))} | "
            f"{_percent(record.get('best_validation_accuracy'))} | "
            f"{_seconds(record.get('seconds_to_94'))} | "
            f"{_seconds(record.get('seconds_to_95'))} | "
            f"{_fmt(record.get('train_seconds'))} | "
            f"{_fmt(record.get('wall_seconds'))} |"
        )
    lines.append("")
    for stage, record in records.items():
        if record.get("note"):
            lines.append(f"- {stage}: {record['note']}.")
    lines.append("")
    main = records.get("accuracy")
    full = (
        main is not None
        and main.get("test_accuracy") is not None
        and main.get("planned_epochs") == recipe_epochs
        and main.get("model") == "resnet18"
    )
    if full:
        lines.append(f"The full recipe ({recipe_epochs} epochs), beside: {PUBLISHED}.")
    else:
        lines.append(
            f"Not the full recipe ({recipe_epochs} epochs of ResNet18), so not "
            f"comparable with the published figures ({PUBLISHED})."
        )
    lines.append("")
    return lines + same_epoch_lines(records)


def same_epoch_lines(records, most_rows=12):
    """Validation accuracy of two runs on the same schedule, epoch by epoch."""
    runs = {
        r["backend"]: {p["epoch"]: p.get("val_accuracy") for p in r.get("curve", [])}
        for r in records.values()
    }
    if len(runs) < 2 or len({r.get("planned_epochs") for r in records.values()}) > 1:
        return []
    common = sorted(set.intersection(*(set(c) for c in runs.values())))
    if not common:
        return []
    step = max(1, -(-len(common) // most_rows))
    shown = common[::step]
    if shown[-1] != common[-1]:
        shown.append(common[-1])
    backends = sorted(runs)
    lines = [
        "Validation accuracy at the same epoch, same schedule on both backends:",
        "",
        "| epoch | " + " | ".join(backends) + " |",
        "| ---: |" + " ---: |" * len(backends),
    ]
    for epoch in shown:
        cells = [_percent(runs[b].get(epoch)) for b in backends]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    return lines + [""]


def _fmt(value, spec=".0f"):
    return "-" if value is None else format(value, spec)


def stage_lines(outcomes):
    lines = [
        "| stage | job | status | seconds | limit (s) |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for o in outcomes:
        status = o["status"] + (f": {o['detail']}" if o.get("detail") else "")
        lines.append(
            f"| {o['name']} | {o['job']} | {status} | {_fmt(o.get('seconds'))} | "
            f"{_fmt(o.get('limit_s'))} |"
        )
    return lines + [""]


def markdown(record, throughput_lines, recipe_epochs):
    """The result file: headline, throughput table, stages and decisions."""
    title = record["card_name"]
    lines = [
        f"# {title}, {record['day']} ({record['profile']} profile)",
        "",
        f"Produced by `{record['command']}` in {record['elapsed_s']:.0f} s "
        f"(deadline {record['deadline_s']:.0f} s).",
        "",
        "## Accuracy: the default recipe",
        "",
        *accuracy_lines(record["accuracy"], recipe_epochs),
        "## Training-step throughput",
        "",
        *throughput_lines,
        "## Stages",
        "",
        *stage_lines(record["stages"]),
    ]
    for key, value in record["decisions"].items():
        lines.append(f"- {key}: {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def copy_to_out(out_dir, paths):
    """Copies what comes back through $OUT; never more than the tool brings."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [Path(p) for p in paths if p is not None and Path(p).exists()]
    if len(paths) > OUT_FILE_LIMIT:
        raise ValueError(
            f"at most {OUT_FILE_LIMIT} files come back. Received: {len(paths)}"
        )
    for path in paths:
        target = out_dir / path.name
        if path.stat().st_size <= OUT_BYTES_LIMIT:
            shutil.copyfile(path, target)
        else:
            # A file over 16 MiB would not come back at all: keep its end.
            with open(path, "rb") as source, open(target, "wb") as sink:
                source.seek(-OUT_BYTES_LIMIT, os.SEEK_END)
                sink.write(source.read())


def unpack(record_path, directory):
    """Writes the stage files held in gpu-run.json into `directory`."""
    record = json.loads(Path(record_path).read_text())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in record.get("files", {}).items():
        write_json(directory / name, content)
    return sorted(record.get("files", {}))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/gpu/results.py",
        description="Write the stage files kept in a GPU run's gpu-run.json "
        "back out, for benchmarks/report.py.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("unpack", help="gpu-run.json -> DIR/<stage>.json")
    command.add_argument("record", help="the gpu-run.json that came back")
    command.add_argument("directory", help="folder to write the stage files to")
    args = parser.parse_args(argv)
    names = unpack(args.record, args.directory)
    print(f"results.py: wrote {len(names)} files to {args.directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
