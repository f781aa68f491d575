"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

# The variable CI (.ci/run) sets to the unpacked real CIFAR-10.
DATA_ENV_VAR = "KERAS_CIFAR_RESNET_DATA"

_collection = {"started": {}, "lines": 0}


def pytest_collectstart(collector):
    if isinstance(collector, pytest.Module):
        _collection["started"][collector.nodeid] = time.monotonic()


def pytest_collectreport(report):
    """With `-v`, a line per test module as it is collected, with its seconds.

    Collecting imports every test module, and the first to import Keras
    pays for the framework's import (in a new environment its bytecode is
    compiled then, for minutes on a slow machine): without these lines a
    log shows nothing until the first test's name.
    """
    started = _collection["started"].pop(report.nodeid, None)
    reporter = _config and _config.pluginmanager.get_plugin("terminalreporter")
    if started is None or not reporter or reporter.config.option.verbose <= 0:
        return
    seconds = time.monotonic() - started
    tests = sum(1 for item in report.result if isinstance(item, pytest.Item))
    line = f"collected {report.nodeid}: {tests} tests in {seconds:.1f} s\n"
    # The first follows pytest's "collecting ... " on its line.
    reporter.write(("\n" if not _collection["lines"] else "") + line, flush=True)
    _collection["lines"] += 1


_config = None


def pytest_configure(config):
    global _config
    _config = config


@pytest.fixture(scope="session")
def real_data_dir():
    """The real CIFAR-10 folder named by KERAS_CIFAR_RESNET_DATA.

    Skips the test, with the reason, when the variable is unset or names
    nothing: the real data is optional for a local run. CI (CI=true) always
    provides it, so there a missing data set fails instead of hiding tests.
    """
    value = os.environ.get(DATA_ENV_VAR)
    path = Path(value).expanduser() if value else None
    if path is None or not path.exists():
        reason = (
            f"real CIFAR-10 not available: {DATA_ENV_VAR} is not set"
            if path is None
            else f"real CIFAR-10 not available: {DATA_ENV_VAR}={value} does not exist"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI must unpack it; see .ci/run)")
        pytest.skip(reason)
    return path


@pytest.fixture
def policy(request):
    """Keras's global dtype policy set to the test's parameter, then restored.

    Use with `@pytest.mark.parametrize("policy", [...], indirect=True)`.
    """
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)
