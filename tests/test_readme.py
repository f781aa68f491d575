"""The README and docs/ hold: every relative link resolves, every Python block runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from keras_cifar_resnet.training.first_run import QUICK_RUN_FLAGS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Pages whose Python blocks are examples to run (the others show fragments).
EXAMPLE_PAGES = [ROOT / "README.md", ROOT / "docs" / "library.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _without_code(text):
    return FENCE.sub("", re.sub(r"`[^`\n]*`", "", text))


def _anchors(page):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ (.+)$", _without_code(page.read_text()), re.MULTILINE)
    return {
        re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        for heading in headings
    }


def _links():
    for page in PAGES:
        for target in LINK.findall(_without_code(page.read_text())):
            if not re.match(r"[a-z]+:", target):
                yield pytest.param(page, target, id=f"{page.name}->{target}")


def test_there_are_pages_and_links():
    assert len(PAGES) > 5 and len(list(_links())) > 20


@pytest.mark.parametrize("page, target", _links())
def test_every_relative_link_resolves(page, target):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: {target} names a missing file"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page.name}: no heading for {target}"


def test_the_readme_stays_a_front_page():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_first_run_is_the_quick_run_the_training_command_suggests():
    readme = (ROOT / "README.md").read_text()
    assert f"python -m keras_cifar_resnet.train {QUICK_RUN_FLAGS}" in readme


def test_the_first_run_figures_are_the_measured_ones():
    """The README's first-run table, a row per backend, is its results file's."""
    section = (ROOT / "README.md").read_text().split("## First run\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    backends = {row.split("|")[1].strip().split(" ")[0] for row in rows[2:]}
    assert backends == {"TensorFlow", "torch", "JAX"}, rows
    sources = re.findall(r"\]\((benchmarks/results/[^)#]+\.md)\)", section)
    assert sources, "the first run's figures name no results file"
    measured = (ROOT / sources[0]).read_text()
    assert "\n".join(rows) in measured, f"{sources[0]} holds other figures"


def test_every_accuracy_and_speed_table_is_its_results_files():
    """Each table under "Accuracy and speed" is, row for row, in the results
    file the paragraph before it links: one measured run behind each table."""
    section = (ROOT / "README.md").read_text().split("## Accuracy and speed\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    blocks = re.split(r"\n\n+", section)
    tables = 0
    for index, block in enumerate(blocks):
        rows = [line for line in block.splitlines() if line.startswith("| ")]
        if not rows:
            continue
        tables += 1
        before = "\n".join(blocks[:index])
        sources = re.findall(r"\]\((benchmarks/results/[^)#]+\.md)\)", before)
        assert sources, f"the table starting {rows[0]!r} names no results file"
        measured = (ROOT / sources[-1]).read_text()
        assert "\n".join(rows) in measured, f"{sources[-1]} holds other figures"
    assert tables >= 2, "the accuracy and the throughput tables"


def _examples():
    for page in EXAMPLE_PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            if match.group(1) == "python":
                line = text[: match.start()].count("\n") + 1
                yield pytest.param(match.group(2), id=f"{page.name}:{line}")


@pytest.mark.slow
# Keras's warning for an argument the example passes in vain.
@pytest.mark.filterwarnings("error:`shuffle=True` was passed")
@pytest.mark.parametrize("code", _examples())
def test_python_examples_run(code, tmp_path, monkeypatch):
    for framework in ("torch", "tensorflow"):
        if re.search(rf"^import {framework}\b", code, re.MULTILINE):
            pytest.importorskip(framework)
    monkeypatch.chdir(tmp_path)  # the examples write model files
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def _extras():
    """pyproject.toml's extras: {name: [requirement, ...]}."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["optional-dependencies"]


def _named_extras(text):
    """Extras the text names: `[a,b]` in install lines and in inline code."""
    lines = [
        line
        for block in FENCE.findall(text)
        for line in block[1].splitlines()
        if "install" in line
    ]
    found = re.findall(r"\[([a-z][\w,-]*)\]", "\n".join(lines))
    found += re.findall(r"`\[([a-z][\w,-]*)\]`", re.sub(FENCE, "", text))
    return {name for group in found for name in group.split(",")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_install_commands_name_extras_that_exist(page):
    named = _named_extras(page.read_text())
    assert named <= set(_extras()), (
        f"{page.name}: no such extra {named - set(_extras())}"
    )


def test_the_cpu_install_keeps_pytorchs_cpu_build():
    readme = (ROOT / "README.md").read_text()
    cpu = "pip install torch --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in readme and {"torch", "jax", "tensorflow"} <= _named_extras(readme)
    # The package's install after it must keep that build: [torch] has to
    # accept the CPU wheel's version, a local version like 2.13.0+cpu.
    after = readme[readme.index(cpu) :].split("```")[0]
    assert re.search(r'pip install -e "\.\[torch[,\]]', after), after
    from packaging.requirements import Requirement

    (torch,) = [Requirement(text) for text in _extras()["torch"]]
    assert torch.name == "torch" and torch.specifier.contains("2.13.0+cpu")


def _python_blocks(page):
    return [code for lang, code in FENCE.findall(page.read_text()) if lang == "python"]


@pytest.mark.parametrize("page", EXAMPLE_PAGES, ids=lambda page: page.name)
def test_examples_import_the_package_before_keras(page):
    # Keras alone picks TensorFlow: on a [jax]- or [torch]-only install an
    # example that imports keras first fails before the package can choose.
    for code in _python_blocks(page):
        lines = code.splitlines()
        firsts = [
            i
            for i, line in enumerate(lines)
            if re.match(r"(import|from) keras_cifar_resnet\b", line)
        ]
        for i, line in enumerate(lines):
            if re.match(r"(import|from) keras\b(?!_)", line):
                assert firsts and firsts[0] < i, f"{page.name}: {line!r} comes first"


def test_the_readmes_python_section_says_how_the_backend_is_chosen():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it from Python")[1].split("\n## ")[0]
    assert "KERAS_BACKEND" in section and "before `keras`" in section


def test_the_test_command_names_each_module_as_it_collects_it():
    # The README promises a log that is never silent; collecting is the
    # first long wait (every test module imports a framework).
    assert '"-v"' in (ROOT / "noxfile.py").read_text()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "--collect-only",
            "-p",
            "no:cacheprovider",
            "tests/test_layout.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert re.search(
        r"^collected tests/test_layout.py: \d+ tests in [\d.]+ s$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout[-2000:]
