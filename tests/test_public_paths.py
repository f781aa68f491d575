"""Every name the README and docs/ show imports from the path they show it at."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FROM_IMPORT = re.compile(
    r"^\s*from (keras_cifar_resnet[\w.]*) import (\([^)]*\)|[^\n#]+)", re.MULTILINE
)
PLAIN_IMPORT = re.compile(r"^\s*import (keras_cifar_resnet[\w.]*)", re.MULTILINE)
# A dotted name in prose, as `keras_cifar_resnet.data.load_cifar10()`.
DOTTED = re.compile(r"`(keras_cifar_resnet(?:\.\w+)+)(?:\(\))?`")


def _shown_paths():
    """(page, module, name or None) for each import and dotted name shown."""
    seen = set()
    for page in PAGES:
        text = page.read_text()
        for module, names in FROM_IMPORT.findall(text):
            for name in re.split(r"[\s,()]+", names):
                if name and name != "as":
                    seen.add((page.name, module, name.split(" as ")[0]))
        for module in PLAIN_IMPORT.findall(text):
            seen.add((page.name, module, None))
        for dotted in DOTTED.findall(text):
            module, _, name = dotted.rpartition(".")
            seen.add((page.name, module, name))
    return sorted(seen, key=lambda path: (path[0], path[1], path[2] or ""))


SHOWN = _shown_paths()


def test_the_pages_show_the_public_paths():
    shown = {(module, name) for _, module, name in SHOWN}
    assert ("keras_cifar_resnet.data", "load_cifar10") in shown
    assert ("keras_cifar_resnet", "ResNet18") in shown
    assert len(shown) > 10


@pytest.mark.parametrize(
    "page, module, name",
    SHOWN,
    ids=[f"{page}:{module}.{name or ''}" for page, module, name in SHOWN],
)
def test_a_shown_name_imports_from_its_path(page, module, name):
    try:
        imported = importlib.import_module(module)
    except ModuleNotFoundError:
        # `keras_cifar_resnet.data.cifar10` in prose is itself a module.
        parent, _, last = module.rpartition(".")
        imported = getattr(importlib.import_module(parent), last)
    if name is not None:
        assert hasattr(imported, name) or importlib.util.find_spec(
            f"{module}.{name}"
        ), f"{page} shows {module}.{name}, which does not exist"


def test_load_cifar10_keeps_its_short_path():
    from keras_cifar_resnet.data import load_cifar10
    from keras_cifar_resnet.data.cifar10 import load_cifar10 as defined

    assert load_cifar10 is defined
