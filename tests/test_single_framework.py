"""An install with one framework only works in any import order.

Each test builds a fresh environment with the package and one extra
(`[torch]` or `[jax]`), pinned to the versions of this environment, and runs
it with an empty Keras home: the package's first import must leave a
`keras.json` naming that framework, so that a later `import keras` before
the package works; the docs' examples run there too.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.backend_subprocess import run_only_in_session
from tests.test_readme import _examples

ROOT = Path(__file__).resolve().parent.parent
# What `pip install 'keras-cifar-resnet[torch]'` puts beside Keras, by extra.
EXTRAS = {"torch": "torch", "jax": "jax"}
PACKAGE_FIRST = "import keras_cifar_resnet  # noqa: F401\n"


def _find_links():
    """The wheel folders this machine's installers are told about."""
    folders = []
    for name in ("UV_FIND_LINKS", "PIP_FIND_LINKS"):
        folders += os.environ.get(name, "").split()
    try:
        listing = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for value in re.findall(r"find-links='([^']*)'", listing):
        folders += value.split()
    return [folder for folder in dict.fromkeys(folders) if folder]


def _build(extra, folder):
    """A new environment holding the package with `extra` only; its python.

    The framework, Keras and NumPy are pinned to this environment's
    versions, so the install reuses what is here (a local CPU build of
    torch, not PyPI's CUDA one).
    """
    pins = [
        f"{name}=={importlib.metadata.version(name)}"
        for name in ("keras", "numpy", EXTRAS[extra])
    ]
    python = folder / "bin" / "python"
    uv = shutil.which("uv")
    links = [arg for link in _find_links() for arg in ("--find-links", link)]
    if uv:
        commands = [
            [uv, "venv", "-q", str(folder), "--python", sys.executable],
            [uv, "pip", "install", "-q", "--python", str(python), *links]
            + [*pins, "-e", f"{ROOT}[{extra}]"],
        ]
    else:
        commands = [
            [sys.executable, "-m", "venv", str(folder)],
            [str(python), "-m", "pip", "install", "-q", *links]
            + [*pins, "-e", f"{ROOT}[{extra}]"],
        ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            reason = (
                f"cannot build a [{extra}]-only environment here "
                f"({' '.join(command[:3])} ...): {result.stderr.strip()[-500:]}"
            )
            if os.environ.get("CI") == "true":
                pytest.fail(reason)
            pytest.skip(reason)
    return python


@pytest.fixture(scope="module", params=sorted(EXTRAS))
def single_framework(request, tmp_path_factory):
    """(extra, python) of a fresh environment with that extra only."""
    extra = request.param
    run_only_in_session("torch", "builds its own environments")
    try:
        importlib.metadata.version(EXTRAS[extra])
    except importlib.metadata.PackageNotFoundError:
        pytest.fail(f"{extra} is not installed here, so its build cannot be pinned")
    return extra, _build(extra, tmp_path_factory.mktemp(f"only-{extra}") / "venv")


def _run(python, code, home, cwd):
    """Runs `code` with `python`, Keras home `home`, no KERAS_BACKEND."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KERAS_BACKEND", "PYTHONPATH", "PYTHONWARNINGS", "VIRTUAL_ENV")
    }
    env["KERAS_HOME"] = str(home)
    return subprocess.run(
        [str(python), "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_keras_first_works_after_the_package_chose(single_framework, tmp_path):
    extra, python = single_framework
    home = tmp_path / "keras-home"
    others = [name for name in ("tensorflow", "jax", "torch") if name != extra]
    first = _run(
        python,
        f"""
        import importlib.util
        assert not any(importlib.util.find_spec(name) for name in {others!r})
        import keras_cifar_resnet
        import keras
        print(keras.backend.backend())
        """,
        home,
        tmp_path,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.split() == [extra], first.stdout
    assert f'"backend": "{extra}"' in (home / "keras.json").read_text()
    second = _run(
        python,
        """
        import keras

        import keras_cifar_resnet
        from keras_cifar_resnet.backend_choice import choose_backend

        print(keras.backend.backend(), choose_backend().name)
        """,
        home,
        tmp_path,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.split() == [extra, extra], second.stdout


def _library_examples(extra):
    """The docs' examples that need no framework beyond `extra`."""
    for parameter in _examples():
        (code,) = parameter.values
        needs = set(re.findall(r"^import (tensorflow|torch|jax)\b", code, re.M))
        needs |= set(re.findall(r"KERAS_BACKEND\", \"(\w+)\"", code))
        if needs <= {extra}:
            yield parameter.id, code


def _package_first(code):
    """`code` with the package imported before anything else."""
    return PACKAGE_FIRST + code


@pytest.mark.slow
# Under torch only: the examples train, which a [jax]-only build compiles slowly.
@pytest.mark.parametrize("single_framework", ["torch"], indirect=True)
def test_the_docs_examples_run_in_either_import_order(single_framework, tmp_path):
    extra, python = single_framework
    examples = list(_library_examples(extra))
    assert len(examples) >= 3, [name for name, _ in examples]
    for name, code in examples:
        orders = {"package first, new Keras home": _package_first(code)}
        if re.search(r"^import keras$", code, re.M):
            orders["as written, keras first"] = code
        home = tmp_path / name.replace(":", "-") / "keras-home"
        home.parent.mkdir()
        for order, source in orders.items():
            result = _run(python, source, home, home.parent)
            assert result.returncode == 0, f"{name} ({order}):\n{result.stderr[-3000:]}"
            assert "will be ignored" not in result.stderr, result.stderr[-3000:]
