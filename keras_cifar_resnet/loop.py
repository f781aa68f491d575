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
import errno
import math
import random
import signal
import sys
import threading
import time

import keras

from keras_cifar_resnet.backend_choice import choose_backend
from keras_cifar_resnet.build import build_model, compile_model
from keras_cifar_resnet.checkpoints import (
    CheckpointError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from keras_cifar_resnet.data import data_source
from keras_cifar_resnet.distribute import LostProcessError, setup_distribution
from keras_cifar_resnet.evaluation import evaluate_model, progress_verbosity
from keras_cifar_resnet.input_pipeline import SkipBatches, TrainingBatches, prepare_data
from keras_cifar_resnet.models import ResNet
from keras_cifar_resnet.precision_support import warn_if_slow
from keras_cifar_resnet.run_folder import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CURVES_NAME,
    DAMAGED_CHECKPOINT_NAME,
    FINAL_NAME,
    RunFolder,
    WriteError,
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


class RunStopped(BaseException):
    """A signal that stops the run at once: outside the epochs, or a second one.

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way (in Keras or a framework) swallows it.
    """

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class _Interrupts:
    """SIGINT and SIGTERM for the whole run, from setup to the last file.

    In the epochs, the first signal sets `signum`, which the training loop
    checks after each step: it stops there with a checkpoint. Outside the
    epochs (setup, the final test evaluation), and for a second signal, the
    run stops at once (`RunStopped`), except while a file is being written
    (`saving`): the signal is held until the write is done, so the checkpoint
    a first signal asked for is always completed. A third signal during a
    write stops at once; the atomic write leaves the old file then.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        self.in_epochs = False
        self._saving = 0
        self._held = None
        self._previous = {}

    def __enter__(self):
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self._saving and self._held is None:
            self._held = signum
            print(
                f"\n{name}: stopping once the file being saved is written",
                flush=True,
            )
            return
        if self.in_epochs and self.signum is None:
            self.signum = signum
            print(
                f"\n{name}: stopping after this step and saving a checkpoint "
                "(send it again to stop at once)",
                flush=True,
            )
            return
        raise RunStopped(signum)

    @contextlib.contextmanager
    def saving(self):
        """Holds signals until the block's writes are done, then acts on them."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1
        if not self._saving and self._held is not None:
            signum, self._held = self._held, None
            raise RunStopped(signum)

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class _StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, ending at the step reached.

    Keras finalizes the bar at the epoch's full length even when the epoch
    stopped early (a signal, a non-finite loss), showing `4/4` for 2 steps.
    """

    def _finalize_progbar(self, logs):
        if self.model.stop_training and self.progbar is not None:
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=True)
            return
        super()._finalize_progbar(logs)


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
        checkpoint: Path or None, the checkpoint a resumed run continues
            from (None: the folder's `checkpoint.npz`).
    """

    def __init__(
        self,
        config,
        *,
        resume=False,
        callbacks=(),
        distribution=None,
        learning_rate_scaling=None,
        checkpoint=None,
    ):
        self.config = config
        self.learning_rate_scaling = learning_rate_scaling
        self.distribution = distribution or setup_distribution("none")
        self.resume = resume
        self.extra_callbacks = list(callbacks)
        self.folder = RunFolder(config.output_dir)
        self.output_dir = self.folder.path
        self.checkpoint_path = self.folder.checkpoint_path
        self.resume_checkpoint = checkpoint or self.checkpoint_path
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
        # Training time before the current `fit`, and when that began.
        self.train_seconds = 0.0
        self._fit_started = None
        # What the last checkpoint records, so that the summary of a run
        # and of the same run resumed after its last epoch agree.
        self.checkpoint_seconds = 0.0
        self.epoch_line = None
        self._export_model = None
        self.interrupts = _Interrupts()  # replaced by `run`'s, in force

    @property
    def is_chief(self):
        return self.distribution.is_chief

    def run(self):
        """Trains from the start or the checkpoint, then evaluates; exit status.

        Every way it ends is one line saying how to continue: a signal (exit
        128 + its number), a non-finite loss or a failed write (exit 1).
        """
        with _Interrupts() as interrupts:
            self.interrupts = interrupts
            try:
                return self._run(interrupts)
            except RunStopped as stop:
                return self.report_stop_at_once(stop.signum)
            except WriteError as error:
                return self.report_write_error(error)

    def _run(self, interrupts):
        self.load_data()
        self.build_model()
        if self.resume:
            self.restore_checkpoint()
        else:
            self.start_records()
        # torch: from now on the forward pass runs through DDP.
        self.distribution.prepare_model(self.model)
        monitor = _RunMonitor(self, interrupts)
        # The start line promises that a signal from here on stops the run
        # with a checkpoint.
        interrupts.in_epochs = True
        try:
            self.announce()
            self.train_epochs(monitor)
        finally:
            interrupts.in_epochs = False
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
        # Where the data came from, also when no --data-dir was given.
        data = (
            {"path": None, "given_as": "synthetic"}
            if self.config.synthetic
            else data_source(self.config.data_dir)
        )
        return environment() | {
            "distribution": self.distribution.to_dict(),
            "data": data,
        }

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
        state = load_checkpoint(self.resume_checkpoint, self.model)
        if self.resume_checkpoint != self.checkpoint_path and self.is_chief:
            self._set_aside_damaged_checkpoint()
        self.start_epoch, self.start_step = state["epoch"], state["step"]
        self.best_epoch = state["best_epoch"]
        self.best_val_accuracy = state["best_val_accuracy"]
        self.train_seconds = self.checkpoint_seconds = state["train_seconds"]
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

    def _set_aside_damaged_checkpoint(self):
        """Resuming from the previous checkpoint: the damaged last one moves aside.

        Else the next save would keep the damaged file as the previous one
        and drop the good one.
        """
        damaged = self.folder.path / DAMAGED_CHECKPOINT_NAME
        if self.checkpoint_path.exists():
            self.checkpoint_path.replace(damaged)
            note = f"; the damaged one is kept as {damaged.name}"
        else:
            note = ""
        print(f"note: continuing from {self.resume_checkpoint.name}{note}", flush=True)

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
            f"parameters), recipe {config.recipe}, on {choose_backend().describe()}: "
            f"{len(data.train_images):,} training images, "
            f"{len(data.val_images):,} validation, {len(data.test_images):,} test"
            f"{' (synthetic)' if config.synthetic else ''}"
            f"; {_count(config.epochs, 'epoch')} of "
            f"{_count(self.steps_per_epoch, 'step')}; "
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
            _StepProgress(),
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
        self._fit_started = time.perf_counter()
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
            self.train_seconds = self.seconds_trained()
            self._fit_started = None

    def seconds_trained(self):
        """Training time so far, the current `fit` included (for checkpoints)."""
        if self._fit_started is None:
            return self.train_seconds
        return self.train_seconds + time.perf_counter() - self._fit_started

    def report_failure(self, failure):
        """The non-finite-loss message; the exit status for a failed run."""
        if self.checkpoint_path.exists():
            last, where = f"the last good checkpoint is {self.checkpoint_path}", ""
        else:
            # Nothing to keep: the same folder takes the next try.
            last = "no checkpoint was written before it"
            where = f", in the same --output-dir {self.output_dir} if you like"
        hint = (
            " or --mixed-precision off" if self.config.mixed_precision != "off" else ""
        )
        print(
            f"error: {failure}; training stopped and {last}. Try a lower "
            f"--learning-rate (this run: {self.config.learning_rate}){hint}{where}",
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

    def _how_to_continue(self):
        """Where the run's saved state stands and the command that continues it."""
        command = f"keras-cifar-resnet-train --resume {self.output_dir}"
        if not self.folder.holds_run():
            return "nothing was written yet; run the same command again"
        try:
            state = read_checkpoint_state(self.checkpoint_path)
        except CheckpointError:
            return (
                "no checkpoint was written yet; start it again from the "
                f"beginning with: {command}"
            )
        epoch, step = state["epoch"], state["step"]
        if (epoch, step) == (self.config.epochs, 0):
            return (
                f"training is complete and saved in {self.checkpoint_path}; run the "
                f"final test evaluation with: {command}"
            )
        where = (
            f"step {step} of epoch {epoch + 1}" if step else f"the end of epoch {epoch}"
        )
        return (
            f"the last checkpoint ({self.checkpoint_path}) is at {where}; "
            f"continue with: {command}"
        )

    def report_stop_at_once(self, signum):
        """A signal outside the epochs, or a second one; 128 + signal."""
        if self.is_chief:
            print(
                f"stopped by {signal.Signals(signum).name}; {self._how_to_continue()}",
                flush=True,
            )
        return 128 + signum

    def report_write_error(self, error):
        """A failed write (a full disk): what is intact, and how to continue."""
        kept = [
            name
            for name in (CHECKPOINT_NAME, BEST_NAME, FINAL_NAME)
            if (self.folder.path / name).is_file()
        ]
        intact = (
            f"the files written before ({', '.join(kept)}) are intact"
            if kept
            else "no earlier file is lost"
        )
        remedy = "free some space" if error.errno == errno.ENOSPC else "fix that"
        print(
            f"error: {error}; {intact}; {remedy}, then: {self._how_to_continue()}",
            file=sys.stderr,
        )
        return EXIT_FAILED

    def state(self, epoch, step):
        """The run's position for a checkpoint: continue at `epoch`, `step`."""
        self.checkpoint_seconds = self.seconds_trained()
        return {
            "epoch": epoch,
            "step": step,
            "seed": self.config.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "best_epoch": self.best_epoch,
            "best_val_accuracy": self.best_val_accuracy,
            "train_seconds": self.checkpoint_seconds,
            "backend": keras.backend.backend(),
            "time": now(),
        }

    def save_checkpoint(self, epoch, step):
        if self.is_chief:
            with self.interrupts.saving():
                save_checkpoint(
                    self.checkpoint_path, self.model, self.state(epoch, step)
                )
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
        with self.interrupts.saving():
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
        with self.interrupts.saving():
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
        print(
            f"evaluating {model_path} on {len(data.test_images):,} test images "
            "and their mirror images",
            flush=True,
        )
        # The chief alone, on its own devices: the others have finished. In
        # float32 whatever the training precision, so the figure is the one
        # the evaluate command gives for the same file.
        with self.distribution.local_scope(), dtype_policy("float32"):
            model = keras.saving.load_model(model_path)
            report = evaluate_model(
                model,
                data.test_images,
                data.test_labels,
                batch_size=config.batch_size,
                verbose=progress_verbosity(),
            )
        with self.interrupts.saving():
            self._write_summary(report)
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

    def _write_summary(self, report):
        config, data = self.config, self.data
        self.folder.write_summary(
            {
                "model_file": self.model_file,
                "selected_epoch": self.best_epoch or config.epochs,
                "validation_accuracy": self.best_val_accuracy,
                "epochs": config.epochs,
                "train_images": len(data.train_images),
                "synthetic": config.synthetic,
                "train_seconds": round(self.checkpoint_seconds, 1),
                "backend": keras.backend.backend(),
                "test": report,
            }
        )

    def _draw_curves(self):
        from keras_cifar_resnet.plots import (
            PlotsUnavailableError,
            plot_training_curves,
        )

        try:
            plot_training_curves(self.folder.log_path, self.folder.curves_path)
        except PlotsUnavailableError as err:
            print(f"note: {CURVES_NAME} not drawn: {err}")
        except OSError as err:  # a full disk: the results are written already
            reason = err.strerror or err
            print(f"note: {CURVES_NAME} not drawn: cannot write it ({reason})")


def _count(number, noun):
    """`1 epoch`, `3 epochs`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _epoch_line(row, epochs):
    """`epoch 3/100  loss 1.2345  accuracy ...  lr 0.1  12.3 s`."""
    parts = [f"epoch {row['epoch'] + 1}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if row.get(key) is not None:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"lr {row['learning_rate']:.4g}")
    parts.append(f"{row['seconds']:.1f} s")
    return "  ".join(parts)


def train(
    config, *, resume=False, callbacks=(), learning_rate_scaling=None, checkpoint=None
):
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
        checkpoint: Path or None, the checkpoint to resume from. Defaults
            to None (the run folder's `checkpoint.npz`).

    Raises:
        DataError, CheckpointError, UsageError, DistributionError: the
            training command reports them in one line.
    """
    # First: JAX's multi-host start and torch's process group must precede
    # any tensor.
    distribution = setup_distribution(config.distribute)
    if distribution.is_chief:
        warn_if_slow(config.mixed_precision, keras.backend.backend())
    policy = "float32" if config.mixed_precision == "off" else config.mixed_precision
    try:
        with dtype_policy(policy):
            return TrainingRun(
                config,
                resume=resume,
                callbacks=callbacks,
                distribution=distribution,
                learning_rate_scaling=learning_rate_scaling,
                checkpoint=checkpoint,
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
