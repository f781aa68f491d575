"""What the commands tell their user, as plain functions returning text.

Every line that says how a run started, stopped, failed or continues is
built here; `resume_command` is the one place that spells the command
that continues a run, `PROGRAMS` the commands' names and `exit_status`
the status each failure ends a command with. Keras-free: the command line
uses it before a backend is imported.
"""

from __future__ import annotations

import errno
import shlex
import signal

from keras_cifar_resnet.program_names import PROGRAMS
from keras_cifar_resnet.training.checkpoints import (
    CheckpointError,
    read_checkpoint_state,
)
from keras_cifar_resnet.training.first_run import no_accelerator_note
from keras_cifar_resnet.training.run_folder import (
    BEST_NAME,
    CHECKPOINT_NAME,
    FINAL_NAME,
)

COMMAND = PROGRAMS["train"]

# Exit statuses of all three commands; a signal ends one with 128 + its number.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def exit_status(error):
    """The status a command ends with for `error`: one rule for all three.

    2 for what the user asked wrongly (an exception whose `usage` is true:
    `UsageError`, a bad `KERAS_BACKEND`, a path that names no model, a
    distribution that cannot start as asked); 128 + 2 for Ctrl-C; 1 for the
    rest (missing or damaged data, model files or checkpoints, a lost
    process).
    """
    if isinstance(error, KeyboardInterrupt):
        return signal_exit_status(signal.SIGINT)
    return EXIT_USAGE if getattr(error, "usage", False) else EXIT_FAILED


def signal_exit_status(signum):
    """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


def resume_command(output_dir, *flags):
    """`keras-cifar-resnet-train --resume DIR [flags]`, quoted for a POSIX shell."""
    return shlex.join([COMMAND, "--resume", str(output_dir), *flags])


def failure_line(error):
    """A failure's line: `error: ...`."""
    return f"error: {error}"


def usage_error(prog, error):
    """A usage error's line, named by its command: `<prog>: error: ...`."""
    return f"{prog}: error: {error}"


def failure(prog, error):
    """`usage_error` for what the user asked wrongly, else `error`."""
    return (
        usage_error(prog, error)
        if getattr(error, "usage", False)
        else failure_line(error)
    )


def stopped_before_writing():
    """Ctrl-C in `evaluate` or `predict`, which write only at the end."""
    return "stopped by SIGINT; nothing was written"


def stopped_before_starting():
    """Ctrl-C while `train` imports its backend, before the run's first file."""
    return "stopped by SIGINT; nothing was written yet; run the same command again"


def starting_again(output_dir):
    """`--resume` of a run that stopped before its first checkpoint."""
    return (
        f"note: {output_dir} has no {CHECKPOINT_NAME} (the run stopped before "
        "its first one): starting it from the beginning"
    )


def starting_in_place(output_dir):
    """A new run in a folder whose run stopped before its first checkpoint."""
    return (
        f"note: {output_dir} holds a run that stopped before its first "
        "checkpoint; starting this one in its place"
    )


def count(number, noun):
    """`1 epoch`, `3 epochs`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def learning_rate_words(config):
    """The peak rate, and how it was scaled from the recipe's if it was."""
    words = f"peak learning rate {config.learning_rate:g}"
    if config.base_learning_rate is None:
        return words
    return (
        f"{words} (the recipe's {config.base_learning_rate:g} at batch "
        f"{config.base_batch_size}, scaled linearly to batch "
        f"{config.batch_size}; give --learning-rate to set it yourself)"
    )


def start_line(config, *, parameters, backend, data, steps_per_epoch):
    """The line after which a signal stops the run with a checkpoint."""
    width = (
        f" at width {config.width_multiplier:g}" if config.width_multiplier != 1 else ""
    )
    return (
        f"training {config.model}{width} ({parameters:,} parameters), recipe "
        f"{config.recipe}, on {backend}: {len(data.train_images):,} training "
        f"images, {len(data.val_images):,} validation, {len(data.test_images):,} "
        f"test{' (synthetic)' if config.synthetic else ''}; "
        f"{count(config.epochs, 'epoch')} of {count(steps_per_epoch, 'step')}; "
        f"{learning_rate_words(config)}; writing to {config.output_dir}"
        f"{no_accelerator_note(config.model, config.width_multiplier)}"
    )


def data_parallel(description):
    return f"data-parallel: {description}"


def stopping_after_save(signum):
    """A signal while a file is written: it acts once the file is whole."""
    name = signal.Signals(signum).name
    return f"\n{name}: stopping once the file being saved is written"


def stopping_after_step(signum):
    """The first signal in the epochs: a checkpoint, then the run stops."""
    name = signal.Signals(signum).name
    return (
        f"\n{name}: stopping after this step and saving a checkpoint "
        "(send it again to stop at once)"
    )


def continuing_from(checkpoint, damaged=None):
    """`--from-previous-checkpoint`: which file the run continues from."""
    note = f"; the damaged one is kept as {damaged.name}" if damaged else ""
    return f"note: continuing from {checkpoint.name}{note}"


def evaluating_test_set(model_path, num_images):
    return (
        f"evaluating {model_path} on {num_images:,} test images and their mirror images"
    )


def curves_not_drawn(name, reason):
    return f"note: {name} not drawn: {reason}"


def resuming_epoch(epoch, step, steps_per_epoch):
    return f"resuming epoch {epoch + 1} at step {step + 1}/{steps_per_epoch}"


