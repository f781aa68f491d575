"""The training loop's callbacks, one job each, in the manner of Keras's own.

Each gets what it works with in its constructor; what one callback tells
the next goes through `logs`, as in Keras. `RunPosition` is the one that
advances the run's position, and the one that knows a mid-epoch resume;
the others read the position from it.
"""

from __future__ import annotations

import math
import time

import keras

from keras_cifar_resnet import messages
from keras_cifar_resnet.training.run_folder import BEST_NAME

# What the epoch's callbacks add to its `logs` for the epoch line; not
# figures of the model, so the progress bar leaves them out.
RECORD_KEYS = ("learning_rate", "seconds", "best_model")


class RunPosition(keras.callbacks.Callback):
    """The run's `Position`, advanced here and nowhere else.

    After each step it moves to the next step; after a whole epoch with a
    finite loss, to the next epoch, with the best validation accuracy so far
    (from `logs`, so it goes after `Validation`). A mid-epoch resume is
    handled here too: the epoch's first `position.step` steps are the ones
    the resumed `fit` skips, and the interrupted epoch's running metrics are
    put back before it continues.

    Args:
        position: `Position`, where this `fit` starts.
        steps_per_epoch: int, steps of a whole epoch.
        clock: `TrainingClock`, the seconds trained to record.
        epoch_metrics: list of arrays or None, the interrupted epoch's
            metric variables, restored when `position.step` is not 0.
    """

    def __init__(self, position, steps_per_epoch, clock, epoch_metrics=None):
        super().__init__()
        self.position = position
        self.steps_per_epoch = steps_per_epoch
        self.clock = clock
        self.first_step = position.step
        self._epoch_metrics = epoch_metrics if position.step else None
        self._epoch = position.epoch
        self.whole_epoch = False
        self.advanced = False

    def on_epoch_begin(self, epoch, logs=None):
        if self._epoch_metrics is not None:
            for variable, value in zip(
                self.model.metrics_variables, self._epoch_metrics, strict=True
            ):
                variable.assign(value)
            self._epoch_metrics = None
        elif epoch != self._epoch:
            self.first_step = 0
        self._epoch = epoch
        self.whole_epoch = self.advanced = False

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        self.position = self.position.at_step(self._epoch, step, self.clock.now())
        self.whole_epoch = step == self.steps_per_epoch

    def on_epoch_end(self, epoch, logs=None):
        if not (self.whole_epoch and _finite_loss(logs)):
            return  # cut short by a signal, or failed: the last checkpoint stays
        self.position = self.position.after_epoch(
            epoch, (logs or {}).get("val_accuracy"), self.clock.now()
        )
        self.advanced = True


def _finite_loss(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops at the first non-finite loss and writes nothing more.

    So the last checkpoint stays the last good one. `failure` then says
    where it happened.

    Args:
        run_position: `RunPosition`, for the step it happened at.
    """

    def __init__(self, run_position):
        super().__init__()
        self.run_position = run_position
        self.failure = None

    def on_train_batch_end(self, batch, logs=None):
        if not _finite_loss(logs):
            position = self.run_position.position
            self.failure = (
                f"the training loss became {float(logs['loss'])} at epoch "
                f"{position.epoch + 1}, step {position.step}"
            )
            self.model.stop_training = True


class CheckpointOnSignal(keras.callbacks.Callback):
    """After a stop signal: a checkpoint at the current step, then stop.

    At an epoch's last step the epoch's own checkpoint (`EpochCheckpoint`)
    serves, and the run stops after it. `stopped_at` is then the
    (epoch, step) the run continues from.

    Args:
        signals: the run's `StopSignals`.
        checkpoints: `Checkpoints`, the writer.
        run_position: `RunPosition`, the position saved with the checkpoint.
    """

    def __init__(self, signals, checkpoints, run_position):
        super().__init__()
        self.signals = signals
        self.checkpoints = checkpoints
        self.run_position = run_position
        self.stopped_at = None

    def on_train_batch_end(self, batch, logs=None):
        if self.model.stop_training:
            return  # stopped by a failure: this step is not worth keeping
        if self.signals.signum and not self.run_position.whole_epoch:
            # JAX keeps the training state outside the variables during an
            # epoch; the checkpoint must see this step's values.
            self.model.sync_training_state()
            position = self.run_position.position
            self.checkpoints.save(position)
            self.stopped_at = (position.epoch, position.step)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.signals.signum and self.stopped_at is None:
            self.stopped_at = (epoch + 1, 0)
            self.model.stop_training = True


class Validation(keras.callbacks.Callback):
    """After each whole epoch: the held-out figures and the epoch's seconds.

    Adds `seconds` (the epoch's training time, before validation) and, when
    there is a validation split, `val_loss` and `val_accuracy` to `logs`.

    Args:
        data: `input_pipeline.Datasets`; validates on its held-out images.
        batch_size: int, the validation batch.
        run_position: `RunPosition`, which says whether the epoch was whole.
    """

    def __init__(self, data, batch_size, run_position):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.run_position = run_position
        self._started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if not (self.run_position.whole_epoch and _finite_loss(logs)):
            return
        logs = logs if logs is not None else {}
        logs["seconds"] = time.perf_counter() - self._started
        if len(self.data.val_images):
            results = self.model.evaluate(
                self.data.val_images,
                self.data.val_labels,
                batch_size=self.batch_size,
                verbose=0,
                return_dict=True,
            )
            logs["val_loss"] = results["loss"]
            logs["val_accuracy"] = results["accuracy"]


class BestModel(keras.callbacks.Callback):
    """Saves the model as `best.keras` after an epoch that improved on the best.

    Args:
        run_position: `RunPosition`, which holds the best epoch so far.
        export: `ModelExport`, the writer.
    """

    def __init__(self, run_position, export):
        super().__init__()
        self.run_position = run_position
        self.export = export

    def on_epoch_end(self, epoch, logs=None):
        if self.run_position.advanced and (
            self.run_position.position.best_epoch == epoch + 1
        ):
            self.export.save(BEST_NAME)
            if logs is not None:
                logs["best_model"] = BEST_NAME


class EpochCheckpoint(keras.callbacks.Callback):
    """After each whole epoch: the log row and the checkpoint, written together.

    Adds the learning rate to `logs`.

    Args:
        run_position: `RunPosition`, the position saved with the checkpoint.
        folder: the run's `RunFolder`, for the log.
        checkpoints: `Checkpoints`, the writer.
        signals: `StopSignals`, held while the log and checkpoint are written.
        is_chief: bool, whether this process writes the log.
    """

    def __init__(self, run_position, folder, checkpoints, signals, is_chief):
        super().__init__()
        self.run_position = run_position
        self.folder = folder
        self.checkpoints = checkpoints
        self.signals = signals
        self.is_chief = is_chief

    def on_epoch_end(self, epoch, logs=None):
        if not self.run_position.advanced:
            return
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        row = {"epoch": epoch + 1}  # from 1, as the epoch line and the plots
        row |= {key: logs.get(key) for key in ("loss", "accuracy")}
        if "val_loss" in logs:
            row |= {key: logs[key] for key in ("val_loss", "val_accuracy")}
        row |= {key: logs[key] for key in ("learning_rate", "seconds")}
        with self.signals.saving():
            if self.is_chief:
                self.folder.append_log_row(row)
            self.checkpoints.save(self.run_position.position)


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
