"""JAX's persistent compilation cache: where it lives, how it turns off."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from keras_cifar_resnet import __version__
from keras_cifar_resnet.compilation_cache import (
    ENV_VAR,
    cache_folder,
    enable_compilation_cache,
)
from tests.backend_subprocess import run_under_backend


def test_the_folder_is_per_package_and_jax_version_under_keras_home(tmp_path):
    folder = cache_folder("0.10.2", {"KERAS_HOME": str(tmp_path)})
    expected = tmp_path / "keras_cifar_resnet" / "compilation-cache"
    assert folder == expected / f"{__version__}-jax-0.10.2"
    assert cache_folder("0.10.3", {"KERAS_HOME": str(tmp_path)}) != folder


def test_without_keras_home_it_is_under_the_users_keras_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_folder("1.0", {}).is_relative_to(tmp_path / ".keras")


@pytest.mark.parametrize("value", ["0", "off", "False", " no "])
def test_the_variable_turns_it_off(value):
    assert cache_folder("0.10.2", {ENV_VAR: value}) is None


def test_the_variable_may_name_the_folder(tmp_path):
    assert cache_folder("0.10.2", {ENV_VAR: str(tmp_path)}) == Path(tmp_path)
    assert cache_folder("0.10.2", {ENV_VAR: "1", "KERAS_HOME": "/k"}) == cache_folder(
        "0.10.2", {"KERAS_HOME": "/k"}
    )


@pytest.mark.parametrize("backend", ["tensorflow", "torch"])
def test_other_backends_are_left_alone(backend):
    assert enable_compilation_cache(backend) is None


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="jax is not installed"
)
def test_under_jax_compiled_programs_land_in_the_folder(tmp_path):
    output = run_under_backend(
        "jax",
        f"""
        import os
        os.environ["KERAS_HOME"] = {str(tmp_path)!r}
        import jax, numpy as np
        from keras_cifar_resnet.compilation_cache import enable_compilation_cache
        folder = enable_compilation_cache("jax")
        jax.jit(lambda x: x * 3 - 1)(np.ones(5, "float32")).block_until_ready()
        print(folder)
        """,
    )
    folder = Path(output.strip().splitlines()[-1])
    assert folder.is_relative_to(tmp_path)
    assert any(folder.iterdir()), "JAX wrote nothing to the cache folder"