def epoch_line(epoch, epochs, logs):
    """`epoch 3/100  loss 1.2345  accuracy ...  lr 0.1  12.3 s`, from `logs`."""
    parts = [f"epoch {epoch + 1}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        if logs.get(key) is not None:
            parts.append(f"{key} {logs[key]:.4f}")
    parts.append(f"lr {logs['learning_rate']:.4g}")
    parts.append(f"{logs['seconds']:.1f} s")
    line = "  ".join(parts)
    if logs.get("best_model"):
        line += f"  (best so far, saved {logs['best_model']})"
    return line


def non_finite_loss(failure, config, checkpoint_path):
    """A non-finite loss stopped the run: what is kept, and what to try."""
    if checkpoint_path.exists():
        last, where = f"the last good checkpoint is {checkpoint_path}", ""
    else:
        # Nothing to keep: the same folder takes the next try.
        last = "no checkpoint was written before it"
        where = f", in the same --output-dir {config.output_dir} if you like"
    hint = " or --mixed-precision off" if config.mixed_precision != "off" else ""
    return (
        f"error: {failure}; training stopped and {last}. Try a lower "
        f"--learning-rate (this run: {config.learning_rate}){hint}{where}"
    )


def stopped(signum, epoch, step, folder):
    """A signal stopped the run in its epochs, at `epoch`, `step`, saved."""
    where = f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"
    return (
        f"stopped by {signal.Signals(signum).name} after {where}; checkpoint saved "
        f"to {folder.checkpoint_path}. Continue with: {resume_command(folder.path)}"
    )


def how_to_continue(folder, epochs):
    """Where the run's saved state stands and the command that continues it."""
    command = resume_command(folder.path)
    if not folder.holds_run():
        return "nothing was written yet; run the same command again"
    try:
        state = read_checkpoint_state(folder.checkpoint_path)
    except CheckpointError:
        return (
            "no checkpoint was written yet; start it again from the "
            f"beginning with: {command}"
        )
    epoch, step = state["epoch"], state["step"]
    if (epoch, step) == (epochs, 0):
        return (
            f"training is complete and saved in {folder.checkpoint_path}; run the "
            f"final test evaluation with: {command}"
        )
    where = f"step {step} of epoch {epoch + 1}" if step else f"the end of epoch {epoch}"
    return (
        f"the last checkpoint ({folder.checkpoint_path}) is at {where}; "
        f"continue with: {command}"
    )


def stopped_at_once(signum, folder, epochs):
    """A signal outside the epochs, or a second one."""
    name = signal.Signals(signum).name
    return f"stopped by {name}; {how_to_continue(folder, epochs)}"


def write_error(error, folder, epochs):
    """A failed write (a full disk): what is intact, and how to continue."""
    kept = [
        name
        for name in (CHECKPOINT_NAME, BEST_NAME, FINAL_NAME)
        if (folder.path / name).is_file()
    ]
    intact = (
        f"the files written before ({', '.join(kept)}) are intact"
        if kept
        else "no earlier file is lost"
    )
    remedy = "free some space" if error.errno == errno.ENOSPC else "fix that"
    return (
        f"error: {error}; {intact}; {remedy}, then: {how_to_continue(folder, epochs)}"
    )


def lost_process(lost, output_dir):
    """Another process of a data-parallel run died; how to continue."""
    return (
        f"{lost}; this process stops too. Continue from the last checkpoint by "
        f"starting every process again with: {resume_command(output_dir)}"
    )


def previous_checkpoint_advice(folder):
    """What a damaged last checkpoint leaves: the previous one, or a restart."""
    previous = folder.previous_checkpoint_path
    try:
        state = read_checkpoint_state(previous)
    except CheckpointError:
        restart = (
            "start the run again with: "
            f"rm {shlex.quote(str(folder.checkpoint_path))} && "
            f"{resume_command(folder.path)}"
        )
        if previous.exists():
            return f"{previous.name} is damaged too; {restart}"
        return f"no earlier checkpoint is kept; {restart}"
    where = f"epoch {state.get('epoch')}, step {state.get('step')}"
    command = resume_command(folder.path, "--from-previous-checkpoint")
    return (
        f"the previous checkpoint {previous.name} ({where}) is good; continue "
        f"from it with: {command}"
    )


def already_holds_a_run(output_dir):
    return (
        f"--output-dir {output_dir} already holds a run; continue it with "
        f"{resume_command(output_dir)} or choose another folder"
    )


def foreign_files(output_dir, names):
    """A folder that is not a run's holds files a new run would replace."""
    return (
        f"--output-dir {output_dir} is not a run folder (no config.json) but "
        f"holds {', '.join(names)}, which a run would write over; move them or "
        "choose another folder"
    )


def run_complete(folder):
    """`--resume` of a run whose summary is written: nothing left to do."""
    return (
        f"{folder.path} is complete: training and the test evaluation are done; "
        f"the results are in {folder.summary_path}"
    )


def test_result(report, best, output_dir):
    """The run's last line: the last epoch's test figures, and the best model's.

    `best` is None, or summary.json's `best_validation`: the model of the best
    validation accuracy, chosen on the validation split only.
    """
    line = (
        f"test accuracy {report['accuracy']:.2%} (flip TTA "
        f"{report['tta_accuracy']:.2%}), loss {report['loss']:.4f}, the last "
        "epoch's model"
    )
    if best:
        line += (
            f"; best.keras (best validation accuracy "
            f"{best['validation_accuracy']:.2%}, epoch {best['epoch']}): test "
            f"accuracy {best['test']['accuracy']:.2%} (flip TTA "
            f"{best['test']['tta_accuracy']:.2%})"
        )
    return f"{line}; results in {output_dir}"