"""Merges the benchmarks' JSON (one file per process) into `table.md` and `chart.png`.

    python -m benchmarks.report benchmark-results [--output-dir DIR]

What each column means, and the ratios' anchors: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.statistics import CONFIDENCE, mean_interval, welch_difference

# The native variant each precision's ratios are to (`native-torch-<anchor>`).
ANCHORS = {"float32": "eager", "mixed": "eager-bf16"}
ORDER = ("keras-jax", "keras-tensorflow", "keras-torch")
# A ratio compares two rows only when the other processes on the machine kept
# about as many cores busy during both (harness.CPUUse.other_busy_cores).
OTHER_LOAD_BOUND = 0.25
# A row slower than this share of the same row in the last results of the
# same machine kind is marked as a step back.
REGRESSION_BOUND = 0.95
RESULTS = Path(__file__).resolve().parent / "results"
ACCURACY_ORDER = ("jax", "tensorflow", "torch", "native-torch")
ACCURACY_REFERENCE = "native-torch"
LEVEL = f"{CONFIDENCE:.0%}"
# The summaries' names; a Keras row `keras-<backend>` takes its backend's.
SUMMARY_NAMES = {
    "jax": "Keras, JAX",
    "tensorflow": "Keras, TensorFlow",
    "torch": "Keras, torch",
    "native-torch": "native PyTorch, same initial weights",
    "native-torch-eager": "native PyTorch, eager NCHW",
    "native-torch-channels_last": "native PyTorch, channels_last",
    "native-torch-compiled-channels_last": "native PyTorch, compiled channels_last",
}
THROUGHPUT_HEADER = (
    "implementation|model|batch|precision|images/s|ms/step (median, IQR)|"
    "x native eager|x own fp32|first call (s)|peak memory (MiB)|cores busy|"
    "images/CPU-s|others busy|load"
)
FOOTNOTE = (
    "Ratios: images/s over native PyTorch eager (NCHW) at the same "
    "model, batch and precision, measured in the same run. `*`: peak "
    "so far in the process (cannot be reset). First call: build, "
    "compile (trace/jit) and one step. Cores busy: process CPU seconds "
    "per wall second while timed; images/CPU-s: images/s over that (on a "
    "shared CPU, steadier than images/s); others busy: cores the "
    "machine's other processes kept busy while timed; a ratio is refused "
    "(-, with both figures) where the two rows' differ by more than "
    f"{OTHER_LOAD_BOUND} cores; load: the machine's 1-minute load average "
    "then."
)


def table(title, header, aligns, rows):
    """A titled markdown table, or nothing without rows: `header` is
    `|`-separated, `aligns` an `l` or `r` per column (`r` past its end)."""
    if not rows:
        return []
    header = header.split("|")
    rule = "|".join(
        " ---: " if a == "r" else " --- " for a in aligns.ljust(len(header), "r")
    )
    cells = ["| " + " | ".join(map(str, row)) + " |" for row in [header, *rows]]
    return [title, "", cells[0], f"|{rule}|", *cells[1:], ""]


def _key(row, variant=None, precision=None):
    """A row's configuration: function, model, batch, variant and precision."""
    variant, precision = variant or row["variant"], precision or row["precision"]
    return (row["function"], row["model"], row["batch_size"], variant, precision)


def rows_from_benchmarks(benchmarks):
    """One flat row per benchmark that carries our `extra_info`, with its ratios."""
    rows = [
        {"name": bench.get("name"), **bench["extra_info"]}
        for bench in benchmarks
        if "variant" in (bench.get("extra_info") or {})
    ]
    timed = {_key(r): r for r in rows if r.get("images_per_second")}
    for row in rows:
        speed, precision = row.get("images_per_second"), row["precision"]
        if not speed:
            continue
        # Native variants name their precision (eager-bf16); Keras rows do not.
        own = timed.get(_key(row, row["variant"].removesuffix("-bf16"), "float32"))
        if own and precision == "mixed":
            row["ratio_to_float32"] = speed / own["images_per_second"]
        anchor = timed.get(_key(row, f"native-torch-{ANCHORS.get(precision)}"))
        if anchor is None and row["function"] == "inference":
            # Native inference is timed for eager float32 only.
            anchor = timed.get(_key(row, "native-torch-eager", "float32"))
        if not anchor:
            continue
        others = (row.get("other_busy_cores"), anchor.get("other_busy_cores"))
        if None not in others and abs(others[0] - others[1]) > OTHER_LOAD_BOUND:
            row["ratio_refused"] = (
                f"others busy {others[0]:.2f} vs {others[1]:.2f} cores"
            )
        else:
            row["ratio_to_native"] = speed / anchor["images_per_second"]
            row["ratio_anchor"] = anchor["variant"].removeprefix("native-torch-")
    return rows


