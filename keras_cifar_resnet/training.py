"""The training loop: one run in one folder, built, resumed, trained, evaluated.

`train(config)` runs (or, with `resume=True`, continues) the run that
`config` describes and returns the command's exit status; `TrainingRun` is
the run itself, in named steps. The run writes its files through
`run_folder.RunFolder`; SIGINT and SIGTERM stop it after the current step
with a checkpoint; a non-finite loss stops it without one.

Exit status: 0 done; 1 failed (non-finite loss); 128 + signal number when
stopped by SIGINT (130) or SIGTERM (143) after saving a checkpoint.

Example:

>>> config = resolve_config(["--model", "tiny", "--synthetic", "--epochs", "1",
...                          "--output-dir", "runs/smoke"])
>>> train(config)
0
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import threading
import time

import keras

from keras_cifar_resnet.checkpoints import load_checkpoint, save_checkpoint
from keras_cifar_resnet.distribute import LostProcessError, setup_distribution
from keras_cifar_resnet.input_pipeline import SkipBatches, TrainingBatches, prepare_data
from keras_cifar_resnet.metrics import evaluate_model
from keras_cifar_resnet.models import ResNet
from keras_cifar_resnet.recipe import build_model, compile_model
from keras_cifar_resnet.run_folder import (
    BEST_NAME,
    CURVES_NAME,
    FINAL_NAME,
    RunFolder,
    environment,
    now,
)

EXIT_FAILED = 1


@contextlib.contextmanager
def dtype_policy(name):
    """Keras's global dtype policy set to `name` inside the block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


class _Interrupts:
    """Turns SIGINT/SIGTERM into a flag the training loop checks after each step.

    A second signal gets the previous handler (for SIGINT, Python's
    KeyboardInterrupt), so a stuck run can still be stopped at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self._previous = {}

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signum = signum
        signal.signal(signum, self._previous[signum])
        print(
            f"\n{signal.Signals(signum).name}: stopping after this step and "
            "saving a checkpoint (send it again to stop at once)",
            flush=True,
        )

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class _RunMonitor(keras.callbacks.Callback):
    """Per-step checks (non-finite loss, interrupts) and per-epoch records.

    Each epoch: validation, a log row, the checkpoint, the best model. On a
    signal mid-epoch: a checkpoint at the current step. On a non-finite loss:
    stop and write nothing, so the last checkpoint stays the last good one.
    """

    def __init__(self, run, interrupts):
        super().__init__()
        self.run = run
        self.interrupts = interrupts
        self.step_offset = 0
        self.saved_metrics = None
        self.failure = None
        self.stopped_at = None
        self.epoch = None
        self.epoch_started = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_started = time.perf_counter()
        if self.saved_metrics is not None:
            # A mid-epoch resume: the epoch's running loss and accuracy
            # continue from the interrupted run's totals.
            for variable, value in zip(
                self.model.metrics_variables, self.saved_metrics, strict=True
            ):
                variable.assign(value)
            self.saved_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        step = self.step_offset + batch + 1
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = (
                f"the training loss became {float(loss)} at epoch {self.epoch + 1}, "
                f"step {step}"
            )
            self.model.stop_training = True
            return
        # At the epoch's last step the epoch's own checkpoint follows at once.
        if self.interrupts.signum and step < self.run.steps_per_epoch:
            # JAX keeps the training state outside the variables during an
            # epoch; the checkpoint must see this step's values.
            self.model.sync_training_state()
            self.run.save_checkpoint(self.epoch, step)
            self.stopped_at = (self.epoch, step)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.failure or self.stopped_at:
            return
        logs = logs if logs is not None else {}
        self.run.end_epoch(epoch, logs, time.perf_counter() - self.epoch_started)
        if self.interrupts.signum:
            self.stopped_at = (epoch + 1, 0)
            self.model.stop_training = True


class _EpochLine(keras.callbacks.Callback):
    """One summary line per epoch, after the progress bar's last update."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        if self.run.epoch_line is not None:
            print(self.run.epoch_line, flush=True)
            self.run.epoch_line = None


