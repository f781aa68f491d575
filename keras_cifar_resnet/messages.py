"""What the commands tell their user, as plain functions returning text.

Every line that says how a run started, stopped, failed or continues is
built here; `resume_command` is the one place that spells the command
that continues a run, `PROGRAMS` the commands' names and `exit_status`
the status each failure ends a command with; `printable` is how a name
from the file system or the command line is shown. Pure text: every value
comes in as an argument (it reads no file), and it imports nothing of the
package, so any module may use it. Keras-free: the command line uses it
before a backend is imported.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import signal

# Each command's one name: its installed script, its usage and its error lines.
PROGRAMS = {
    "train": "keras-cifar-resnet-train",
    "evaluate": "keras-cifar-resnet-evaluate",
    "predict": "keras-cifar-resnet-predict",
}
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


# C0 and C1 control characters and DEL: a name holding them could move the
# cursor, clear the screen or retitle the terminal it is printed to.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text):
    """`text` (a path, a name, a line) safe to print on any terminal.

    Bytes that were not valid in the file system's encoding (Python keeps
    them as lone surrogates) become U+FFFD, and control characters are
    written as escapes (`\\x1b`, `\\r`), so a name can neither break the
    output's encoding nor act on the terminal.

    Args:
        text: str or os.PathLike.
    """
    text = os.fspath(text) if isinstance(text, os.PathLike) else str(text)
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _CONTROL.sub(lambda match: repr(match.group())[1:-1], text)


def failure_line(error):
    """A failure's line: `error: ...`, printable."""
    return printable(f"error: {error}")


def usage_error(prog, error):
    """A usage error's line, named by its command: `<prog>: error: ...`."""
    return printable(f"{prog}: error: {error}")


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


def stopped_before_starting(signum=signal.SIGINT):
    """A signal while `train` imports its backend, before the run's first file."""
    name = signal.Signals(signum).name
    return f"stopped by {name}; nothing was written yet; run the same command again"


def starting_again(output_dir, checkpoint_name):
    """`--resume` of a run that stopped before its first checkpoint."""
    return printable(
        f"note: {output_dir} has no {checkpoint_name} (the run stopped before "
        "its first one): starting it from the beginning"
    )


def logged_without_checkpoint(log_path, epochs, checkpoint_name):
    """`--resume` of a run whose log records epochs but whose checkpoints are gone."""
    return printable(
        f"error: {log_path} records {count(epochs, 'epoch')} but no {checkpoint_name} "
        "(nor the previous one) is left to continue from; put the checkpoint "
        "back, or start a new run in another folder"
    )