def _sort_key(row):
    variant = row["variant"]
    rank = ORDER.index(variant) if variant in ORDER else len(ORDER)
    function, model, batch, _, precision = _key(row)
    return (function != "train", model, batch, precision, rank, variant)


def _fmt(value, spec, empty="-"):
    return empty if value is None else format(value, spec)


def _ratio_text(r):
    ratio = r.get("ratio_to_native")
    text = "-" if ratio is None else f"{ratio:.3g}"
    if r.get("ratio_refused"):
        text = f"- ({r['ratio_refused']})"
    if ratio is not None and r.get("ratio_anchor") != ANCHORS.get(r["precision"]):
        text += f" (vs {r['ratio_anchor']})"
    return text


def _throughput_cells(r, accuracy):
    median, speed, cores = (
        r.get(k) for k in ("ms_per_step_median", "images_per_second", "busy_cores")
    )
    cells = [
        r["variant"] + (" (jit)" if r.get("jit_compile") else ""),
        r["model"],
        r["batch_size"],
        r["precision"],
        _fmt(speed, ".1f"),
        "-" if median is None else f"{median:.1f} ± {r['ms_per_step_iqr']:.1f}",
        _ratio_text(r),
        _fmt(r.get("ratio_to_float32"), ".3g"),
        _fmt(r.get("first_step_s"), ".1f"),
        _fmt(r.get("peak_memory_mib"), ".0f")
        + ("*" if "so_far" in str(r.get("memory_kind")) else ""),
        _fmt(cores, ".2f"),
        # images/s over cores busy: on a shared CPU, steadier than images/s.
        _fmt(speed / cores if speed and cores else None, ".1f"),
        _fmt(r.get("other_busy_cores"), ".2f"),
        _fmt(r.get("load_average_1min"), ".1f"),
    ]
    if r["function"] != "train":
        return cells
    # The training rows end with the implementation's mean test accuracy.
    figures = [
        figure
        for (backend, model, _), runs in accuracy.items()
        if (backend, model) == (r["backend"], r["model"])
        for figure in _figures(runs)
    ]
    return cells + [f"{sum(figures) / len(figures):.4f}" if figures else "-"]


def format_rows(rows, accuracy=None):
    """Markdown tables: training, then inference, then accuracy."""
    accuracy = accuracy or {}
    lines = []
    for function, title in (("train", "Training step"), ("inference", "Inference")):
        chosen = sorted((r for r in rows if r["function"] == function), key=_sort_key)
        header = THROUGHPUT_HEADER + ("|test accuracy" if function == "train" else "")
        cells = [_throughput_cells(r, accuracy) for r in chosen]
        lines += table(f"**{title}**", header, "llll", cells)
    return lines + (accuracy_lines(accuracy) if accuracy else [])


def _figures(runs, key="test_accuracy"):
    return [run[key] for run in runs if run.get(key) is not None]


def _interval_of(runs, key):
    figures = _figures(runs, key)
    return mean_interval(figures) if figures else None


def _estimate(interval, points=False):
    """`69.12% ± 0.85%` (mean ± the interval's half-width), or a difference
    `+0.50 points ± 1.20`; the mean alone where there is no interval."""
    if interval is None:
        return "-"
    scale, spec, unit = (100, ".2f", " points") if points else (1, ".2%", "")
    text = format(interval.mean * scale, ("+" if points else "") + spec) + unit
    half = interval.half_width
    return text if half is None else f"{text} ± {half * scale:{spec}}"


def _time_to(seconds):
    return "not reached" if seconds is None else f"{seconds:.0f} s"


def _accuracy_keys(accuracy):
    def order(key):
        backend, model, profile = key
        rank = ACCURACY_ORDER.index(backend) if backend in ACCURACY_ORDER else 9
        return (model, profile, rank, backend)

    return sorted(accuracy, key=order)


