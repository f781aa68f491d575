"""Train a ResNet on CIFAR-10: `python -m keras_cifar_resnet.train --help`.

The run uses the current Keras backend (KERAS_BACKEND) and writes to its
output folder:

- `config.json`: the resolved settings, backend, package versions, device;
- `log.csv`: one row per epoch (loss, accuracy, val_loss, val_accuracy,
  learning_rate, seconds);
- `checkpoint.npz`: written atomically after every epoch (and on SIGINT or
  SIGTERM mid-epoch), for `--resume`;
- `best.keras`: the model with the best validation accuracy (`final.keras`,
  the last epoch's model, when `--validation-size 0`);
- `summary.json`: that model on the test set (loss, accuracy with and
  without flip test-time augmentation, per class, confusion matrix);
- `curves.png`: loss and accuracy per epoch (needs matplotlib).

Exit status: 0 done; 1 failed (missing data, non-finite loss); 2 bad
command line; 128 + signal number when stopped by SIGINT (130) or SIGTERM
(143) after saving a checkpoint.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import random
import signal
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np

from keras_cifar_resnet.augment import Augmentation
from keras_cifar_resnet.checkpoints import (
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_state,
    save_checkpoint,
)
from keras_cifar_resnet.config import (
    RESUME_OVERRIDABLE,
    TrainConfig,
    build_parser,
    config_from_flags,
    explicit_flags,
    learning_rate_scaling,
)
from keras_cifar_resnet.data import (
    DataError,
    TrainingBatches,
    load_cifar10,
    split_validation,
    synthetic_cifar10,
)
from keras_cifar_resnet.distribute import DistributionError, setup_distribution
from keras_cifar_resnet.evaluate import evaluate_model
from keras_cifar_resnet.models import MODELS, ResNet, TinyResNet

CONFIG_NAME = "config.json"
LOG_NAME = "log.csv"
BEST_NAME = "best.keras"
FINAL_NAME = "final.keras"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
LOG_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)

EXIT_FAILED = 1
EXIT_USAGE = 2

# Real CIFAR-10 sizes, for synthetic data of the same shape.
_TRAIN_SIZE = 50_000
_TEST_SIZE = 10_000


class UsageError(Exception):
    """A bad command line or setting: exit status 2, one line."""


# ------------------------------------------------------------------- setup


@dataclasses.dataclass
class Datasets:
    """The run's arrays: uint8 NHWC images, int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def prepare_data(config):
    """Loads (or synthesises) CIFAR-10, holds out validation, trims the training set.

    Raises:
        DataError: the data cannot be found or read.
        UsageError: the sizes do not fit the data.
    """
    if config.synthetic:
        extra = config.max_train_examples or _TRAIN_SIZE - config.validation_size
        (x_train, y_train), (x_test, y_test) = synthetic_cifar10(
            num_train=max(extra, 1) + config.validation_size,
            num_test=min(_TEST_SIZE, config.max_train_examples or _TEST_SIZE),
            seed=config.seed,
        )
    else:
        (x_train, y_train), (x_test, y_test) = load_cifar10(config.data_dir)
    if config.validation_size >= len(x_train):
        raise UsageError(
            f"--validation-size must be below the {len(x_train)} training images, "
            f"got {config.validation_size}"
        )
    (x_train, y_train), (x_val, y_val) = split_validation(
        x_train, y_train, config.validation_size, seed=config.seed
    )
    if config.max_train_examples is not None:
        x_train = x_train[: config.max_train_examples]
        y_train = y_train[: config.max_train_examples]
    if len(x_train) < config.batch_size:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the {len(x_train)} "
            "training images; lower it or train on more images"
        )
    return Datasets(x_train, y_train, x_val, y_val, x_test, y_test)


def build_model(config):
    """The untrained network named by `config.model`, at its width."""
    build = TinyResNet if config.model == "tiny" else MODELS[config.model]
    return build(
        batch_norm_momentum=config.batch_norm_momentum,
        width_multiplier=config.width_multiplier,
    )


