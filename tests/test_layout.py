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


# The floors, lowest first: a module imports (at the top or inside a
# function) only from its own floor or below. Modules not named are on the
# floor of their subpackage.
FLOORS = [
    {
        "keras_cifar_resnet",
        "keras_cifar_resnet.errors",
        "keras_cifar_resnet.safe_files",
        "keras_cifar_resnet.run_files",
        "keras_cifar_resnet.backend_choice",
        "keras_cifar_resnet.registration",
        "keras_cifar_resnet.compilation_cache",
        "keras_cifar_resnet.closed_output",
        "keras_cifar_resnet.process_exit",
        "keras_cifar_resnet.messages",
    },
    {"keras_cifar_resnet.config"},
    {"keras_cifar_resnet.data"},
    {"keras_cifar_resnet.network"},
    {"keras_cifar_resnet.models"},
    {"keras_cifar_resnet.resources"},
    # Reading a model and reporting on it, below the training run that uses it.
    {"keras_cifar_resnet.reporting"},
    {"keras_cifar_resnet.training"},
    {
        "keras_cifar_resnet.output_paths",
        "keras_cifar_resnet.fine_tune",
        "keras_cifar_resnet.train",
        "keras_cifar_resnet.evaluate",
        "keras_cifar_resnet.predict",
    },
]
# Imports that run up a floor, each with its reason.
UPWARD = {
    # The design: the model class takes its train step from the backend.
    ("keras_cifar_resnet.models", "keras_cifar_resnet.training.steps"),
}


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module):
    for depth in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:depth])
        for floor, members in enumerate(FLOORS):
            if prefix in members:
                return floor
    raise AssertionError(f"{module} is on no floor of FLOORS")


def _imports(path):
    import ast

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_imports_run_down_the_floors():
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for imported in _imports(path):
            if not imported.startswith("keras_cifar_resnet"):
                continue
            if _floor(imported) > _floor(module):
                upward.add((module, imported))
    assert upward <= UPWARD, f"imports up a floor: {sorted(upward - UPWARD)}"


def test_the_bottom_modules_import_nothing_of_the_package_above_them():
    for name in ("errors", "safe_files", "messages", "run_files"):
        ours = {
            module
            for module in _imports(PACKAGE / f"{name}.py")
            if module.startswith("keras_cifar_resnet")
        }
        assert ours <= {"keras_cifar_resnet.errors"}, f"{name} imports {ours}"
