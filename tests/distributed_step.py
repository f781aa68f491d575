"""One data-parallel training step over 2 devices, beside single-device references.

Run by tests/test_distribute.py, never collected by pytest itself:

    python tests/distributed_step.py OUT_DIR            # JAX, TensorFlow
    torchrun --standalone --nproc-per-node=2 tests/distributed_step.py OUT_DIR

JAX needs `XLA_FLAGS=--xla_force_host_platform_device_count=2`; TensorFlow's
two logical CPUs are configured here, before anything else touches it. Or
as two processes of one device each (`tests/multi_process.py`: JAX's
KERAS_DISTRIBUTION_* variables, TF_CONFIG, torchrun --nnodes=2).

Every process writes `OUT_DIR/result-<process>.npz` with the model's
variables (weights and BatchNorm moving statistics) after one SGD step:
`parallel` (the data-parallel step on the global batch), `full` (one device,
the whole global batch), `half0`/`half1` (one device, each half alone), and,
from the chief, `reloaded` (the data-parallel run's checkpoint loaded into a
single-device model). A single-device checkpoint starts every model, so the
data-parallel model also proves the other direction of portability.

The data-parallel model augments its batch inside the step (crop, flip,
cutout); the single-device references train, without augmentation, on the
global batch as augmented on one device. So `parallel` matches them only if
each replica draws the augmentation of its own slice of the global batch.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path

BACKEND = os.environ["KERAS_BACKEND"]
if BACKEND == "tensorflow" and "TF_CONFIG" not in os.environ:
    # One process, two replicas: two logical CPUs. (Under TF_CONFIG each
    # worker process is one replica.)
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_cifar_resnet.data.augment import Augmentation  # noqa: E402
from keras_cifar_resnet.models import TinyResNet  # noqa: E402
from keras_cifar_resnet.training.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from keras_cifar_resnet.training.distribute import setup_distribution  # noqa: E402

GLOBAL_BATCH = 8
LEARNING_RATE = 0.1
AUGMENTATION = Augmentation(crop_padding=4, flip=True, cutout_size=8, seed=3)


@contextlib.contextmanager
def single_device():
    """Models made in here use one device, whatever the distribution."""
    if BACKEND != "jax":
        yield
        return
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(previous)


def make_model(checkpoint=None, augmentation=None):
    model = TinyResNet()
    # Plain SGD: one step is linear in the gradient, so a step on the
    # average of two gradients is the average of the two steps.
    model.compile(
        keras.optimizers.SGD(LEARNING_RATE, name="sgd"),
        weight_decay=1e-3,
        augmentation=augmentation,
    )
    model.optimizer.build(model.trainable_variables)
    if checkpoint is not None:
        load_checkpoint(checkpoint, model)
    return model


def step(model, images, labels):
    model.fit(
        images, labels, batch_size=len(images), epochs=1, shuffle=False, verbose=0
    )
    return [keras.ops.convert_to_numpy(v.value) for v in model.variables]


class OneBatch(keras.utils.PyDataset):
    """One global batch, as `input_pipeline.TrainingBatches` yields them."""

    def __init__(self, images, labels):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.labels = images, labels

    @property
    def num_batches(self):
        return 1

    def __getitem__(self, index):
        return self.images, self.labels


def main(out_dir):
    out_dir = Path(out_dir)
    distribution = setup_distribution("data-parallel")
    assert distribution.num_replicas == 2, distribution.describe()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (GLOBAL_BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, GLOBAL_BATCH)
    half = GLOBAL_BATCH // 2
    process = distribution.process_index
    init = out_dir / f"init-{process}.npz"

    results = {}
    with single_device():
        random.seed(0)
        save_checkpoint(init, make_model(), {"what": "single-device start"})
        # Step 0's augmentation of the whole global batch, on one device.
        augmented = keras.ops.convert_to_numpy(AUGMENTATION(images, 0))
        results["full"] = step(make_model(init), augmented, labels)
        for index in range(2):
            part = slice(index * half, (index + 1) * half)
            results[f"half{index}"] = step(
                make_model(init), augmented[part], labels[part]
            )

    with distribution.scope():
        model = make_model(init, augmentation=AUGMENTATION)
    distribution.prepare_model(model)
    # What the training run feeds: this process's share of the global batch
    # (its slice on JAX and torch, the whole batch on TensorFlow).
    batches = distribution.shard_batches(OneBatch(images, labels))
    model.fit(batches, epochs=1, shuffle=False, verbose=0)
    results["parallel"] = [keras.ops.convert_to_numpy(v.value) for v in model.variables]

    if distribution.is_chief:
        written = save_checkpoint(out_dir / "parallel.npz", model, {"what": "dp"})
        with single_device():
            reloaded = make_model(written)
        results["reloaded"] = [
            keras.ops.convert_to_numpy(v.value) for v in reloaded.variables
        ]
    else:
        # As the training run does: the chief's checkpoint reads the metrics'
        # sync-on-read totals, a collective across TensorFlow workers.
        distribution.join_chief_read(model.metrics_variables)
    names = [v.path for v in model.variables]
    arrays = {
        f"{key}/{i:03d}": value
        for key, values in results.items()
        for i, value in enumerate(values)
    }
    np.savez(
        out_dir / f"result-{process}.npz",
        names=np.array(names),
        describe=np.array(distribution.describe()),
        batch_norm_statistics=np.array(distribution.batch_norm_statistics),
        process_count=np.array(distribution.process_count),
        **arrays,
    )
    distribution.close()


if __name__ == "__main__":
    main(sys.argv[1])