def learning_rate_schedule(config, steps_per_epoch):
    """The learning rate (a float or a schedule of the optimizer's step).

    Cosine: a linear warm-up over `warmup_epochs` (capped at half the run,
    so short runs still decay), then cosine decay to 0 at the last step.
    Warm-up step `s` of `w` uses `(s + 1) / (w + 1)` of the peak: starting
    from exactly 0 would make the first step a no-op.
    """
    if config.schedule == "constant":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps // 2)
    if not warmup_steps:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps)
    # Keras's warm-up is initial + (target - initial) * s / w.
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / (warmup_steps + 1),
        total_steps - warmup_steps,
        warmup_target=config.learning_rate,
        warmup_steps=warmup_steps,
    )


def build_optimizer(config, steps_per_epoch):
    """The recipe's optimizer; wrapped for loss scaling under mixed_float16.

    Weight decay is not the optimizer's: it is the model's coupled L2 term
    (see `ResNet.compile`), as in `torch.optim.SGD(weight_decay=...)`.
    """
    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=config.momentum, nesterov=True
        )
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if config.mixed_precision == "mixed_float16":
        # float16 gradients underflow without it; bfloat16 has float32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def compile_model(model, config, steps_per_epoch):
    """Compiles `model` with the recipe's optimizer, loss and augmentation."""
    model.compile(
        build_optimizer(config, steps_per_epoch),
        label_smoothing=config.label_smoothing,
        weight_decay=config.weight_decay,
        augmentation=Augmentation(
            crop_padding=config.crop_padding,
            flip=config.flip,
            cutout_size=config.cutout_size,
            seed=config.seed,
        ),
        jit_compile={"auto": "auto", "on": True, "off": False}[config.jit_compile],
    )


# ----------------------------------------------------------- run records


def _now():
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def package_versions():
    """Versions of the packages that decide the numbers (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in (
        "keras-cifar-resnet",
        "keras",
        "numpy",
        "jax",
        "jaxlib",
        "tensorflow",
        "tensorflow-cpu",
        "torch",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description():
    """Where the backend puts tensors, read from a tensor (no framework import)."""
    tensor = keras.ops.zeros(())
    device = getattr(tensor, "device", None)
    if callable(device):
        device = device()
    return {
        "tensor_device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }


def _write_json(path, data):
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)


def _environment():
    return {
        "backend": keras.backend.backend(),
        "versions": package_versions(),
        "device": device_description(),
    }


def _format_number(value):
    return "" if value is None else f"{value:.6g}"


def _truncate_log(path, epochs_done):
    """Keeps the log's first `epochs_done` epochs (a resumed run rewrites the rest)."""
    with open(path, newline="") as file:
        rows = [row for row in csv.DictReader(file) if int(row["epoch"]) < epochs_done]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


