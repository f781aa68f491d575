"""The training loop: one run in one folder, started or resumed, trained, evaluated.

`train(config)` reads top to bottom: the distribution, the data, the model,
the checkpoint to continue from (or a new folder), `fit` with one-job
callbacks (`keras_cifar_resnet.training.callbacks`), then the test-set evaluation of
the model the run keeps. The run writes its files through
`run_folder.RunFolder`; SIGINT, SIGTERM and SIGHUP stop it after the current step
with a checkpoint (`keras_cifar_resnet.training.signals`); a non-finite loss stops it
without one. What it tells the user comes from `keras_cifar_resnet.messages`.

Exit status: 0 done; 1 failed (non-finite loss, a failed write); 128 + signal
number when stopped by SIGINT (130), SIGTERM (143) or SIGHUP (129).

Example:

>>> config = resolve_config(["--model", "tiny", "--synthetic", "--epochs", "1",
...                          "--output-dir", "runs/smoke"])
>>> train(config)
0
"""

from __future__ import annotations

import random
import signal
import sys

import keras

from keras_cifar_resnet import messages
from keras_cifar_resnet.backend_choice import choose_backend
from keras_cifar_resnet.closed_output import closed_stdout_guard
from keras_cifar_resnet.data.cifar10 import data_source
from keras_cifar_resnet.data.input_pipeline import (
    SkipBatches,
    TrainingBatches,
    prepare_data,
)
from keras_cifar_resnet.errors import LostProcessError
from keras_cifar_resnet.resources import check_training_memory
from keras_cifar_resnet.training.batch_plan import plan_batches
from keras_cifar_resnet.training.build import build_model, compile_model
from keras_cifar_resnet.training.callbacks import (
    CheckpointOnSignal,
    EpochEnd,
    EpochLine,
    RunPosition,
    StepProgress,
    StopOnNonFiniteLoss,
)
from keras_cifar_resnet.training.checkpoints import (
    Checkpoints,
    load_checkpoint,
    run_settings,
    saved_state,
    set_aside_last,
)
from keras_cifar_resnet.training.distribute import setup_distribution
from keras_cifar_resnet.training.first_run import no_accelerator_note
from keras_cifar_resnet.training.precision_support import dtype_policy, warn_if_slow
from keras_cifar_resnet.training.run_folder import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FINAL_NAME,
    RunFolder,
    WriteError,
    device_description,
    environment,
    hold_run_folder,
    now,
)
from keras_cifar_resnet.training.run_state import (
    ModelExport,
    Position,
    TrainingClock,
)
from keras_cifar_resnet.training.signals import RunStopped, StopSignals
from keras_cifar_resnet.training.summary import evaluate_and_summarise
from keras_cifar_resnet.training.tensorboard import TensorBoardLog