def _difference(accuracy, key, figure="test_accuracy"):
    """`key`'s runs minus native PyTorch's on `figure` (Welch), or None."""
    backend, model, profile = key
    reference = accuracy.get((ACCURACY_REFERENCE, model, profile))
    if backend == ACCURACY_REFERENCE or not reference:
        return None
    ours, theirs = _figures(accuracy[key], figure), _figures(reference, figure)
    return welch_difference(ours, theirs) if ours and theirs else None


def accuracy_lines(accuracy):
    """Per implementation: n, mean, sd and 95% interval over seeds; differences."""
    rows = []
    for key in _accuracy_keys(accuracy):
        runs = sorted(
            accuracy[key], key=lambda r: (r.get("seed") is None, r.get("seed"))
        )
        plain = _interval_of(runs, "test_accuracy")
        walls = sorted(_figures(runs, "wall_seconds"))
        rows.append(
            [
                *key,
                runs[0].get("device", "-"),
                len(runs),
                ", ".join(_fmt(r.get("seed"), "") for r in runs),
                _estimate(plain),
                "-" if plain is None or plain.sd is None else f"{plain.sd:.2%}",
                _estimate(_interval_of(runs, "test_accuracy_flip_tta")),
                _estimate(_interval_of(runs, "best_validation_test_accuracy")),
                *(_time_to(runs[0].get(f"seconds_to_{t}")) for t in (94, 95)),
                _fmt(walls[len(walls) // 2] if walls else None, ".0f"),
            ]
        )
    return [
        *table(
            f"**Accuracy over seeds**: test accuracy of the last epoch's model, mean "
            f"± the {LEVEL} interval (Student's t), flip TTA beside it; the "
            "best-validation model's (chosen on the validation split only) apart",
            f"implementation|model|profile|device|n|seeds|mean ± {LEVEL}|sd|"
            f"flip TTA mean ± {LEVEL}|best-validation model|to 94%|to 95%|"
            "wall (s, median)",
            "llllrl",
            rows,
        ),
        *difference_lines(accuracy),
    ]


def difference_lines(accuracy):
    """Each implementation minus native PyTorch, with Welch's interval, in words."""
    rows, differences = [], []
    for key in _accuracy_keys(accuracy):
        difference = _difference(accuracy, key)
        if difference is None:
            continue
        differences.append((key[0], difference))
        if difference.half_width is None:
            verdict = "cannot tell: needs 2 or more runs on each side"
        elif difference.excludes_zero():
            verdict = "yes: the interval excludes 0"
        else:
            verdict = "no: the interval contains 0"
        reference = accuracy[(ACCURACY_REFERENCE, *key[1:])]
        rows.append(
            [
                *key,
                f"{len(accuracy[key])} vs {len(reference)}",
                _estimate(difference, points=True),
                _estimate(_difference(accuracy, key, "test_accuracy_flip_tta"), True),
                verdict,
            ]
        )
    if not rows:
        return []
    apart = [(b, i) for b, i in differences if i.excludes_zero()]
    if any(i.half_width is None for _, i in differences):
        summary = (
            "Some implementations have a single run: at n = 1 no difference "
            "can be told from seed noise."
        )
    elif apart:
        summary = (
            "At this n, "
            + "; ".join(
                f"{b} differs from native PyTorch by {_estimate(i, points=True)}"
                for b, i in apart
            )
            + f" ({LEVEL} interval excludes 0); the others cannot be told apart."
        )
    else:
        summary = (
            f"At this n no implementation can be told apart from native PyTorch: "
            f"every {LEVEL} interval of the difference contains 0."
        )
    return [
        *table(
            f"**Difference from native PyTorch** (test accuracy, last epoch's model; "
            f"mean difference ± Welch's {LEVEL} interval)",
            "implementation|model|profile|n|difference|flip TTA difference|"
            "distinguishable?",
            "llllrrl",
            rows,
        ),
        summary,
        "",
    ]


def _summary_name(name):
    return SUMMARY_NAMES.get(name.removeprefix("keras-"), name)


def summary_accuracy_lines(accuracy):
    """The accuracy in short, a row per implementation: the README's table."""
    rows = [
        [
            _summary_name(key[0]),
            len(accuracy[key]),
            _estimate(_interval_of(accuracy[key], "test_accuracy")),
            _estimate(_interval_of(accuracy[key], "test_accuracy_flip_tta")),
            _estimate(_difference(accuracy, key), points=True),
        ]
        for key in _accuracy_keys(accuracy)
    ]
    header = (
        f"implementation|n|test accuracy, mean ± {LEVEL}|flip TTA|"
        "difference from native PyTorch"
    )
    return table("**Summary: accuracy**", header, "l", rows)


def summary_throughput_lines(rows):
    """Training images/s at float32 and bf16, a row per implementation."""
    by_variant = {}
    for r in sorted(rows, key=_sort_key):
        if r["function"] == "train" and r.get("images_per_second"):
            key = (r["model"], r["batch_size"], r["variant"].removesuffix("-bf16"))
            by_variant.setdefault(key, {})[r["precision"]] = r
    cells = []
    for (model, batch, variant), rows_of in by_variant.items():
        single, mixed = rows_of.get("float32") or {}, rows_of.get("mixed") or {}
        jit = " (jit)" if (single or mixed).get("jit_compile") else ""
        cells.append(
            [
                _summary_name(variant) + jit,
                model,
                batch,
                _fmt(single.get("images_per_second"), ".1f"),
                _ratio_text(single) if single else "-",
                _fmt(mixed.get("images_per_second"), ".1f"),
                _ratio_text(mixed) if mixed else "-",
                _fmt(mixed.get("ratio_to_float32"), ".3g"),
            ]
        )
    header = (
        "implementation|model|batch|float32 images/s|x native eager|"
        "bf16 images/s|x native eager bf16|x own fp32"
    )
    return table("**Summary: training throughput**", header, "ll", cells)


def _joined(mapping):
    return ", ".join(f"{k} {v}" for k, v in sorted((mapping or {}).items()))


def environment_lines(rows):
    """Hardware, versions and date, from the first row of each backend."""
    lines, first_rows = [], {}
    for r in rows:
        first_rows.setdefault(r["backend"], r)
    for r in first_rows.values():
        bf16 = r.get("cpu_native_bf16")
        bf16 = "" if bf16 is None else f" (CPU native bf16: {'yes' if bf16 else 'no'})"
        threads = ", ".join(f"{k}={v}" for k, v in sorted(r["threading"].items()))
        lines.append(
            f"- {r['backend']}: {r['device']}{bf16}; {_joined(r['versions'])}; "
            f"{r['date']}" + (f"; threads: {threads}" if threads else "")
        )
    return lines


def recorded_environment_lines(records):
    """The machines and versions accuracy and interleaved runs recorded, once each."""
    lines = []
    for run in records:
        machine = run.get("machine") or {}
        bf16 = machine.get("native_bf16")
        versions = _joined(run.get("versions"))
        lines.append(
            f"- {run['kind']} runs: {machine.get('cpu') or run.get('device', '-')}"
            + ("" if bf16 is None else f" (native bf16: {', '.join(bf16) or 'no'})")
            + (f"; {versions}" if versions else "")
        )
    return list(dict.fromkeys(lines))


def last_results_of_machine(rows, results=RESULTS, exclude=()):
    """(folder, its rows): the newest earlier results measured on the same device.

    The device string names the machine kind (CPU model and cores, or GPU).
    Folders in `exclude` (the run being reported) are passed over.
    """
    devices = {r["device"] for r in rows if r.get("device")}
    # Only results from before this run's first row count as "last".
    before = min((r.get("date", "") for r in rows), default="") or "~"
    newest = (None, [], "")
    excluded = {Path(p).resolve() for p in exclude}
    for folder in sorted(p for p in Path(results).glob("*") if p.is_dir()):
        if folder.resolve() in excluded:
            continue
        same = [r for r in load([folder])[0] if r.get("device") in devices]
        date = max((r.get("date", "") for r in same), default="")
        if same and newest[2] < date < before:
            newest = (folder, same, date)
    return newest[:2]


def mark_regressions(rows, baseline_rows, bound=REGRESSION_BOUND):
    """Marks each row slower than `bound` times the same row of the baseline."""
    baseline = {_key(r): r for r in baseline_rows if r.get("images_per_second")}
    for row in rows:
        before = baseline.get(_key(row))
        if before and row.get("images_per_second"):
            row["share_of_last"] = (
                row["images_per_second"] / before["images_per_second"]
            )
    return [r for r in rows if r.get("share_of_last", bound) < bound]


def regression_lines(rows, folder, marked):
    if folder is None:
        return [
            "Against the last results of this machine kind: none recorded in "
            "benchmarks/results, so nothing to compare.",
            "",
        ]
    compared = sum(1 for r in rows if "share_of_last" in r)
    lost = f"lost more than {1 - REGRESSION_BOUND:.0%}"
    return [
        f"Against the last results of this machine kind ({folder.name}): "
        f"{compared} rows compared; "
        + (f"{len(marked)} {lost}:" if marked else f"none {lost}."),
        *(
            f"- {r['variant']} {r['model']} b{r['batch_size']} {r['precision']} "
            f"{r['function']}: {r['share_of_last']:.2f}x its last figure"
            for r in marked
        ),
        "",
    ]


def _mean_with_interval(ratio):
    """An interleaved ratio's `mean ± half width`, or "-" where no round was quiet."""
    if ratio["mean"] is None:
        return "-"
    half = ratio.get("half_width")
    return f"{ratio['mean']:.3f}" + ("" if half is None else f" ± {half:.3f}")


def ratio_summary(ratio, rounds):
    """One interleaved ratio in words: its median and mean over the quiet rounds."""
    used = ratio.get("rounds_used", rounds)
    if ratio["median"] is None:
        return f"no round was quiet (others kept > {OTHER_LOAD_BOUND} cores busy)"
    return (
        f"median {ratio['median']:.3f}, mean {_mean_with_interval(ratio)} "
        f"({used} of {rounds} rounds quiet)"
    )


def interleaved_lines(records):
    """Each interleaved run's ratios, and every implementation's ms per step."""
    ratios, steps = [], []
    for r in records:
        config = [r["backend"], r["model"], f"{r['width_multiplier']:g}"]
        config += [r["batch_size"], r["precision"]]
        for pair, ratio in r["ratios"].items():
            used = ratio.get("rounds_used", r["rounds"])
            rounds = r["rounds"] if used == r["rounds"] else f"{used} of {r['rounds']}"
            median = ratio["median"]
            ratios.append(
                [*config, pair, rounds, "-" if median is None else f"{median:.3f}"]
                + [_mean_with_interval(ratio)]
            )
        steps += [
            [*config, name, f"{ms:.1f}"] for name, ms in r["ms_per_step_median"].items()
        ]
    header = "backend|model|width|batch|precision|"
    return [
        *table(
            "**Interleaved ratios**: the Keras step's speed over native PyTorch's, "
            "one ratio per round (implementations in a new random order each "
            "round, one process); median, and mean ± 95% interval (Student's t), "
            f"over the rounds in which other processes kept at most "
            f"{OTHER_LOAD_BOUND} cores busy",
            header + "ratio|rounds|median|mean ± 95%",
            "llrrll",
            ratios,
        ),
        *table(
            "**Milliseconds per step** (median over the rounds; at a width and "
            "batch this small the step is the frameworks' per-step overhead)",
            header + "implementation|ms/step",
            "llrrll",
            steps,
        ),
    ]


class UnreadableFigures(ValueError):
    """A figures file that is not readable JSON; the message is one line."""


def _json_contents(paths):
    """The parsed JSON objects of each file given and of each folder's *.json.

    Raises:
        UnreadableFigures: a file that cannot be read or is not JSON (an
            interrupted run leaves empty ones).
    """
    for path in map(Path, paths):
        for file in sorted(path.glob("*.json")) if path.is_dir() else [path]:
            try:
                data = json.loads(file.read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                empty = isinstance(err, json.JSONDecodeError) and not err.doc.strip()
                reason = "empty" if empty else err
                raise UnreadableFigures(
                    f"{file} is not readable JSON ({reason})"
                ) from None
            if isinstance(data, dict):
                yield data


def load(paths, contents=None):
    """(benchmark rows, accuracy runs by (backend, model, profile)) from the
    JSON in `paths` (or its `contents`, already read); every seed of an
    implementation is one run in its list."""
    benchmarks, accuracy = [], {}
    for data in _json_contents(paths) if contents is None else contents:
        if "benchmarks" in data:
            benchmarks += data["benchmarks"]
        elif data.get("kind") == "accuracy":
            key = (data["backend"], data["model"], data.get("profile"))
            accuracy.setdefault(key, []).append(data)
    return rows_from_benchmarks(benchmarks), accuracy


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
    values = [r["images_per_second"] for r in train]
    keras_rows = [r["implementation"] == "keras" for r in train]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(train) + 1.5))
    colors = ["#4c72b0" if keras else "#dd8452" for keras in keras_rows]
    bars = ax.barh(range(len(train)), values, color=colors)
    labels = [
        f"{r['model']} b{r['batch_size']} {r['precision']}  {r['variant']}"
        for r in train
    ]
    ax.set_yticks(range(len(train)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("training images/s (higher is better)")
    ax.set_title(
        "Training-step throughput: Keras backends (blue) vs native "
        f"PyTorch (orange)\n{'; '.join(sorted({r['device'] for r in train}))}",
        fontsize=9,
    )
    for bar, row, value, keras in zip(bars, train, values, keras_rows, strict=True):
        text = f"{value:.1f}" if value < 100 else f"{value:.0f}"
        if row.get("ratio_to_native") is not None and keras:
            text += f"  ({row['ratio_to_native']:.3g}x)"
        y = bar.get_y() + bar.get_height() / 2
        ax.text(bar.get_width(), y, " " + text, va="center", fontsize=7)
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
    add = parser.add_argument
    add("inputs", nargs="+", metavar="PATH", help="JSON files, or folders of them.")
    add(
        "--output-dir",
        metavar="DIR",
        help="where table.md and chart.png go (default: the first folder given, "
        "else the first file's folder).",
    )
    add(
        "--baseline",
        default="auto",
        metavar="auto|none|DIR",
        help="results to compare with, marking any row that lost more than "
        # %% is argparse's escape for a percent sign.
        f"{(1 - REGRESSION_BOUND) * 100:.0f}%%: auto (default) takes the newest "
        "folder under benchmarks/results measured on the same device.",
    )
    add("--command", help="the command that produced the figures, for table.md.")
    return parser


def _fail(message):
    print(f"report.py: {message}", file=sys.stderr)
    return 2


def main(argv=None):
    args = build_parser().parse_args(argv)
    missing = [p for p in args.inputs if not Path(p).exists()]
    if missing:
        return _fail(f"no such file or folder: {', '.join(missing)}")
    try:
        contents = list(_json_contents(args.inputs))
    except UnreadableFigures as err:
        return _fail(str(err))
    rows, accuracy = load(args.inputs, contents)
    interleaved = [d for d in contents if d.get("kind") == "interleaved"]
    if not (rows or accuracy or interleaved):
        return _fail(f"no benchmark figures found in {', '.join(args.inputs)}")
    first = Path(args.inputs[0])
    output_dir = Path(args.output_dir or (first if first.is_dir() else first.parent))
    output_dir.mkdir(parents=True, exist_ok=True)
    lines = format_rows(rows, accuracy) + interleaved_lines(interleaved)
    lines += summary_throughput_lines(rows) + summary_accuracy_lines(accuracy)
    if rows and args.baseline != "none":
        if args.baseline == "auto":
            folder, baseline = last_results_of_machine(rows, exclude=args.inputs)
        else:
            folder = Path(args.baseline)
            baseline, _ = load([folder])
        lines += regression_lines(rows, folder, mark_regressions(rows, baseline))
    # What the benchmark runs left out of their profile, and why.
    notes = [(d.get("machine_info") or {}).get("skipped") for d in contents]
    notes = list(dict.fromkeys(n for n in notes if n))
    lines += [f"Note: {note}." for note in notes] + ([""] if notes else [])
    lines += ["Environment:", "", *environment_lines(rows)]
    lines += recorded_environment_lines(
        [run for runs in accuracy.values() for run in runs] + interleaved
    )
    if args.command:
        lines += ["", f"Command: `{args.command}`"]
    lines += ["", FOOTNOTE]
    (output_dir / "table.md").write_text("\n".join(lines) + "\n")
    png = chart(rows, output_dir / "chart.png")
    print("\n".join(lines))
    print(f"\nwrote {output_dir / 'table.md'}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
