"""The training command, data-parallel over 2 devices, stopped after epoch 1.

Run by tests/test_distribute.py, never collected by pytest itself:

    python tests/distributed_train.py OUT_DIR            # JAX, TensorFlow
    torchrun --standalone --nproc-per-node=2 tests/distributed_train.py OUT_DIR

Trains the tiny network on synthetic images for 2 epochs and sends itself
SIGINT at the end of the first, so the run stops with its epoch-1
checkpoint (exit status 130) for the test to resume on one device. Exits 0
when the run stopped that way, 1 otherwise.
"""

from __future__ import annotations

import os
import signal
import sys

if os.environ["KERAS_BACKEND"] == "tensorflow":
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402

from keras_cifar_resnet.config import resolve_config  # noqa: E402
from keras_cifar_resnet.training import train  # noqa: E402

# fmt: off
FLAGS = [
    "--model", "tiny", "--synthetic", "--epochs", "2", "--batch-size", "16",
    "--max-train-examples", "64", "--validation-size", "32",
    "--distribute", "data-parallel",
]
# fmt: on


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGINT)


if __name__ == "__main__":
    config = resolve_config([*FLAGS, "--output-dir", sys.argv[1]])
    status = train(config, callbacks=[StopAfterFirstEpoch()])
    sys.exit(0 if status == 128 + signal.SIGINT else 1)