def train(config, *, resume=False, callbacks=(), checkpoint=None):
    """Runs (or resumes) training as configured; returns the exit status.

    Sets the global dtype policy for the run and restores it afterwards, and
    seeds Python's `random` (Keras draws initializer seeds from it).

    Args:
        config: a `TrainConfig` with `output_dir` set.
        resume: bool, continue the run in `config.output_dir`. Defaults to
            False.
        callbacks: extra Keras callbacks, called before the run's own ones
            (for tests). Defaults to none.
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
    folder = RunFolder(config.output_dir)
    policy = "float32" if config.mixed_precision == "off" else config.mixed_precision
    try:
        # One run per folder: a second process is refused before any work.
        with (
            hold_run_folder(config.output_dir, distribution.is_chief),
            dtype_policy(policy),
            StopSignals() as signals,
            # A closed standard output (`| head`) stops the run as a signal.
            closed_stdout_guard(lambda: signals.stop(signal.SIGPIPE)),
        ):
            check_training_memory(config, device_description()["tensor_device"])
            try:
                return _train_and_evaluate(
                    config, distribution, folder, signals, resume, checkpoint, callbacks
                )
            except RunStopped as stop:
                if distribution.is_chief:
                    line = messages.stopped_at_once(
                        stop.signum, _how_to_continue(folder, config.epochs)
                    )
                    print(line, flush=True)
                return messages.signal_exit_status(stop.signum)
            except WriteError as error:
                kept = [
                    name
                    for name in (CHECKPOINT_NAME, BEST_NAME, FINAL_NAME)
                    if (folder.path / name).is_file()
                ]
                print(
                    messages.write_error(
                        error, kept, _how_to_continue(folder, config.epochs)
                    ),
                    file=sys.stderr,
                )
                return messages.EXIT_FAILED
    except Exception as error:
        lost = distribution.lost_process(error)
        if lost is None:
            raise
        raise LostProcessError(
            messages.lost_process(lost, config.output_dir)
        ) from error
    finally:
        distribution.close()


def _train_and_evaluate(
    config, distribution, folder, signals, resume, checkpoint, extra_callbacks
):
    """The run itself, top to bottom; returns the exit status."""
    # The data: arrays, and batches that are a pure function of seed,
    # epoch and index (so a resume continues the same order).
    data = prepare_data(config)
    plan = plan_batches(config, data, distribution)
    batches = TrainingBatches(
        data.train_images, data.train_labels, plan.batch_size, seed=config.seed
    )
    steps_per_epoch = plan.steps_per_epoch

    # The model, seeded, compiled, its optimizer built.
    model = _build_model(config, distribution, steps_per_epoch)

    # Restore the checkpoint's weights and position, or start a new folder.
    if resume:
        position, epoch_metrics = _restore(
            config, model, folder, checkpoint or folder.checkpoint_path, distribution
        )
    else:
        position, epoch_metrics = Position(), None
        if distribution.is_chief:
            folder.start(
                {"config": config.to_dict(), "started": now()}
                | _record(config, distribution)
            )
    # torch: from now on the forward pass runs through DDP.
    distribution.prepare_model(model)

    # Fit: the rest of an interrupted epoch, then the remaining epochs.
    clock = TrainingClock(position.train_seconds)
    checkpoints = Checkpoints(
        folder.checkpoint_path, model, config, steps_per_epoch, distribution, signals
    )
    export = ModelExport(folder, model, distribution, signals)
    shown = [
        StepProgress(),
        *([EpochLine(config.epochs)] if distribution.is_chief else []),
    ]
    # The start line promises that a signal from here on stops the run with
    # a checkpoint.
    signals.in_epochs = True
    try:
        if distribution.is_chief and config.distribute != "none":
            print(messages.data_parallel(distribution.describe()), flush=True)
        print(
            messages.start_line(
                config,
                parameters=model.count_params(),
                backend=choose_backend().describe(),
                data=data,
                steps_per_epoch=steps_per_epoch,
                note=no_accelerator_note(config.model, config.width_multiplier),
            ),
            flush=True,
        )
        fits = []  # (first epoch, epochs to end at, steps skipped in the first)
        start = position.epoch
        if position.step and start < config.epochs:
            print(
                messages.resuming_epoch(start, position.step, steps_per_epoch),
                flush=True,
            )
            fits.append((start, start + 1, position.step))
            start += 1
        if start < config.epochs:
            fits.append((start, config.epochs, 0))
        tensorboard = (
            TensorBoardLog(folder.path)
            if config.tensorboard and distribution.is_chief
            else None
        )
        for first_epoch, end_epoch, skipped in fits:
            run_position = RunPosition(position, steps_per_epoch, clock, epoch_metrics)
            nan_stop = StopOnNonFiniteLoss(run_position)
            signal_stop = CheckpointOnSignal(signals, checkpoints, run_position)
            callbacks = [
                *extra_callbacks,
                # After each step, in this order: the position, then the
                # checks that may stop the run at it.
                run_position,
                nan_stop,
                signal_stop,
                # The end of an epoch: one sequence, in order.
                EpochEnd(
                    run_position,
                    data,
                    config.batch_size,
                    export,
                    folder,
                    checkpoints,
                    signal_stop,
                    signals,
                    distribution.is_chief,
                    tensorboard,
                ),
                *([tensorboard] if tensorboard else []),
                *shown,
            ]
            batches.start_epoch = first_epoch
            epoch_batches = SkipBatches(batches, skipped) if skipped else batches
            with clock.running():
                model.fit(
                    # Each process feeds its part of every global batch.
                    distribution.fit_input(
                        epoch_batches,
                        (end_epoch - first_epoch) * steps_per_epoch - skipped,
                    ),
                    epochs=end_epoch,
                    initial_epoch=first_epoch,
                    steps_per_epoch=steps_per_epoch - skipped,
                    shuffle=False,
                    callbacks=callbacks,
                    verbose=1 if distribution.is_chief else 0,
                )
            position = run_position.position
            if nan_stop.failure:
                print(
                    messages.non_finite_loss(
                        nan_stop.failure,
                        config,
                        folder.checkpoint_path,
                        folder.checkpoint_path.exists(),
                    ),
                    file=sys.stderr,
                )
                return messages.EXIT_FAILED
            if signal_stop.stopped_at:
                if distribution.is_chief:
                    where = messages.stop_position(
                        *signal_stop.stopped_at, steps_per_epoch
                    )
                    print(
                        messages.stopped(
                            signals.signum, where, folder.checkpoint_path, folder.path
                        ),
                        flush=True,
                    )
                return messages.signal_exit_status(signals.signum)
    finally:
        signals.in_epochs = False

    # The final evaluation, on the test set, of the last epoch's model (and,
    # labelled apart, of the one chosen on the validation split).
    export.save(FINAL_NAME)
    if not distribution.is_chief:
        return 0
    return evaluate_and_summarise(
        config, data, folder, position, distribution, signals
    )


def _how_to_continue(folder, epochs):
    """`messages.how_to_continue` for the run in `folder`, from its checkpoint."""
    return messages.how_to_continue(
        folder.path,
        folder.checkpoint_path,
        saved_state(folder.checkpoint_path),
        epochs,
        holds_run=folder.holds_run(),
    )


def _build_model(config, distribution, steps_per_epoch):
    """The recipe's compiled model, seeded, with its optimizer built."""
    # Keras's initializers draw their seeds from Python's `random`.
    random.seed(config.seed)
    # Under tf.distribute the variables (the optimizer's too) must be
    # created in the strategy's scope to be mirrored on every replica.
    with distribution.scope():
        model = build_model(config)
        compile_model(model, config, steps_per_epoch)
        model.optimizer.build(model.trainable_variables)
    return model


def _record(config, distribution):
    """What `config.json` says of the environment, the engine and the data."""
    # Where the data came from, also when no --data-dir was given.
    data = (
        {"path": None, "given_as": "synthetic"}
        if config.synthetic
        else data_source(config.data_dir)
    )
    return environment() | {"distribution": distribution.to_dict(), "data": data}


def _restore(config, model, folder, checkpoint, distribution):
    """Loads `checkpoint` into `model`; (its `Position`, the epoch's metrics).

    The metrics are the interrupted epoch's running totals (None at an
    epoch's end). The log is cut back to the checkpoint's epoch.
    """
    position = Position.from_checkpoint(
        load_checkpoint(checkpoint, model, settings=run_settings(config))
    )
    if distribution.is_chief:
        note = set_aside_last(folder, checkpoint)
        if note:
            print(note, flush=True)
    metrics = None
    if position.step:
        metrics = [keras.ops.convert_to_numpy(v) for v in model.metrics_variables]
    if distribution.is_chief:
        folder.truncate_log(position.epoch)
        folder.record_resume(
            {"time": now(), "epoch": position.epoch, "step": position.step}
            | _record(config, distribution)
        )
    return position, metrics
