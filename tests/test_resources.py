"""Memory estimates: a model too large for the machine is refused before building."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from keras_cifar_resnet.config import TrainConfig
from keras_cifar_resnet.resources import (
    ResourceError,
    available_memory_bytes,
    check_training_memory,
    format_bytes,
    named_model_config,
    resnet_size,
    training_bytes,
)


@pytest.fixture
def meminfo(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text(
        "MemTotal:       16000000 kB\nMemFree:  100 kB\nMemAvailable:   15625000 kB\n"
    )
    return path


def test_available_memory_is_read_from_meminfo(meminfo, tmp_path):
    assert available_memory_bytes(meminfo) == 16_000_000_000
    assert available_memory_bytes(tmp_path / "missing") is None


def test_format_bytes_uses_three_significant_digits():
    assert format_bytes(999) == "999 bytes"
    assert format_bytes(1_534_000_000) == "1.53 GB"
    assert format_bytes(733e12) == "733 TB"


def test_the_estimate_grows_with_width_squared_and_batch():
    small = named_model_config("resnet18", width_multiplier=1.0)
    wide = named_model_config("resnet18", width_multiplier=2.0)
    parameters, activations, _ = resnet_size(small)
    assert parameters == 11_184_778  # the count models.ResNet18 documents
    assert resnet_size(wide)[0] == pytest.approx(4 * parameters, rel=0.01)
    assert training_bytes(small, 256) - training_bytes(small, 128) == (
        4 * 2 * 128 * activations
    )


def test_a_width_too_large_for_the_machine_is_refused_with_the_figure(meminfo):
    config = TrainConfig(model="resnet18", width_multiplier=64)
    with pytest.raises(ResourceError) as caught:
        check_training_memory(config, "cpu", meminfo)
    message = str(caught.value)
    assert message.startswith(
        "training resnet18 at width multiplier 64 with batch 512 needs at least "
    )
    assert message.endswith("more than the 16 GB this machine has available")
    assert " TB of memory (estimate)" in message
    # The same run fits with the default width; on an accelerator the host's
    # memory is not where the tensors live.
    default_width = dataclasses.replace(config, width_multiplier=1.0)
    check_training_memory(default_width, "cpu", meminfo)
    check_training_memory(config, "cuda:0", meminfo)


@pytest.mark.skipif(not Path("/proc/meminfo").exists(), reason="needs /proc/meminfo")
def test_the_train_command_refuses_width_64_in_one_line_before_building(
    tmp_path, capsys
):
    from keras_cifar_resnet.train import main

    folder = tmp_path / "run"
    status = main(
        ["--synthetic", "--width-multiplier", "64", "--output-dir", str(folder)]
    )
    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and "needs at least" in error
    assert not (folder / "config.json").exists()


@pytest.mark.parametrize(
    "setting, flag",
    [
        ({"crop_padding": 1_000_000}, "--crop-padding 1,000,000"),
        ({"validation_size": 1_000_000_000, "synthetic": True}, "--validation-size"),
        ({"eval_batch_size": 100_000_000}, "--eval-batch-size 100,000,000"),
    ],
)
def test_every_setting_that_scales_memory_is_counted_and_named(meminfo, setting, flag):
    config = TrainConfig(model="tiny", **setting)
    with pytest.raises(ResourceError) as caught:
        check_training_memory(config, "cpu", meminfo)
    message = str(caught.value)
    assert message.startswith(
        f"training tiny at width multiplier 1 with batch 512 and {flag}"
    ), message
    assert message.endswith("more than the 16 GB this machine has available")
    check_training_memory(TrainConfig(model="tiny"), "cpu", meminfo)


def test_synthetic_data_is_counted_on_an_accelerator_too(meminfo):
    config = TrainConfig(model="tiny", synthetic=True, validation_size=10**9)
    with pytest.raises(ResourceError, match="--validation-size 1,000,000,000"):
        check_training_memory(config, "cuda:0", meminfo)