def starting_in_place(output_dir):
    """A new run in a folder whose run stopped before its first checkpoint."""
    return printable(
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


def start_line(config, *, parameters, backend, data, steps_per_epoch, note=""):
    """The line after which a signal stops the run with a checkpoint."""
    width = (
        f" at width {config.width_multiplier:g}" if config.width_multiplier != 1 else ""
    )
    return printable(
        f"training {config.model}{width} ({parameters:,} parameters), recipe "
        f"{config.recipe}, on {backend}: {len(data.train_images):,} training "
        f"images, {len(data.val_images):,} validation, {len(data.test_images):,} "
        f"test{' (synthetic)' if config.synthetic else ''}; "
        f"{count(config.epochs, 'epoch')} of {count(steps_per_epoch, 'step')}; "
        f"{learning_rate_words(config)}; writing to {config.output_dir}"
        f"{note}"
    )


def data_parallel(description):
    return printable(f"data-parallel: {description}")


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


def continuing_from(checkpoint, damaged=None, missing=None):
    """A resume from the previous checkpoint: which file it continues from.

    Args:
        checkpoint: Path, the previous checkpoint.
        damaged: Path or None, where the damaged last one was set aside.
        missing: str or None, the last checkpoint's name when it is gone.
    """
    note = f"; the damaged one is kept as {damaged.name}" if damaged else ""
    if missing:
        note = f" ({missing} is missing)"
    return printable(f"note: continuing from {checkpoint.name}{note}")


def summary_not_trusted(summary_path, reason):
    """`--resume` found a summary.json that is not this run's last one."""
    return printable(
        f"note: {summary_path} is not this run's ({reason}); finishing the run, "
        "which writes it again"
    )


def evaluating_test_set(model_path, num_images):
    return printable(
        f"evaluating {model_path} on {num_images:,} test images and their mirror images"
    )


def best_model_unreadable(error):
    """The final evaluation found best.keras lost or damaged: it goes without."""
    return printable(f"note: {error}; the summary leaves out the best validation model")


def curves_not_drawn(name, reason):
    return printable(f"note: {name} not drawn: {reason}")


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


def non_finite_loss(failure, config, checkpoint_path, checkpoint_written):
    """A non-finite loss stopped the run: what is kept, and what to try."""
    if checkpoint_written:
        last, where = f"the last good checkpoint is {checkpoint_path}", ""
    else:
        # Nothing to keep: the same folder takes the next try.
        last = "no checkpoint was written before it"
        where = f", in the same --output-dir {config.output_dir} if you like"
    hint = " or --mixed-precision off" if config.mixed_precision != "off" else ""
    return printable(
        f"error: {failure}; training stopped and {last}. Try a lower "
        f"--learning-rate (this run: {config.learning_rate}){hint}{where}"
    )


def stop_position(epoch, step, steps_per_epoch):
    """Where a run stopped: `during epoch 2, at step 14/175` or `after epoch 1`.

    Args:
        epoch: int, the epoch it continues in (0-based).
        step: int, the steps of that epoch done (0: at the epoch's start).
        steps_per_epoch: int.
    """
    if step:
        return f"during epoch {epoch + 1}, at step {step}/{steps_per_epoch}"
    return f"after epoch {epoch}"


def stopped(signum, where, checkpoint_path, output_dir):
    """A signal stopped the run in its epochs, at `where`, with a checkpoint."""
    return printable(
        f"stopped by {signal.Signals(signum).name} {where}; checkpoint saved "
        f"to {checkpoint_path}. Continue with: {resume_command(output_dir)}"
    )


def how_to_continue(output_dir, checkpoint_path, state, epochs, holds_run=True):
    """Where the run's saved state stands and the command that continues it.

    Args:
        output_dir: the run's folder.
        checkpoint_path: Path of its last checkpoint.
        state: dict or None, that checkpoint's saved state (None: none
            readable).
        epochs: int, the run's epochs.
        holds_run: bool, whether the folder holds a run (`config.json`).
    """
    command = resume_command(output_dir)
    if not holds_run:
        return "nothing was written yet; run the same command again"
    if state is None:
        return (
            "no checkpoint was written yet; start it again from the "
            f"beginning with: {command}"
        )
    epoch, step = state["epoch"], state["step"]
    if (epoch, step) == (epochs, 0):
        return (
            f"training is complete and saved in {checkpoint_path}; run the "
            f"final test evaluation with: {command}"
        )
    where = f"step {step} of epoch {epoch + 1}" if step else f"the end of epoch {epoch}"
    return (
        f"the last checkpoint ({checkpoint_path}) is at {where}; "
        f"continue with: {command}"
    )


def stopped_at_once(signum, continuing):
    """A signal outside the epochs, or a second one; `continuing`: how_to_continue."""
    name = signal.Signals(signum).name
    return printable(f"stopped by {name}; {continuing}")


def write_error(error, kept, continuing):
    """A failed write (a full disk): what is intact, and how to continue.

    Args:
        error: the `WriteError`.
        kept: list of str, the names of the run's files written before.
        continuing: str, `how_to_continue`'s text.
    """
    intact = (
        f"the files written before ({', '.join(kept)}) are intact"
        if kept
        else "no earlier file is lost"
    )
    remedy = "free some space" if error.errno == errno.ENOSPC else "fix that"
    return printable(f"error: {error}; {intact}; {remedy}, then: {continuing}")


def lost_process(lost, output_dir):
    """Another process of a data-parallel run died; how to continue."""
    return printable(
        f"{lost}; this process stops too. Continue from the last checkpoint by "
        f"starting every process again with: {resume_command(output_dir)}"
    )


def previous_checkpoint_advice(
    output_dir, checkpoint_path, previous_path, previous_state, previous_exists
):
    """What a damaged last checkpoint leaves: the previous one, or a restart.

    Args:
        output_dir: the run's folder.
        checkpoint_path: Path, the damaged last checkpoint.
        previous_path: Path, the previous checkpoint.
        previous_state: dict or None, its state when it is readable.
        previous_exists: bool, whether it is there at all.
    """
    if previous_state is None:
        restart = (
            "start the run again with: "
            f"rm {shlex.quote(str(checkpoint_path))} && "
            f"{resume_command(output_dir)}"
        )
        if previous_exists:
            return f"{previous_path.name} is damaged too; {restart}"
        return f"no earlier checkpoint is kept; {restart}"
    where = f"epoch {previous_state.get('epoch')}, step {previous_state.get('step')}"
    command = resume_command(output_dir, "--from-previous-checkpoint")
    return (
        f"the previous checkpoint {previous_path.name} ({where}) is good; continue "
        f"from it with: {command}"
    )


def already_holds_a_run(output_dir):
    return printable(
        f"--output-dir {output_dir} already holds a run; continue it with "
        f"{resume_command(output_dir)} or choose another folder"
    )


def foreign_files(output_dir, names):
    """A folder that is not a run's holds files a new run would replace."""
    return printable(
        f"--output-dir {output_dir} is not a run folder (no config.json) but "
        f"holds {', '.join(names)}, which a run would write over; move them or "
        "choose another folder"
    )


def run_complete(output_dir, summary_path):
    """`--resume` of a run whose summary is written: nothing left to do."""
    return printable(
        f"{output_dir} is complete: training and the test evaluation are done; "
        f"the results are in {summary_path}"
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
    return printable(f"{line}; results in {output_dir}")