class _SkipBatches(keras.utils.PyDataset):
    """`batches` without its first `skip` batches: the rest of a resumed epoch."""

    def __init__(self, batches, skip):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batches = batches
        self.skip = skip

    @property
    def num_batches(self):
        return None

    def __getitem__(self, index):
        return self.batches[index + self.skip]


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

    def _sync(self):
        # JAX keeps the training state outside the variables during an epoch.
        if hasattr(self.model, "jax_state_sync"):
            self.model.jax_state_sync()

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
            self._sync()
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
        if self.run.last_line is not None:
            print(self.run.last_line, flush=True)
            self.run.last_line = None


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
        self.output_dir = Path(config.output_dir)
        self.checkpoint_path = self.output_dir / CHECKPOINT_NAME
        self.log_path = self.output_dir / LOG_NAME
        self.last_line = None
        self.best_epoch = None
        self.best_val_accuracy = None
        self.train_seconds = 0.0
        self._export_model = None

    @property
    def model_file(self):
        return FINAL_NAME if self.config.validation_size == 0 else BEST_NAME

    def run(self):
        config = self.config
        data = prepare_data(config)
        self.data = data
        batches = TrainingBatches(
            data.train_images, data.train_labels, config.batch_size, seed=config.seed
        )
        self.steps_per_epoch = batches.steps_per_epoch
        distribution, chief = self.distribution, self.distribution.is_chief
        distribution.check_batch_size(config.batch_size, len(data.val_images))

        # Keras's initializers draw their seeds from Python's `random`.
        random.seed(config.seed)
        # Under tf.distribute the variables (the optimizer's too) must be
        # created in the strategy's scope to be mirrored on every replica.
        with distribution.scope():
            model = build_model(config)
            compile_model(model, config, self.steps_per_epoch)
            model.optimizer.build(model.trainable_variables)
        self.model = model

        start_epoch, start_step, saved_metrics = 0, 0, None
        if self.resume:
            state = load_checkpoint(self.checkpoint_path, model)
            start_epoch, start_step = state["epoch"], state["step"]
            self.best_epoch = state["best_epoch"]
            self.best_val_accuracy = state["best_val_accuracy"]
            self.train_seconds = state["train_seconds"]
            if start_step:
                saved_metrics = [
                    keras.ops.convert_to_numpy(v) for v in model.metrics_variables
                ]
            if chief:
                _truncate_log(self.log_path, start_epoch)
                record = json.loads((self.output_dir / CONFIG_NAME).read_text())
                record.setdefault("resumed", []).append(
                    {"time": _now(), "epoch": start_epoch, "step": start_step}
                    | _environment()
                    | {"distribution": distribution.to_dict()}
                )
                _write_json(self.output_dir / CONFIG_NAME, record)
        elif chief:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _write_json(
                self.output_dir / CONFIG_NAME,
                {
                    "config": config.to_dict(),
                    "learning_rate_scaling": self.learning_rate_scaling,
                    "started": _now(),
                }
                | _environment()
                | {"distribution": distribution.to_dict()},
            )
            with open(self.log_path, "w", newline="") as file:
                csv.DictWriter(file, LOG_COLUMNS).writeheader()

        # torch: from now on the forward pass runs through DDP.
        distribution.prepare_model(model)
        if chief and config.distribute != "none":
            print(f"data-parallel: {distribution.describe()}", flush=True)
        with _Interrupts() as interrupts:
            # Printed once SIGINT/SIGTERM are handled: from here on a signal
            # ends the run with a checkpoint.
            print(
                f"training {config.model}"
                + (
                    f" at width {config.width_multiplier:g}"
                    if config.width_multiplier != 1
                    else ""
                )
                + f" ({model.count_params():,} parameters), "
                f"recipe {config.recipe}, on {keras.backend.backend()}: "
                f"{len(data.train_images):,} training images, "
                f"{len(data.val_images):,} validation, {len(data.test_images):,} test"
                f"{' (synthetic)' if config.synthetic else ''}"
                f"; {config.epochs} epochs of {self.steps_per_epoch} steps; "
                f"{self._learning_rate_words()}; writing to {self.output_dir}",
                flush=True,
            )
            monitor = _RunMonitor(self, interrupts)
            callbacks = [
                *self.extra_callbacks,
                monitor,
                keras.callbacks.ProgbarLogger(),
                _EpochLine(self),
            ]
            if start_step and start_epoch < config.epochs:
                print(
                    f"resuming epoch {start_epoch + 1} at step {start_step + 1}/"
                    f"{self.steps_per_epoch}",
                    flush=True,
                )
                monitor.step_offset, monitor.saved_metrics = start_step, saved_metrics
                partial = _SkipBatches(
                    TrainingBatches(
                        data.train_images,
                        data.train_labels,
                        config.batch_size,
                        seed=config.seed,
                        start_epoch=start_epoch,
                    ),
                    start_step,
                )
                self._fit(partial, start_epoch, start_epoch + 1, callbacks, start_step)
                monitor.step_offset = 0
                start_epoch += 1
            if (
                not (monitor.failure or monitor.stopped_at)
                and start_epoch < config.epochs
            ):
                batches.start_epoch = start_epoch
                self._fit(batches, start_epoch, config.epochs, callbacks, 0)

        if monitor.failure:
            last = (
                f"the last good checkpoint is {self.checkpoint_path}"
                if self.checkpoint_path.exists()
                else "no checkpoint was written before it"
            )
            print(
                f"error: {monitor.failure}; training stopped and {last}. Try a lower "
                f"--learning-rate (this run: {config.learning_rate})"
                + (
                    " or --mixed-precision off"
                    if config.mixed_precision != "off"
                    else ""
                ),
                file=sys.stderr,
            )
            return EXIT_FAILED
        if monitor.stopped_at and not distribution.is_chief:
            return 128 + interrupts.signum
        if monitor.stopped_at:
            epoch, step = monitor.stopped_at
            where = f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"
            name = signal.Signals(interrupts.signum).name
            print(
                f"stopped by {name} after {where}; checkpoint saved to "
                f"{self.checkpoint_path}. Continue with: keras-cifar-resnet-train "
                f"--resume {self.output_dir}",
                flush=True,
            )
            return 128 + interrupts.signum
        return self.finish()

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

    def _fit(self, batches, initial_epoch, epochs, callbacks, skip):
        model = self.model
        started = time.perf_counter()
        try:
            model.fit(
                # Each process feeds its part of every global batch.
                self.distribution.shard_batches(batches),
                epochs=epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=self.steps_per_epoch - skip,
                shuffle=False,
                callbacks=callbacks,
                verbose=1 if self.distribution.is_chief else 0,
            )
        finally:
            self.train_seconds += time.perf_counter() - started

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
            "time": _now(),
        }

    def save_checkpoint(self, epoch, step):
        if self.distribution.is_chief:
            save_checkpoint(self.checkpoint_path, self.model, self.state(epoch, step))

    def _save_model(self, name):
        """Saves the current weights as an uncompiled model, atomically.

        Uncompiled so that loading it for inference neither needs this
        package's training options nor warns about optimizer variables.
        """
        if not self.distribution.is_chief:
            return
        if self._export_model is None:
            self._export_model = ResNet.from_config(self.model.get_config())
        self._export_model.set_weights(self.model.get_weights())
        path = self.output_dir / name
        temporary = path.with_name(f".{os.getpid()}.{name}")
        try:
            self._export_model.save(temporary)
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()

    def end_epoch(self, epoch, logs, seconds):
        """Validation, log row, checkpoint and best model after epoch `epoch`."""
        config, data = self.config, self.data
        row = {
            "epoch": epoch,
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
        }
        marker = ""
        if len(data.val_images):
            results = self.model.evaluate(
                data.val_images,
                data.val_labels,
                batch_size=config.batch_size,
                verbose=0,
                return_dict=True,
            )
            row["val_loss"] = results["loss"]
            row["val_accuracy"] = results["accuracy"]
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
        if not self.distribution.is_chief:
            return
        with open(self.log_path, "a", newline="") as file:
            csv.DictWriter(file, LOG_COLUMNS).writerow(
                {
                    key: value if key == "epoch" else _format_number(value)
                    for key, value in row.items()
                }
            )
        self.save_checkpoint(epoch + 1, 0)
        parts = [f"epoch {epoch + 1}/{config.epochs}"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if row.get(key) is not None:
                parts.append(f"{key} {row[key]:.4f}")
        parts.append(f"lr {row['learning_rate']:.4g}")
        parts.append(f"{seconds:.1f} s")
        self.last_line = "  ".join(parts) + marker

    def finish(self):
        """Final model, test-set summary and curves; returns the exit status."""
        config, data = self.config, self.data
        if config.validation_size == 0:
            self._save_model(FINAL_NAME)
        if not self.distribution.is_chief:
            return 0
        model_path = self.output_dir / self.model_file
        print(f"evaluating {model_path} on {len(data.test_images):,} test images")
        # The chief alone, on its own devices: the others have finished. In
        # float32 whatever the training precision, so the figure is the one
        # the evaluate command gives for the same file.
        with self.distribution.local_scope(), _dtype_policy("float32"):
            model = keras.saving.load_model(model_path)
            report = evaluate_model(
                model, data.test_images, data.test_labels, batch_size=config.batch_size
            )
        summary = {
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
        _write_json(self.output_dir / SUMMARY_NAME, summary)
        try:
            from keras_cifar_resnet.plots import (
                PlotsUnavailableError,
                plot_training_curves,
            )

            plot_training_curves(self.log_path, self.output_dir / CURVES_NAME)
        except PlotsUnavailableError as err:
            print(f"note: {CURVES_NAME} not drawn: {err}")
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


# -------------------------------------------------------------- command line


def _flag(name):
    return "--" + name.replace("_", "-")


def _default_output_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{config.model}-{config.recipe}-{stamp}")


def config_for_arguments(args):
    """(config, resume, learning_rate_scaling) from parsed arguments.

    Raises:
        UsageError: bad values, flags that cannot go with `--resume`, or an
            output folder that already holds a run.
    """
    flags = explicit_flags(args)
    if args.resume is not None:
        run_dir = Path(args.resume)
        extra = sorted(set(flags) - set(RESUME_OVERRIDABLE))
        if extra:
            names = ", ".join(_flag(name) for name in extra)
            allowed = ", ".join(_flag(name) for name in RESUME_OVERRIDABLE)
            raise UsageError(
                f"--resume continues with the run's saved settings; drop {names} "
                f"(only {allowed} may change)"
            )
        if not (run_dir / CONFIG_NAME).is_file():
            raise UsageError(
                f"--resume {run_dir}: no {CONFIG_NAME} there, not a run folder"
            )
        if not (run_dir / CHECKPOINT_NAME).is_file():
            raise UsageError(
                f"--resume {run_dir}: no {CHECKPOINT_NAME} (the run stopped before "
                "its first checkpoint); start it again instead"
            )
        try:
            saved = json.loads((run_dir / CONFIG_NAME).read_text())["config"]
            config = TrainConfig(**saved)
            read_checkpoint_state(run_dir / CHECKPOINT_NAME)
        except (ValueError, TypeError, KeyError, CheckpointError) as err:
            raise UsageError(
                f"--resume {run_dir}: cannot read the run ({err})"
            ) from None
        return (
            dataclasses.replace(config, output_dir=str(run_dir), **flags),
            True,
            None,
        )
    try:
        config = config_from_flags(flags)
        scaling = learning_rate_scaling(flags)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.output_dir is None:
        config = dataclasses.replace(config, output_dir=_default_output_dir(config))
    output_dir = Path(config.output_dir)
    if (output_dir / CONFIG_NAME).exists():
        raise UsageError(
            f"--output-dir {output_dir} already holds a run; continue it with "
            f"--resume {output_dir} or choose another folder"
        )
    return config, False, scaling


@contextlib.contextmanager
def _dtype_policy(name):
    """Keras's global dtype policy set to `name` inside the block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


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
        DataError, CheckpointError, UsageError: see `main`, which reports them.
    """
    # First: JAX's multi-host start and torch's process group must precede
    # any tensor.
    distribution = setup_distribution(config.distribute)
    policy = "float32" if config.mixed_precision == "off" else config.mixed_precision
    try:
        with _dtype_policy(policy):
            return TrainingRun(
                config,
                resume=resume,
                callbacks=callbacks,
                distribution=distribution,
                learning_rate_scaling=learning_rate_scaling,
            ).run()
    finally:
        distribution.close()


def main(argv=None):
    """The `keras-cifar-resnet-train` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        config, resume, scaling = config_for_arguments(args)
        return train(config, resume=resume, learning_rate_scaling=scaling)
    except (UsageError, DistributionError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
