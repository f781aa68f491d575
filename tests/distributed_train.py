"""The training command, stopped after its first epoch or killed, for the tests.

Run by tests/test_distribute.py, never collected by pytest itself:

    python tests/distributed_train.py [OPTIONS] TRAIN_FLAGS...
    torchrun ... tests/distributed_train.py [OPTIONS] TRAIN_FLAGS...

TRAIN_FLAGS are the training command's own (`--resume RUN` included).
Options:

    --stop-after-first-epoch  send itself SIGINT at the end of the first epoch
                              it trains, so the run stops with that epoch's
                              checkpoint; exits 0 when it stopped that way
                              (status 130), 1 otherwise (torchrun takes any
                              other status for a failure).
    --die-at-epoch N          SIGKILL itself as epoch N (from 1) begins its
                              first step: a process that dies, for the
                              others to notice.

Without options it exits with the command's status.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

if os.environ["KERAS_BACKEND"] == "tensorflow" and "TF_CONFIG" not in os.environ:
    # One process, two replicas: two logical CPUs, before TF starts.
    import tensorflow as tf

    (cpu,) = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )

import keras  # noqa: E402

from keras_cifar_resnet.config import build_parser  # noqa: E402
from keras_cifar_resnet.train import config_for_arguments  # noqa: E402
from keras_cifar_resnet.training.loop import train  # noqa: E402


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.first_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        if self.first_epoch is None:
            self.first_epoch = epoch
            os.kill(os.getpid(), signal.SIGINT)


class DieAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.current = None

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch + 1

    def on_train_batch_begin(self, batch, logs=None):
        if self.current == self.epoch:
            print(f"dying at epoch {self.epoch}", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    options = argparse.ArgumentParser()
    options.add_argument("--stop-after-first-epoch", action="store_true")
    options.add_argument("--die-at-epoch", type=int)
    ours, flags = options.parse_known_args(argv)
    config, resume = config_for_arguments(build_parser().parse_args(flags))
    callbacks = []
    if ours.stop_after_first_epoch:
        callbacks.append(StopAfterFirstEpoch())
    if ours.die_at_epoch is not None:
        callbacks.append(DieAtEpoch(ours.die_at_epoch))
    status = train(config, resume=resume, callbacks=callbacks)
    if ours.stop_after_first_epoch:
        return 0 if status == 128 + signal.SIGINT else 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