class TrainingRun:
    """One run in one output folder: built, resumed, trained, evaluated.

    Args:
        config: a `TrainConfig` whose `output_dir` is set.
        resume: bool, continue the run already in `config.output_dir`.
        callbacks: extra Keras callbacks, called before the run's own ones
            at each step and epoch (for tests).
        distribution: what `setup_distribution(config.distribute)` returned;
            None for one device. Only its chief process writes files.
        learning_rate_scaling: what `config.learning_rate_scaling` returned
            for the command line (None: the rate was not scaled), for the
            start line and `config.json`.
    """

    def __init__(
        self,
        config,
        *,
        resume=False,
        callbacks=(),
        distribution=None,
        learning_rate_scaling=None,
    ):
        self.config = config
        self.learning_rate_scaling = learning_rate_scaling
        self.distribution = distribution or setup_distribution("none")
        self.resume = resume
        self.extra_callbacks = list(callbacks)
        self.folder = RunFolder(config.output_dir)
        self.output_dir = self.folder.path
        self.checkpoint_path = self.folder.checkpoint_path
        self.model_file = FINAL_NAME if config.validation_size == 0 else BEST_NAME
        # Set by the steps of `run`, in order.
        self.data = None  # input_pipeline.Datasets
        self.batches = None  # TrainingBatches over all epochs
        self.steps_per_epoch = None
        self.model = None  # compiled, with its optimizer built
        # Where training starts: epoch, step within it, and (mid-epoch) the
        # interrupted epoch's metric totals.
        self.start_epoch, self.start_step, self.saved_metrics = 0, 0, None
        self.best_epoch = None
        self.best_val_accuracy = None
        self.train_seconds = 0.0
        self.epoch_line = None
        self._export_model = None

    @property
    def is_chief(self):
        return self.distribution.is_chief

    def run(self):
        """Trains from the start or the checkpoint, then evaluates; exit status."""
        self.load_data()
        self.build_model()
        if self.resume:
            self.restore_checkpoint()
        else:
            self.start_records()
        # torch: from now on the forward pass runs through DDP.
        self.distribution.prepare_model(self.model)
        with _Interrupts() as interrupts:
            self.announce()
            monitor = _RunMonitor(self, interrupts)
            self.train_epochs(monitor)
        if monitor.failure:
            return self.report_failure(monitor.failure)
        if monitor.stopped_at:
            return self.report_stop(monitor.stopped_at, interrupts.signum)
        return self.finish()

    def load_data(self):
        """The arrays and the batches; checks the batch size fits the devices."""
        config = self.config
        self.data = prepare_data(config)
        self.batches = TrainingBatches(
            self.data.train_images,
            self.data.train_labels,
            config.batch_size,
            seed=config.seed,
        )
        self.steps_per_epoch = self.batches.steps_per_epoch
        self.distribution.check_batch_size(config.batch_size, len(self.data.val_images))

    def build_model(self):
        """The recipe's compiled model, seeded, with its optimizer built."""
        # Keras's initializers draw their seeds from Python's `random`.
        random.seed(self.config.seed)
        # Under tf.distribute the variables (the optimizer's too) must be
        # created in the strategy's scope to be mirrored on every replica.
        with self.distribution.scope():
            model = build_model(self.config)
            compile_model(model, self.config, self.steps_per_epoch)
            model.optimizer.build(model.trainable_variables)
        self.model = model

    def _record(self):
        return environment() | {"distribution": self.distribution.to_dict()}

    def start_records(self):
        """A new folder: `config.json` and the log's header."""
        if self.is_chief:
            self.folder.start(
                {
                    "config": self.config.to_dict(),
                    "learning_rate_scaling": self.learning_rate_scaling,
                    "started": now(),
                }
                | self._record()
            )

    def restore_checkpoint(self):
        """The checkpoint's weights and position; the log cut back to match."""
        state = load_checkpoint(self.checkpoint_path, self.model)
        self.start_epoch, self.start_step = state["epoch"], state["step"]
        self.best_epoch = state["best_epoch"]
        self.best_val_accuracy = state["best_val_accuracy"]
        self.train_seconds = state["train_seconds"]
        if self.start_step:
            self.saved_metrics = [
                keras.ops.convert_to_numpy(v) for v in self.model.metrics_variables
            ]
        if self.is_chief:
            self.folder.truncate_log(self.start_epoch)
            self.folder.record_resume(
                {"time": now(), "epoch": self.start_epoch, "step": self.start_step}
                | self._record()
            )

    def announce(self):
        """The start line: from here on a signal ends the run with a checkpoint."""
        config, data = self.config, self.data
        if self.is_chief and config.distribute != "none":
            print(f"data-parallel: {self.distribution.describe()}", flush=True)
        width = (
            f" at width {config.width_multiplier:g}"
            if config.width_multiplier != 1
            else ""
        )
        print(
            f"training {config.model}{width} ({self.model.count_params():,} "
            f"parameters), recipe {config.recipe}, on {keras.backend.backend()}: "
            f"{len(data.train_images):,} training images, "
            f"{len(data.val_images):,} validation, {len(data.test_images):,} test"
            f"{' (synthetic)' if config.synthetic else ''}"
            f"; {config.epochs} epochs of {self.steps_per_epoch} steps; "
            f"{self._learning_rate_words()}; writing to {self.output_dir}",
            flush=True,
        )

    def _learning_rate_words(self):
        words = f"peak learning rate {self.config.learning_rate:g}"
        scaling = self.learning_rate_scaling
        if scaling is None:
            return words
        return (
            f"{words} (the recipe's {scaling['base_learning_rate']:g} at batch "
            f"{scaling['base_batch_size']}, scaled linearly to batch "
            f"{scaling['batch_size']}; give --learning-rate to set it yourself)"
        )

    def train_epochs(self, monitor):
        """The rest of an interrupted epoch, if any, then the remaining epochs."""
        config = self.config
        callbacks = [
            *self.extra_callbacks,
            monitor,
            keras.callbacks.ProgbarLogger(),
            _EpochLine(self),
        ]
        start_epoch, start_step = self.start_epoch, self.start_step
        if start_step and start_epoch < config.epochs:
            print(
                f"resuming epoch {start_epoch + 1} at step {start_step + 1}/"
                f"{self.steps_per_epoch}",
                flush=True,
            )
            monitor.step_offset, monitor.saved_metrics = start_step, self.saved_metrics
            rest = SkipBatches(self._batches(start_epoch), start_step)
            self._fit(rest, start_epoch, start_epoch + 1, callbacks, start_step)
            monitor.step_offset = 0
            start_epoch += 1
        if not (monitor.failure or monitor.stopped_at) and start_epoch < config.epochs:
            self._fit(
                self._batches(start_epoch), start_epoch, config.epochs, callbacks, 0
            )

    def _batches(self, start_epoch):
        """The training batches from `start_epoch` on, for one `fit`."""
        self.batches.start_epoch = start_epoch
        return self.batches

    def _fit(self, batches, initial_epoch, epochs, callbacks, skip):
        started = time.perf_counter()
        try:
            self.model.fit(
                # Each process feeds its part of every global batch.
                self.distribution.shard_batches(batches),
                epochs=epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=self.steps_per_epoch - skip,
                shuffle=False,
                callbacks=callbacks,
                verbose=1 if self.is_chief else 0,
            )
        finally:
            self.train_seconds += time.perf_counter() - started

    def report_failure(self, failure):
        """The non-finite-loss message; the exit status for a failed run."""
        last = (
            f"the last good checkpoint is {self.checkpoint_path}"
            if self.checkpoint_path.exists()
            else "no checkpoint was written before it"
        )
        hint = (
            " or --mixed-precision off" if self.config.mixed_precision != "off" else ""
        )
        print(
            f"error: {failure}; training stopped and {last}. Try a lower "
            f"--learning-rate (this run: {self.config.learning_rate}){hint}",
            file=sys.stderr,
        )
        return EXIT_FAILED

    def report_stop(self, stopped_at, signum):
        """Where a signal stopped the run and how to continue; 128 + signal."""
        if self.is_chief:
            epoch, step = stopped_at
            where = f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"
            name = signal.Signals(signum).name
            print(
                f"stopped by {name} after {where}; checkpoint saved to "
                f"{self.checkpoint_path}. Continue with: keras-cifar-resnet-train "
                f"--resume {self.output_dir}",
                flush=True,
            )
        return 128 + signum

    def state(self, epoch, step):
        """The run's position for a checkpoint: continue at `epoch`, `step`."""
        return {
            "epoch": epoch,
            "step": step,
            "seed": self.config.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "train_seconds": self.train_seconds,
            "backend": keras.backend.backend(),
            "time": now(),
        }

    def save_checkpoint(self, epoch, step):
        if self.is_chief:
            save_checkpoint(self.checkpoint_path, self.model, self.state(epoch, step))
        else:
            self.distribution.join_chief_read(self.model.metrics_variables)

    def _save_model(self, name):
        """Saves the current weights as an uncompiled model, atomically.

        Uncompiled so that loading it for inference neither needs this
        package's training options nor warns about optimizer variables.
        """
        if not self.is_chief:
            return
        if self._export_model is None:
            # On this process's devices: under a multi-process JAX mesh,
            # variables made by the chief alone would wait for the others.
            with self.distribution.local_scope():
                self._export_model = ResNet.from_config(self.model.get_config())
        self._export_model.set_weights(self.model.get_weights())
        self.folder.save_model(self._export_model, name)

    def _validate(self):
        """(val_loss, val_accuracy) on the held-out images."""
        results = self.model.evaluate(
            self.data.val_images,
            self.data.val_labels,
            batch_size=self.config.batch_size,
            verbose=0,
            return_dict=True,
        )
        return results["loss"], results["accuracy"]

    def end_epoch(self, epoch, logs, seconds):
        """Validation, log row, checkpoint and best model after epoch `epoch`."""
        row = {
            "epoch": epoch,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
        }
        marker = ""
        if len(self.data.val_images):
            row["val_loss"], row["val_accuracy"] = self._validate()
            # Shown by the progress bar, which runs after this callback.
            logs["val_loss"], logs["val_accuracy"] = (
                row["val_loss"],
                row["val_accuracy"],
            )
            if (
                self.best_val_accuracy is None
                or row["val_accuracy"] > self.best_val_accuracy
            ):
                self.best_epoch, self.best_val_accuracy = epoch + 1, row["val_accuracy"]
                self._save_model(BEST_NAME)
                marker = f"  (best so far, saved {BEST_NAME})"
        row["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        row["seconds"] = seconds
        if not self.is_chief:
            # As the chief's checkpoint below reads them (TF across workers).
            self.distribution.join_chief_read(self.model.metrics_variables)
            return
        self.folder.append_log_row(row)
        self.save_checkpoint(epoch + 1, 0)
        self.epoch_line = _epoch_line(row, self.config.epochs) + marker

    def finish(self):
        """Final model, test-set summary and curves; returns the exit status."""
        config, data = self.config, self.data
        if config.validation_size == 0:
            self._save_model(FINAL_NAME)
        if not self.is_chief:
            return 0
        model_path = self.output_dir / self.model_file
        print(f"evaluating {model_path} on {len(data.test_images):,} test images")
        # The chief alone, on its own devices: the others have finished. In
        # float32 whatever the training precision, so the figure is the one
        # the evaluate command gives for the same file.
        with self.distribution.local_scope(), dtype_policy("float32"):
            model = keras.saving.load_model(model_path)
            report = evaluate_model(
                model, data.test_images, data.test_labels, batch_size=config.batch_size
            )
        self.folder.write_summary(
            {
                "model_file": self.model_file,
                "selected_epoch": self.best_epoch or config.epochs,
                "validation_accuracy": self.best_val_accuracy,
                "epochs": config.epochs,
                "train_images": len(data.train_images),
                "synthetic": config.synthetic,
                "train_seconds": round(self.train_seconds, 1),
                "backend": keras.backend.backend(),
                "test": report,
            }
        )
        self._draw_curves()
        which = (
            f"best validation accuracy {self.best_val_accuracy:.2%} at epoch "
            f"{self.best_epoch}"
            if self.best_epoch
            else "the last epoch's model"
        )
        print(
            f"test accuracy {report['accuracy']:.2%} (flip TTA "
            f"{report['tta_accuracy']:.2%}), loss {report['loss']:.4f}; "
            f"{self.model_file} = {which}; results in {self.output_dir}",
            flush=True,
        )
        return 0

    def _draw_curves(self):
        from keras_cifar_resnet.plots import (
            PlotsUnavailableError,
            plot_training_curves,
        )

        try:
            plot_training_curves(self.folder.log_path, self.folder.curves_path)
        except PlotsUnavailableError as err:
            print(f"note: {CURVES_NAME} not drawn: {err}")


def _epoch_line(row, epochs):
    """`epoch 3/100  loss 1.2345  accuracy ...  lr 0.1  12.3 s`."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"lr {row['learning_rate']:.4g}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


def train(config, *, resume=False, callbacks=(), learning_rate_scaling=None):
    """Runs (or resumes) training as configured; returns the exit status.

    Sets the global dtype policy for the run and restores it afterwards, and
    seeds Python's `random` (Keras draws initializer seeds from it).

    Args:
        config: a `TrainConfig` with `output_dir` set.
        resume: bool, continue the run in `config.output_dir`. Defaults to
            False.
        callbacks: extra Keras callbacks (for tests). Defaults to none.
        learning_rate_scaling: how the learning rate was scaled to the batch
            size (`config.learning_rate_scaling`), to report it. Defaults to
            None (not scaled).

    Raises:
        DataError, CheckpointError, UsageError, DistributionError: the
            training command reports them in one line.
    """
    # First: JAX's multi-host start and torch's process group must precede
    # any tensor.
    distribution = setup_distribution(config.distribute)
    policy = "float32" if config.mixed_precision == "off" else config.mixed_precision
    try:
        with dtype_policy(policy):
            return TrainingRun(
                config,
                resume=resume,
                callbacks=callbacks,
                distribution=distribution,
                learning_rate_scaling=learning_rate_scaling,
            ).run()
    except Exception as error:
        lost = distribution.lost_process(error)
        if lost is None:
            raise
        raise LostProcessError(
            f"{lost}; this process stops too. Continue from the last checkpoint "
            f"by starting every process again with --resume {config.output_dir}"
        ) from error
    finally:
        distribution.close()
