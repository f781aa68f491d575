"""Checkpoints: a round trip restores every variable; a wrong file is refused."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from keras_cifar_resnet.checkpoints import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from keras_cifar_resnet.models import TinyResNet


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
