"""The batches of a run, planned once: every check of the batch size, and the steps.

`plan_batches(config, data, distribution)` is the one place that judges
`--batch-size` against the training images and the devices, and works out
what the rest of the run reads: the steps of an epoch and each process's
part of a global batch. (`TrainConfig` checks only that it is a whole
number >= 1; `TrainingBatches` and `ProcessShard`, which a library user may
use alone, keep their own argument checks.)

Example:

>>> plan = plan_batches(config, data, distribution)
>>> plan.steps_per_epoch, plan.process_slice
(97, slice(0, 512, None))
"""

from __future__ import annotations

import dataclasses

from keras_cifar_resnet.errors import DistributionError, UsageError


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    """The run's batches: global size, steps, and this process's part.

    Attributes:
        batch_size: int, images per optimizer step over all devices.
        steps_per_epoch: int, whole batches of the training images (the
            last partial batch is dropped, so every step is the same size).
        num_replicas: int, devices sharing each batch.
        process_index: int, this process among `process_count`.
        process_count: int, processes feeding their part of each batch.
    """

    batch_size: int
    steps_per_epoch: int
    num_replicas: int = 1
    process_index: int = 0
    process_count: int = 1

    @property
    def process_batch_size(self):
        """Images this process feeds per step."""
        return self.batch_size // self.process_count

    @property
    def process_slice(self):
        """This process's images within each global batch."""
        size = self.process_batch_size
        return slice(self.process_index * size, (self.process_index + 1) * size)


def plan_batches(config, data, distribution):
    """Checks `config.batch_size` against the data and the devices; the plan.

    Args:
        config: a `TrainConfig`.
        data: the run's `Datasets` (training and validation arrays).
        distribution: the run's `Distribution`.

    Returns:
        BatchPlan.

    Raises:
        UsageError: a batch larger than the training set.
        DistributionError: a batch (or the last validation batch, where the
            engine splits evaluation too) that does not split evenly over the
            devices.
    """
    batch_size = config.batch_size
    train_images = len(data.train_images)
    if train_images < batch_size:
        raise UsageError(
            f"--batch-size {batch_size} is larger than the {train_images} "
            "training images; lower it or train on more images"
        )
    replicas = distribution.num_replicas
    if batch_size % replicas:
        raise DistributionError(
            f"--batch-size {batch_size} does not split evenly over the {replicas} "
            f"replicas of {distribution.engine}; use a multiple of {replicas}"
        )
    remainder = len(data.val_images) % batch_size
    if distribution.even_evaluation_batches and remainder % replicas:
        raise DistributionError(
            f"the last validation batch ({len(data.val_images)} images % "
            f"--batch-size {batch_size} = {remainder}) does not split evenly "
            f"over {replicas} devices; choose a --validation-size that leaves a "
            f"multiple of {replicas}"
        )
    # Each process's devices are replicas, so a split over the replicas is
    # also a split over the processes.
    return BatchPlan(
        batch_size=batch_size,
        steps_per_epoch=train_images // batch_size,
        num_replicas=replicas,
        process_index=distribution.process_index,
        process_count=distribution.process_count,
    )
