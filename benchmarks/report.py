"""Merges benchmark JSON from separate processes into one table and chart.

Each backend runs in its own process (KERAS_BACKEND is fixed per process),
so each writes its own pytest-benchmark JSON; the accuracy runs write
`accuracy-<backend>.json` (benchmarks/accuracy.py). This reads them all and
writes `table.md` (markdown) and `chart.png` (training images/s), printing
the table too.

    python -m benchmarks.report benchmark-results [--output-dir DIR]

Ratios are to native PyTorch eager at the same model, batch and precision
(float32: NCHW float32; mixed: NCHW bf16 autocast), from the same run; a
mixed-precision row also gives its gain over the same implementation at
float32 ("x own fp32").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# How each native variant's precision maps to the anchor of the ratios.
ANCHORS = {"float32": "native-torch-eager", "mixed": "native-torch-eager-bf16"}
ANCHOR_NAMES = {p: v.removeprefix("native-torch-") for p, v in ANCHORS.items()}
ORDER = ("keras-jax", "keras-tensorflow", "keras-torch")


def rows_from_benchmarks(benchmarks):
    """One flat row per benchmark that carries our `extra_info`."""
    rows = []
    for bench in benchmarks:
        info = dict(bench.get("extra_info") or {})
        if "variant" not in info:
            continue
        info.setdefault("name", bench.get("name"))
        rows.append(info)
    _add_ratios(rows)
    _add_precision_gains(rows)
    return rows


def _float32_variant(variant):
    # Native variants name their precision (eager-bf16); Keras rows do not.
    return variant.removesuffix("-bf16")


def _add_precision_gains(rows):
    float32_rows = {
        (r["function"], r["model"], r["batch_size"], r["variant"]): r
        for r in rows
        if r["precision"] == "float32" and r.get("images_per_second")
    }
    for row in rows:
        if row["precision"] != "mixed" or not row.get("images_per_second"):
            continue
        base = float32_rows.get(
            (
                row["function"],
                row["model"],
                row["batch_size"],
                _float32_variant(row["variant"]),
            )
        )
        if base:
            row["ratio_to_float32"] = (
                row["images_per_second"] / base["images_per_second"]
            )


def _add_ratios(rows):
    anchors = {
        (r["function"], r["model"], r["batch_size"], r["variant"]): r
        for r in rows
        if r.get("images_per_second")
    }
    for row in rows:
        anchor = anchors.get(
            (
                row["function"],
                row["model"],
                row["batch_size"],
                ANCHORS.get(row["precision"], ""),
            )
        )
        if anchor is None and row["function"] == "inference":
            # Native inference is timed for eager float32 only.
            anchor = anchors.get(
                (row["function"], row["model"], row["batch_size"], "native-torch-eager")
            )
        if anchor and row.get("images_per_second"):
            row["ratio_to_native"] = (
                row["images_per_second"] / anchor["images_per_second"]
            )
            row["ratio_anchor"] = anchor["variant"].removeprefix("native-torch-")


def _sort_key(row):
    variant = row["variant"]
    rank = ORDER.index(variant) if variant in ORDER else len(ORDER)
    return (
        row["function"] != "train",
        row["model"],
        row["batch_size"],
        row["precision"],
        rank,
        variant,
    )


def _fmt(value, spec, empty="-"):
    return empty if value is None else format(value, spec)


def format_rows(rows, accuracy=None):
    """Markdown tables: training, then inference, then accuracy."""
    accuracy = accuracy or {}
    lines = []
    for function, title in (("train", "Training step"), ("inference", "Inference")):
        chosen = sorted((r for r in rows if r["function"] == function), key=_sort_key)
        if not chosen:
            continue
        lines += [f"**{title}**", ""]
        header = (
            "implementation|model|batch|precision|images/s|ms/step (median, IQR)|"
            "x native eager|x own fp32|first call (s)|peak memory (MiB)|cores busy|"
            "images/CPU-s|load"
        ).split("|")
        if function == "train":
            header.append("test accuracy")
        lines.append("| " + " | ".join(header) + " |")
        lines.append(
            "|" + "|".join([" --- "] * 4 + [" ---: "] * (len(header) - 4)) + "|"
        )
        for r in chosen:
            ratio = r.get("ratio_to_native")
            ratio_text = "-" if ratio is None else f"{ratio:.3g}"
            if ratio is not None and r.get("ratio_anchor") != ANCHOR_NAMES.get(
                r["precision"]
            ):
                ratio_text += f" (vs {r['ratio_anchor']})"
            jit = " (jit)" if r.get("jit_compile") else ""
            cells = [
                r["variant"] + jit,
                r["model"],
                str(r["batch_size"]),
                r["precision"],
                _fmt(r.get("images_per_second"), ".1f"),
                (
                    f"{r['ms_per_step_median']:.1f} ± {r['ms_per_step_iqr']:.1f}"
                    if r.get("ms_per_step_median") is not None
                    else "-"
                ),
                ratio_text,
                _fmt(r.get("ratio_to_float32"), ".3g"),
                _fmt(r.get("first_step_s"), ".1f"),
                _fmt(r.get("peak_memory_mib"), ".0f")
                + ("*" if "so_far" in str(r.get("memory_kind")) else ""),
                _fmt(r.get("busy_cores"), ".2f"),
                _fmt(_per_cpu_second(r), ".1f"),
                _fmt(r.get("load_average_1min"), ".1f"),
            ]
            if function == "train":
                acc = accuracy.get((r["backend"], r["model"]))
                cells.append(
                    "-"
                    if acc is None or acc.get("test_accuracy") is None
                    else f"{acc['test_accuracy']:.4f}"
                )
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if accuracy:
        lines += [
            "**Accuracy** (default recipe; `profile` says how far it ran)",
            "",
            "| backend | model | device | profile | epochs | train images | "
            "test accuracy | to 94% | to 95% | wall (s) |",
            "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for (backend, model), a in sorted(accuracy.items()):
            lines.append(
                f"| {backend} | {model} | {a.get('device', '-')} | "
                f"{a.get('note') or a.get('profile', '-')} | {a.get('epochs', '-')} | "
                f"{a.get('train_examples') or '-'} | "
                f"{_fmt(a.get('test_accuracy'), '.4f')} | "
                f"{_time_to(a.get('seconds_to_94'))} | "
                f"{_time_to(a.get('seconds_to_95'))} | "
                f"{_fmt(a.get('wall_seconds'), '.0f')} |"
            )
        lines.append("")
    return lines


def _per_cpu_second(row):
    """images/s over cores busy: throughput per CPU-second actually obtained.

    On a CPU shared with other processes a run gets only part of the cores;
    this figure is far less sensitive to that than images/s (threads that
    spin while waiting still count as busy, so it is a lower bound).
    """
    if not row.get("images_per_second") or not row.get("busy_cores"):
        return None
    return row["images_per_second"] / row["busy_cores"]


def _time_to(seconds):
    return "not reached" if seconds is None else f"{seconds:.0f} s"


def environment_lines(rows):
    """Hardware, versions and date, from the rows' own records."""
    lines = []
    seen = set()
    for r in rows:
        backend = r["backend"]
        if backend in seen:
            continue
        seen.add(backend)
        versions = ", ".join(f"{k} {v}" for k, v in sorted(r["versions"].items()))
        threads = ", ".join(f"{k}={v}" for k, v in sorted(r["threading"].items()))
        native_bf16 = r.get("cpu_native_bf16")
        bf16 = (
            ""
            if native_bf16 is None
            else f" (CPU native bf16: {'yes' if native_bf16 else 'no'})"
        )
        lines.append(
            f"- {backend}: {r['device']}{bf16}; {versions}; {r['date']}"
            + (f"; threads: {threads}" if threads else "")
        )
    return lines


