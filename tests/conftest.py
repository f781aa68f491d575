"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The variable CI (.ci/run) sets to the unpacked real CIFAR-10.
DATA_ENV_VAR = "KERAS_CIFAR_RESNET_DATA"


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
