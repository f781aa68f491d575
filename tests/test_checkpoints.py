"""Checkpoints: a round trip restores every variable; a wrong file is refused."""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest

from keras_cifar_resnet.config import TrainConfig
from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.training.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    previous_checkpoint_path,
    read_checkpoint_state,
    run_settings,
    save_checkpoint,
)


def _compiled(width_multiplier=1.0):
    model = TinyResNet(width_multiplier=width_multiplier)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9))
    model.optimizer.build(model.trainable_variables)
    return model


def _values(model):
    variables = [*model.variables, *model.optimizer.variables]
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def test_a_round_trip_restores_model_and_optimizer(tmp_path):
    model = _compiled()
    rng = np.random.default_rng(0)
    for variable in [*model.variables, *model.optimizer.variables]:
        shape = tuple(variable.shape)
        variable.assign(rng.normal(size=shape).astype(variable.dtype))
    saved = _values(model)
    path = save_checkpoint(tmp_path / "checkpoint.npz", model, {"epoch": 3, "step": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]

    other = _compiled()
    assert load_checkpoint(path, other) == {"epoch": 3, "step": 1}
    for restored, expected in zip(_values(other), saved, strict=True):
        np.testing.assert_array_equal(restored, expected)
    assert read_checkpoint_state(path) == {"epoch": 3, "step": 1}


def test_a_different_model_is_refused_and_left_untouched(tmp_path):
    path = save_checkpoint(tmp_path / "checkpoint.npz", _compiled(), {})
    wider = _compiled(width_multiplier=2.0)
    before = _values(wider)
    with pytest.raises(CheckpointError, match="model variables do not match"):
        load_checkpoint(path, wider)
    for after, expected in zip(_values(wider), before, strict=True):
        np.testing.assert_array_equal(after, expected)


def test_missing_garbage_and_other_formats_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint there"):
        read_checkpoint_state(tmp_path / "missing.npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint_state(garbage)
    record = {"format": FORMAT_VERSION + 1, "state": {}, "variables": {}}
    future = tmp_path / "future.npz"
    np.savez(future, record=np.frombuffer(json.dumps(record).encode(), dtype=np.uint8))
    with pytest.raises(CheckpointError, match="checkpoint format"):
        read_checkpoint_state(future)


def test_the_previous_checkpoint_is_kept_beside_the_new_one(tmp_path):
    path = tmp_path / "checkpoint.npz"
    model = _compiled()
    save_checkpoint(path, model, {"epoch": 1})
    save_checkpoint(path, model, {"epoch": 2})
    previous = previous_checkpoint_path(path)
    assert previous.name == "checkpoint.previous.npz"
    assert read_checkpoint_state(previous) == {"epoch": 1}
    assert read_checkpoint_state(path) == {"epoch": 2}
    assert {p.name for p in tmp_path.iterdir()} == {previous.name, path.name}


def _damaged(good, how):
    data = good.read_bytes()
    if how == "empty":
        return b""
    if how == "truncated":
        return data[: len(data) // 2]
    if how == "byte-flipped":
        # A byte inside the first stored value: the archive's CRC catches it.
        middle = bytearray(data)
        middle[200] ^= 0xFF
        return bytes(middle)
    return np.random.default_rng(0).bytes(len(data))


@pytest.mark.parametrize("how", ["empty", "truncated", "byte-flipped", "random"])
def test_a_damaged_checkpoint_is_one_line_without_numpys_pickle_advice(tmp_path, how):
    good = save_checkpoint(tmp_path / "good.npz", _compiled(), {"epoch": 1})
    damaged = tmp_path / "checkpoint.npz"
    damaged.write_bytes(_damaged(good, how))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(damaged, _compiled())
    message = str(error.value)
    assert message.startswith(f"{damaged} is not a readable checkpoint: ")
    assert "\n" not in message and "pickle" not in message.lower()


def _rewritten(path, target, edit):
    """A copy of the checkpoint at `path` with its arrays edited by `edit`."""
    with np.load(path) as contents:
        arrays = {name: contents[name] for name in contents.files}
    edit(arrays)
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize(
    "value, message",
    [("strings", "is <U7, not numbers"), (np.nan, "holds NaN or infinite values")],
)
def test_values_that_are_not_finite_numbers_are_refused_in_one_line(
    tmp_path, value, message
):
    good = save_checkpoint(tmp_path / "good.npz", _compiled(), {"epoch": 1})

    def spoil(arrays):
        array = arrays["model/00002"]
        if value == "strings":
            arrays["model/00002"] = np.full(array.shape, "weights")
        else:
            array = array.copy()
            array.flat[0] = value
            arrays["model/00002"] = array

    spoiled = _rewritten(good, tmp_path / "checkpoint.npz", spoil)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(spoiled, _compiled())
    assert "\n" not in str(error.value)


def _settings(**changes):
    return run_settings(dataclasses.replace(TrainConfig(model="tiny"), **changes))


def test_settings_that_differ_from_the_checkpoint_s_are_refused(tmp_path):
    model = _compiled()
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, model, {"epoch": 1, "settings": _settings(batch_size=128)})
    assert load_checkpoint(path, _compiled(), settings=_settings(batch_size=128))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, _compiled(), settings=_settings(batch_size=64, seed=5))
    message = str(error.value)
    assert "config.json disagrees with checkpoint.npz" in message
    assert "batch_size 64 (checkpoint: 128), seed 5 (checkpoint: 0)" in message
    # Where the data comes from may change on resume.
    settings = _settings(batch_size=128) | {"data_dir": "elsewhere"}
    assert "data_dir" not in _settings()
    assert load_checkpoint(path, _compiled(), settings=settings)


def test_an_old_checkpoint_without_settings_still_resumes(tmp_path):
    path = tmp_path / "checkpoint.npz"
    save_checkpoint(path, _compiled(), {"epoch": 1, "seed": 0})
    assert load_checkpoint(path, _compiled(), settings=_settings(batch_size=64))
    with pytest.raises(CheckpointError, match="seed 3 \\(checkpoint: 0\\)"):
        load_checkpoint(path, _compiled(), settings=_settings(seed=3))


def test_resume_refuses_an_edited_config_json_in_one_line(tmp_path, capsys):
    from keras_cifar_resnet.train import main

    folder = tmp_path / "run"
    flags = ["--synthetic", "--model", "tiny", "--max-train-examples", "64"]
    flags += ["--batch-size", "32", "--validation-size", "0", "--epochs", "1"]
    assert main([*flags, "--output-dir", str(folder)]) == 0
    # As if stopped before its test evaluation: a finished run is not resumed.
    (folder / "summary.json").unlink()
    record = json.loads((folder / "config.json").read_text())
    record["config"]["batch_size"] = 16
    del record["config"]["epochs"]  # the default, 100, takes its place
    (folder / "config.json").write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["--resume", str(folder)]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "config.json disagrees with checkpoint.npz" in error
    assert "batch_size 16 (checkpoint: 32)" in error
    assert "epochs 100 (checkpoint: 1)" in error