def _json_contents(paths):
    """The parsed JSON of each file given and of each folder's *.json."""
    for path in map(Path, paths):
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            yield json.loads(file.read_text())


def load(paths):
    """(benchmark rows, accuracy by (backend, model)) from files and folders."""
    benchmarks, accuracy = [], {}
    for data in _json_contents(paths):
        if isinstance(data, dict) and "benchmarks" in data:
            benchmarks += data["benchmarks"]
        elif isinstance(data, dict) and data.get("kind") == "accuracy":
            accuracy[(data["backend"], data["model"])] = data
    return rows_from_benchmarks(benchmarks), accuracy


def skipped_notes(paths):
    """What the benchmark runs in `paths` left out of their profile, and why."""
    notes = []
    for data in _json_contents(paths):
        if isinstance(data, dict) and "benchmarks" in data:
            skipped = (data.get("machine_info") or {}).get("skipped")
            if skipped and skipped not in notes:
                notes.append(skipped)
    return notes


def chart(rows, path):
    """Horizontal bars of training images/s, one group per configuration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = sorted(
        (r for r in rows if r["function"] == "train" and r.get("images_per_second")),
        key=_sort_key,
    )
    if not train:
        return None
    labels = [
        f"{r['model']} b{r['batch_size']} {r['precision']}  {r['variant']}"
        for r in train
    ]
    values = [r["images_per_second"] for r in train]
    colours = [
        "#4c72b0" if r["implementation"] == "keras" else "#dd8452" for r in train
    ]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(train) + 1.5))
    bars = ax.barh(range(len(train)), values, color=colours)
    ax.set_yticks(range(len(train)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training images/s (higher is better)")
    devices = sorted({r["device"] for r in train})
    ax.set_title(
        "Training-step throughput: Keras backends (blue) vs native "
        f"PyTorch (orange)\n{'; '.join(devices)}",
        fontsize=9,
    )
    for bar, row in zip(bars, train, strict=True):
        value = row["images_per_second"]
        text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
        if row.get("ratio_to_native") is not None and row["implementation"] == "keras":
            text += f"  ({row['ratio_to_native']:.3g}x)"
        ax.text(
            bar.get_width(),
            bar.get_y() + bar.get_height() / 2,
            " " + text,
            va="center",
            fontsize=7,
        )
    ax.set_xlim(0, max(values) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Merge benchmark JSON files (pytest-benchmark output and "
        "accuracy-*.json) into a markdown table and a PNG chart.",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="PATH",
        help="JSON files, or folders whose *.json are read.",
    )
    parser.add_argument(
        "--output-dir",
        metavar="DIR",
        default=None,
        help="where table.md and chart.png go (default: the "
        "first folder given, else the first file's folder).",
    )
    parser.add_argument(
        "--command",
        default=None,
        help="the command that produced the figures, recorded in table.md.",
    )
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        print(
            f"report.py: no such file or folder: {', '.join(missing)}", file=sys.stderr
        )
        return 2
    rows, accuracy = load(args.inputs)
    if not rows and not accuracy:
        print(
            f"report.py: no benchmark figures found in {', '.join(args.inputs)}",
            file=sys.stderr,
        )
        return 2
    first = Path(args.inputs[0])
    output_dir = Path(args.output_dir or (first if first.is_dir() else first.parent))
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = format_rows(rows, accuracy)
    notes = skipped_notes(args.inputs)
    lines += [f"Note: {note}." for note in notes] + ([""] if notes else [])
    lines += ["Environment:", ""] + environment_lines(rows)
    if args.command:
        lines += ["", f"Command: `{args.command}`"]
    lines += [
        "",
        "Ratios: images/s over native PyTorch eager (NCHW) at the same "
        "model, batch and precision, measured in the same run. `*`: peak "
        "so far in the process (cannot be reset). First call: build, "
        "compile (trace/jit) and one step. Cores busy: process CPU seconds "
        "per wall second while timed; images/CPU-s: images/s over that (on a "
        "shared CPU, steadier than images/s); load: the machine's 1-minute "
        "load average then.",
    ]
    table = output_dir / "table.md"
    table.write_text("\n".join(lines) + "\n")
    png = chart(rows, output_dir / "chart.png")
    print("\n".join(lines))
    print(f"\nwrote {table}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
