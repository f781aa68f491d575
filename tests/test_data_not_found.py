"""Without the data and without a download, the error says where to put it."""

from __future__ import annotations

import pytest

from keras_cifar_resnet.data.cifar10 import DataError, load_cifar10


def test_the_not_found_error_names_the_flag_and_the_python_argument(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("KERAS_CIFAR_RESNET_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError) as error:
        load_cifar10(download=False)
    message = str(error.value)
    assert "\n" not in message
    # The command's flag, and the keyword only as the Python call's.
    assert "--data-dir (`data_dir=` in Python)" in message
    assert "KERAS_CIFAR_RESNET_DATA" in message

