"""The training loop's callbacks, one job each, in the manner of Keras's own.

Each gets what it works with in its constructor; what one callback tells
the next goes through `logs`, as in Keras. Steps are counted from
`first_step`, the steps of the epoch a resumed `fit` skips.
"""

from __future__ import annotations

import math
import time

import keras

from keras_cifar_resnet import messages
from keras_cifar_resnet.run_folder import BEST_NAME

# What `EpochRecords` adds to an epoch's `logs` for the epoch line; not
# figures of the model, so the progress bar leaves them out.
RECORD_KEYS = ("learning_rate", "seconds", "best_model")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops at the first non-finite loss and writes nothing more.

    So the last checkpoint stays the last good one. `failure` then says
    where it happened.
    """

    def __init__(self, first_step=0):
        super().__init__()
        self.first_step = first_step
        self.failure = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = self.first_step + batch + 1
            self.failure = (
                f"the training loss became {float(loss)} at epoch {self._epoch + 1}, "
                f"step {step}"
            )
            self.model.stop_training = True


class CheckpointOnSignal(keras.callbacks.Callback):
    """After a stop signal: a checkpoint at the current step, then stop.

    At an epoch's last step the epoch's own checkpoint (`EpochRecords`)
    serves, and the run stops after it. `stopped_at` is then the
    (epoch, step) the run continues from.

    Args:
        signals: the run's `StopSignals`.
        checkpoints: `Checkpoints`, the writer.
        position: the run's `Position`, saved with the checkpoint.
        steps_per_epoch: int, steps of a whole epoch.
        first_step: int, steps of the first epoch this `fit` skips.
    """

    def __init__(self, signals, checkpoints, position, steps_per_epoch, first_step=0):
        super().__init__()
        self.signals = signals
        self.checkpoints = checkpoints
        self.position = position
        self.steps_per_epoch = steps_per_epoch
        self.first_step = first_step
        self.stopped_at = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.model.stop_training:
            return  # stopped by a failure: this step is not worth keeping
        step = self.first_step + batch + 1
        if self.signals.signum and step < self.steps_per_epoch:
            # JAX keeps the training state outside the variables during an
            # epoch; the checkpoint must see this step's values.
            self.model.sync_training_state()
            self.position.epoch, self.position.step = self._epoch, step
            self.checkpoints.save(self.position)
            self.stopped_at = (self._epoch, step)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.signals.signum and self.stopped_at is None:
            self.stopped_at = (epoch + 1, 0)
            self.model.stop_training = True


class RestoreEpochMetrics(keras.callbacks.Callback):
    """A mid-epoch resume: the epoch's running loss and accuracy continue.

    Args:
        values: the interrupted run's metric variables, as arrays.
    """

    def __init__(self, values):
        super().__init__()
        self.values = values

    def on_epoch_begin(self, epoch, logs=None):
        if self.values is not None:
            for variable, value in zip(
                self.model.metrics_variables, self.values, strict=True
            ):
                variable.assign(value)
            self.values = None


class EpochRecords(keras.callbacks.Callback):
    """After each whole epoch: validation, the log row, checkpoint, best model.

    Adds the validation figures, the learning rate, the epoch's seconds and
    (when it saved one) the best model's name to `logs`.

    Args:
        data: `input_pipeline.Datasets`; validates on its held-out images.
        batch_size: int, the validation batch.
        folder: the run's `RunFolder`, for the log.
        checkpoints: `Checkpoints`, written after every epoch.
        best_model: `ModelExport`, saving the best model as `best.keras`.
        position: the run's `Position`, advanced here.
        signals: `StopSignals`, held while the log and checkpoint are written.
        is_chief: bool, whether this process writes the log.
    """

    def __init__(
        self,
        data,
        batch_size,
        folder,
        checkpoints,
        best_model,
        position,
        signals,
        is_chief,
    ):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.folder = folder
        self.checkpoints = checkpoints
        self.best_model = best_model
        self.position = position
        self.signals = signals
        self.is_chief = is_chief
        self._started = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        loss = logs.get("loss")
        if self._steps < self.params["steps"] or (
            loss is not None and not math.isfinite(float(loss))
        ):
            return  # cut short by a signal, or failed: the last checkpoint stays
        # The epoch's training time, before validation and saving.
        logs["seconds"] = time.perf_counter() - self._started
        if len(self.data.val_images):
            results = self.model.evaluate(
                self.data.val_images,
                self.data.val_labels,
                batch_size=self.batch_size,
                verbose=0,
                return_dict=True,
            )
            logs["val_loss"], logs["val_accuracy"] = (
                results["loss"],
                results["accuracy"],
            )
            best = self.position.best_val_accuracy
            if best is None or logs["val_accuracy"] > best:
                self.position.best_epoch = epoch + 1
                self.position.best_val_accuracy = logs["val_accuracy"]
                self.best_model.save(BEST_NAME)
                logs["best_model"] = BEST_NAME
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        self.position.epoch, self.position.step = epoch + 1, 0
        row = {"epoch": epoch + 1}  # from 1, as the epoch line and the plots
        row |= {key: logs.get(key) for key in ("loss", "accuracy")}
        if len(self.data.val_images):
            row |= {key: logs[key] for key in ("val_loss", "val_accuracy")}
        row |= {key: logs[key] for key in ("learning_rate", "seconds")}
        with self.signals.saving():
            if self.is_chief:
                self.folder.append_log_row(row)
            self.checkpoints.save(self.position)


class StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, ending at the step reached, showing figures only.

    Keras finalizes the bar at the epoch's full length even when the epoch
    stopped early (a signal, a non-finite loss), showing `4/4` for 2 steps.
    """

    def _finalize_progbar(self, logs):
        logs = {k: v for k, v in (logs or {}).items() if k not in RECORD_KEYS}
        if self.model.stop_training and self.progbar is not None:
            self.progbar.update(self.seen, list(logs.items()), finalize=True)
            return
        super()._finalize_progbar(logs)


class EpochLine(keras.callbacks.Callback):
    """One summary line per recorded epoch, from its `logs`."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if logs and "seconds" in logs:
            print(messages.epoch_line(epoch, self.epochs, logs), flush=True)
