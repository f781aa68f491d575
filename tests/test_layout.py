"""The layout table in docs/development.md lists every module, and only those."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "keras_cifar_resnet"


def _table_paths():
    """The package paths in the table's first column; a `/` ends a folder."""
    text = (ROOT / "docs" / "development.md").read_text()
    paths = []
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cell = line.split("|")[1].strip()
        if cell.startswith("**"):
            continue  # a room's heading row, not a module
        names = re.findall(r"`([^`]+)`", cell)
        # `keras_cifar_resnet/train.py`, `evaluate.py`: names after the first
        # live in the first one's folder.
        folder = names[0].rpartition("/")[0] if names else ""
        for name in names:
            path = name if "/" in name else f"{folder}/{name}"
            if path.startswith("keras_cifar_resnet/"):
                paths.append(path)
    return paths


def _listed_modules():
    """(modules, folders): the table's .py files and the folders listed whole."""
    modules, folders = set(), set()
    for path in _table_paths():
        (folders if path.endswith("/") else modules).add(path)
    return modules, folders


def _package_modules():
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def test_every_module_is_in_the_table():
    modules, folders = _listed_modules()
    unlisted = sorted(
        path
        for path in _package_modules()
        if path not in modules
        and not any(path.startswith(folder) for folder in folders)
        # A room's `__init__.py` is its docstring, named by the room's row.
        and not (path.endswith("/__init__.py") and path.count("/") == 2)
    )
    assert not unlisted, f"modules missing from docs/development.md: {unlisted}"


def test_every_row_names_a_module_that_exists():
    modules, folders = _listed_modules()
    gone = sorted(path for path in modules if not (ROOT / path).is_file())
    gone += sorted(path for path in folders if not (ROOT / path).is_dir())
    assert not gone, f"docs/development.md lists what does not exist: {gone}"
