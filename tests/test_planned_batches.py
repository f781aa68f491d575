"""The batches planned once: every check of the batch size, the steps, the slices."""

from __future__ import annotations

import types

import numpy as np
import pytest

from keras_cifar_resnet.config import TrainConfig
from keras_cifar_resnet.errors import DistributionError, UsageError
from keras_cifar_resnet.training.batch_plan import BatchPlan, plan_batches


def _data(train, val=0):
    return types.SimpleNamespace(
        train_images=np.zeros((train, 1)), val_images=np.zeros((val, 1))
    )


def _devices(replicas=1, processes=1, index=0, even_evaluation=False):
    return types.SimpleNamespace(
        num_replicas=replicas,
        process_count=processes,
        process_index=index,
        engine="an engine",
        even_evaluation_batches=even_evaluation,
    )


def test_the_plan_gives_the_steps_of_whole_batches():
    plan = plan_batches(TrainConfig(batch_size=16), _data(100), _devices())
    assert plan == BatchPlan(batch_size=16, steps_per_epoch=6)
    assert plan.process_slice == slice(0, 16)


def test_a_batch_larger_than_the_training_set_is_a_usage_error():
    with pytest.raises(UsageError, match="--batch-size 64 is larger than the 16"):
        plan_batches(TrainConfig(batch_size=64), _data(16), _devices())


def test_a_batch_splits_evenly_over_the_replicas():
    with pytest.raises(DistributionError, match="--batch-size 6 .* multiple of 4"):
        plan_batches(TrainConfig(batch_size=6), _data(100), _devices(replicas=4))
    # 2 validation images left over: evaluated locally where evaluation is not
    # sharded, refused where it is (JAX shards evaluation batches too).
    config, data = TrainConfig(batch_size=8), _data(100, val=10)
    plan_batches(config, data, _devices(replicas=4))
    with pytest.raises(DistributionError, match=r"last validation batch .* = 2\)"):
        plan_batches(config, data, _devices(replicas=4, even_evaluation=True))
    plan_batches(config, _data(100, val=12), _devices(replicas=4, even_evaluation=True))


def test_each_process_has_its_slice_of_every_batch():
    plans = [
        plan_batches(
            TrainConfig(batch_size=8), _data(64), _devices(4, processes=2, index=i)
        )
        for i in range(2)
    ]
    assert [plan.process_slice for plan in plans] == [slice(0, 4), slice(4, 8)]
    assert {plan.steps_per_epoch for plan in plans} == {8}
