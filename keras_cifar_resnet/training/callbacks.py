"""The training loop's callbacks, in the manner of Keras's own.

Each gets what it works with in its constructor. After each step:
`RunPosition` moves the run's position (it also knows a mid-epoch resume),
`StopOnNonFiniteLoss` stops at a non-finite loss, `CheckpointOnSignal`
saves the step after a stop signal. At the end of an epoch one callback,
`EpochEnd`, runs the whole sequence in the order it must run: validation,
the position, the best model, the log row with the checkpoint, then a stop
a signal asked for. What it adds to `logs` is for the epoch line.
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
    finite loss `EpochEnd` moves it to the next epoch (`advance`), with the
    best validation accuracy so far. A mid-epoch resume is
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
        self.whole_epoch = False

    def on_train_batch_end(self, batch, logs=None):
        step = self.first_step + batch + 1
        self.position = self.position.at_step(self._epoch, step, self.clock.now())
        self.whole_epoch = step == self.steps_per_epoch

    def advance(self, epoch, val_accuracy):
        """To the next epoch after whole epoch `epoch`; returns whether it is the best.

        Args:
            epoch: int, the epoch just finished (0-based).
            val_accuracy: float or None (no validation split).
        """
        self.position = self.position.after_epoch(epoch, val_accuracy, self.clock.now())
        return self.position.best_epoch == epoch + 1


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

    At an epoch's last step the epoch's own checkpoint (`EpochEnd`) serves,
    and the run stops after it (`after_epoch`). `stopped_at` is then the
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

    def after_epoch(self, epoch):
        """Stops after epoch `epoch`'s records if a signal asked for a stop."""
        if self.signals.signum and self.stopped_at is None:
            self.stopped_at = (epoch + 1, 0)
            self.model.stop_training = True


class EpochEnd(keras.callbacks.Callback):
    """The end of an epoch, as one sequence in the order it must run.

    1. Nothing is recorded for an epoch cut short (a signal mid-epoch, whose
       checkpoint `CheckpointOnSignal` wrote) or failed (a non-finite loss):
       the last checkpoint stays.
    2. The epoch's seconds (training only), then the held-out figures.
    3. The position advances; the best epoch is judged on those figures.
    4. `best.keras`, when this epoch is the best so far.
    5. The log row and the checkpoint, written together, signals held; then
       the same figures as TensorBoard events, with `--tensorboard`.
    6. A stop a signal asked for during the epoch's last step or 2-5.

    Adds `seconds`, `val_loss`, `val_accuracy`, `learning_rate` and
    `best_model` to `logs`, for the epoch line.

    Args:
        run_position: `RunPosition`, the position it advances and saves.
        data: `input_pipeline.Datasets`; validates on its held-out images.
        batch_size: int, the validation batch.
        export: `ModelExport`, the writer of `best.keras`.
        folder: the run's `RunFolder`, for the log.
        checkpoints: `checkpoints.Checkpoints`, the writer.
        signal_stop: `CheckpointOnSignal`, which stops the run after 5.
        signals: `StopSignals`, held while the log and checkpoint are written.
        is_chief: bool, whether this process writes the log.
        tensorboard: `tensorboard.TensorBoardLog` or None, the event writer.
    """

    def __init__(
        self,
        run_position,
        data,
        batch_size,
        export,
        folder,
        checkpoints,
        signal_stop,
        signals,
        is_chief,
        tensorboard=None,
    ):
        super().__init__()
        self.tensorboard = tensorboard
        self.run_position = run_position
        self.data = data
        self.batch_size = batch_size
        self.export = export
        self.folder = folder
        self.checkpoints = checkpoints
        self.signal_stop = signal_stop
        self.signals = signals
        self.is_chief = is_chief
        self._started = None

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if self.run_position.whole_epoch and _finite_loss(logs):
            logs["seconds"] = time.perf_counter() - self._started
            self._validate(logs)
            if self.run_position.advance(epoch, logs.get("val_accuracy")):
                self.export.save(BEST_NAME)
                logs["best_model"] = BEST_NAME
            self._record(epoch, logs)
            if self.tensorboard is not None:
                self.tensorboard.write(epoch, logs)
        self.signal_stop.after_epoch(epoch)

    def _validate(self, logs):
        if not len(self.data.val_images):
            return
        results = self.model.evaluate(
            self.data.val_images,
            self.data.val_labels,
            batch_size=self.batch_size,
            verbose=0,
            return_dict=True,
        )
        logs["val_loss"] = results["loss"]
        logs["val_accuracy"] = results["accuracy"]

    def _record(self, epoch, logs):
        """The log row and the checkpoint of the position just reached."""
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
