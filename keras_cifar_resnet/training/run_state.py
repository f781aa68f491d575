"""A run's position, its training clock, and the writers of its state.

`Position` is where the run stands (the next epoch and step, the best
epoch so far, the seconds trained): an immutable value that only
`callbacks.RunPosition` advances (at an epoch's end, when `EpochEnd` says
so); a checkpoint stores it with the weights, and resuming reads it back.
`ModelExport` (like `checkpoints.Checkpoints`) writes under
`StopSignals.saving`, so a signal never cuts a file short, and only on the
chief process of a distributed run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time

from keras_cifar_resnet.models import ResNet


@dataclasses.dataclass(frozen=True)
class Position:
    """Where a run stands: it continues at step `step` of epoch `epoch` (0-based).

    `train_seconds` is the time in `fit` when the position was reached; the
    checkpoint and the summary record it under the same name, so that the
    summary of a run and of the same run resumed after its last epoch agree.
    """

    epoch: int = 0
    step: int = 0
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    train_seconds: float = 0.0

    @classmethod
    def from_checkpoint(cls, state):
        """The position a checkpoint's state (`read_checkpoint_state`) records."""
        return cls(
            epoch=state["epoch"],
            step=state["step"],
            best_epoch=state["best_epoch"],
            best_val_accuracy=state["best_val_accuracy"],
            train_seconds=state["train_seconds"],
        )

    def at_step(self, epoch, step, train_seconds):
        """This position moved to step `step` of epoch `epoch`."""
        return dataclasses.replace(
            self, epoch=epoch, step=step, train_seconds=train_seconds
        )

    def after_epoch(self, epoch, val_accuracy, train_seconds):
        """The position after whole epoch `epoch`, its best model updated.

        Args:
            epoch: int, the epoch just finished (0-based).
            val_accuracy: float or None (no validation split).
            train_seconds: float, the time in `fit` so far.
        """
        best = {}
        if val_accuracy is not None and (
            self.best_val_accuracy is None or val_accuracy > self.best_val_accuracy
        ):
            best = {"best_epoch": epoch + 1, "best_val_accuracy": val_accuracy}
        return dataclasses.replace(
            self, epoch=epoch + 1, step=0, train_seconds=train_seconds, **best
        )


class TrainingClock:
    """Seconds spent in `fit`, over every `fit` of the run and its resumes."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds
        self._started = None

    @contextlib.contextmanager
    def running(self):
        self._started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds = self.now()
            self._started = None

    def now(self):
        """The training time so far, the current `fit` included."""
        if self._started is None:
            return self.seconds
        return self.seconds + time.perf_counter() - self._started


class ModelExport:
    """Saves the model's current weights as an uncompiled `.keras` file.

    Uncompiled so that loading it for inference neither needs this package's
    training options nor warns about optimizer variables.

    Args:
        folder: the run's `RunFolder`.
        model: the model being trained.
        distribution: the run's `Distribution`; only its chief writes.
        signals: `StopSignals`, held while the file is written.
    """

    def __init__(self, folder, model, distribution, signals):
        self.folder = folder
        self.model = model
        self.distribution = distribution
        self.signals = signals
        self._copy = None

    def save(self, name):
        if not self.distribution.is_chief:
            return
        if self._copy is None:
            # On this process's devices: under a multi-process JAX mesh,
            # variables made by the chief alone would wait for the others.
            with self.distribution.local_scope():
                self._copy = ResNet.from_config(self.model.get_config())
        self._copy.set_weights(self.model.get_weights())
        with self.signals.saving():
            self.folder.save_model(self._copy, name)
