"""TensorBoard event files of a run: the epoch's figures, on every backend.

Keras's own `TensorBoard` callback writes through TensorFlow; this one
writes with the `tensorboard` package alone, so a JAX or torch install needs
no TensorFlow. One folder per split (`tensorboard/train`,
`tensorboard/validation`), as Keras lays them out, so that TensorBoard draws
`loss` and `accuracy` of both on one chart. The step is the epoch, counted
from 1 as `log.csv` counts it: a resumed run adds new event files to the
same folders and its points continue the same curves.
"""

from __future__ import annotations

import keras

TENSORBOARD_DIR = "tensorboard"
# (split folder, tag, the epoch log's key)
SCALARS = (
    ("train", "loss", "loss"),
    ("train", "accuracy", "accuracy"),
    ("train", "learning_rate", "learning_rate"),
    ("validation", "loss", "val_loss"),
    ("validation", "accuracy", "val_accuracy"),
)


class TensorBoardLog(keras.callbacks.Callback):
    """Writes each recorded epoch's loss, accuracy and learning rate.

    `callbacks.EpochEnd` calls `write` right after it records the epoch (log
    row and checkpoint); an epoch that was not recorded (a stop mid-epoch)
    is not written either, so a resume writes it once. As a callback it
    closes its files when training ends.

    Args:
        folder: path, the run folder; events go under its `tensorboard/`.
    """

    def __init__(self, folder):
        super().__init__()
        from tensorboard.summary import Writer

        self.writers = {
            split: Writer(str(folder / TENSORBOARD_DIR / split))
            for split in ("train", "validation")
        }

    def write(self, epoch, logs):
        """The recorded epoch `epoch` (0-based)'s figures in `logs`."""
        for split, tag, key in SCALARS:
            if logs.get(key) is not None:
                self.writers[split].add_scalar(tag, float(logs[key]), epoch + 1)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()
