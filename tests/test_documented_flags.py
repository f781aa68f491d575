"""What the README and docs/ say about the commands' flags holds.

A default given in a flag table (`| flag | meaning (default) |`, the default
in the last brackets of the row) or in prose (`` `--flag` (default X) ``) is
checked against the command's parser: a number or a quoted value must be
the parser's, and words ("all", "the Keras cache") stand for no value
(None). The help texts name pages that exist.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from keras_cifar_resnet import evaluate, predict
from keras_cifar_resnet.config import (
    build_parser,
    flag_fields,
    flag_name,
    resolve_config as resolve_train_config,
)
from keras_cifar_resnet.training.first_run import QUICK_RUN_FLAGS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PARSERS = {
    "train": build_parser,
    "evaluate": evaluate.build_parser,
    "predict": predict.build_parser,
}
COMMAND = re.compile(r"keras[_-]cifar[_-]resnet[.-](train|evaluate|predict)\b")
TABLE_HEADER = re.compile(r"^\| flag \| meaning \(default\) \|$", re.M)
ROW = re.compile(r"^\| `(--[\w-]+)[^`]*` \| (.*) \|$")
PROSE = re.compile(r"`(--[\w-]+)[^`]*` \(default:? ([^);]+)[);]")
NUMBER = re.compile(r"-?[\d,]*\.?\d+(e-?\d+)?")


def _defaults(command):
    """{flag: the value a run gets without it} for one command."""
    if command == "train":
        # The flags default to None; the recipe and the config fill them in.
        config = resolve_train_config([])
        return {flag_name(f.name): getattr(config, f.name) for f in flag_fields()}
    return {
        option: action.default
        for action in PARSERS[command]()._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


DEFAULTS = {command: _defaults(command) for command in PARSERS}


def _last_brackets(text):
    """The text inside the brackets that close `text`, or None."""
    if not text.endswith(")"):
        return None
    depth = 0
    for index in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[index], 0)
        if depth == 0:
            return text[index + 1 : -1]
    return None


def _documented(page):
    """(position, flag, documented default) on `page`."""
    text = page.read_text()
    for header in TABLE_HEADER.finditer(text):
        position = header.end() + 1
        for line in text[position:].splitlines():
            if not line.startswith("|"):
                break
            row = ROW.match(line)
            default = row and _last_brackets(row.group(2))
            if default is not None:
                yield position, row.group(1), default
            position += len(line) + 1
    for match in PROSE.finditer(text):
        yield match.start(), match.group(1), match.group(2).strip()


def _command(text, position, flag):
    """The command a flag documented at `position` belongs to."""
    having = [name for name, defaults in DEFAULTS.items() if flag in defaults]
    assert having, f"{flag} is a flag of no command"
    if len(having) == 1:
        return having[0]
    named = [m.group(1) for m in COMMAND.finditer(text[:position])]
    named = [name for name in named if name in having]
    assert named, f"{flag} belongs to {having}: the text before it names none"
    return named[-1]


def _cases():
    for page in PAGES:
        text = page.read_text()
        for position, flag, default in _documented(page):
            line = text[:position].count("\n") + 1
            command = _command(text, position, flag)
            yield pytest.param(
                command, flag, default, id=f"{page.name}:{line}:{command}{flag}"
            )


def test_the_docs_document_defaults():
    commands = {case.values[0] for case in _cases()}
    assert {"train", "evaluate"} <= commands and len(list(_cases())) >= 5


@pytest.mark.parametrize("command, flag, documented", _cases())
def test_a_documented_default_is_the_parsers(command, flag, documented):
    actual = DEFAULTS[command][flag]
    literal = re.fullmatch(r"`([^`<]*)`", documented)
    if NUMBER.fullmatch(documented):
        number = float(documented.replace(",", ""))
        assert isinstance(actual, int | float) and actual == number, (
            f"the docs give {command} {flag} default {documented}, its parser {actual}"
        )
    elif literal:
        assert str(actual) == literal.group(1), (
            f"the docs give {command} {flag} default {documented}, its parser {actual}"
        )
    else:
        assert actual in (None, False), (
            f"the docs describe {command} {flag}'s default in words "
            f"({documented!r}); its parser has {actual!r}"
        )


def _helps():
    for command, parser in PARSERS.items():
        for action in parser()._actions:
            if action.help and action.option_strings:
                yield command, action.option_strings[-1], action.help


@pytest.mark.parametrize(
    "command, flag, text", [pytest.param(*h, id=f"{h[0]}{h[1]}") for h in _helps()]
)
def test_help_texts_name_pages_that_exist(command, flag, text):
    assert "see the readme" not in text.lower(), f"{command} {flag}: which page?"
    for page in re.findall(r"(?:docs/)?[\w-]+\.md\b", text):
        assert (ROOT / page).exists(), f"{command} {flag}'s help names {page}"


def test_help_texts_point_at_the_pages_and_widths_the_docs_use():
    helps = {(command, flag): text for command, flag, text in _helps()}
    assert "docs/multi-device.md" in helps["train", "--distribute"]
    quick_width = re.search(r"--width-multiplier (\S+)", QUICK_RUN_FLAGS).group(1)
    assert f"{quick_width} gives" in helps["train", "--width-multiplier"]


def _benchmark_parser(name):
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_parser


@pytest.mark.parametrize(
    "command",
    [*PARSERS, *(f"benchmarks/{m}.py" for m in ("accuracy", "report", "interleaved"))],
)
def test_help_shows_percent_signs_once(command):
    # argparse expands %% in help strings, not in a description or epilog.
    build = PARSERS.get(command) or _benchmark_parser(Path(command).stem)
    assert "%%" not in build().format_help(), command


def test_the_flags_a_resume_may_change_are_the_ones_help_names():
    from keras_cifar_resnet.config import RESUME_OVERRIDABLE

    text = re.sub(r"\s+", " ", (ROOT / "docs" / "training.md").read_text())
    sentence = re.search(r"rate is kept\); (.*?) may change;", text)
    assert sentence, "docs/training.md no longer says which flags may change"
    documented = set(re.findall(r"`(--[\w-]+)`", sentence.group(1)))
    source = {flag_name(name) for name in RESUME_OVERRIDABLE}
    assert documented == source
    resume_help = next(
        action.help
        for action in build_parser()._actions
        if "--resume" in action.option_strings
    )
    assert all(flag in resume_help for flag in source)
