"""Train a ResNet on CIFAR-10: `python -m keras_cifar_resnet.train --help`.

The command: flags to a `TrainConfig` (or a saved run's, with `--resume`),
then `loop.train`. The run uses the Keras backend that
`backend_choice` picks (KERAS_BACKEND, else keras.json, else the first
installed) and writes its output folder (see `keras_cifar_resnet.training.run_folder`).
Keras is imported only after the command line and the paths are checked,
so `--help` and usage errors need no backend.

Exit status: 0 done; 1 failed (missing or damaged data or checkpoint,
non-finite loss, a failed write, a backend not installed); 2 bad command
line, output folder or KERAS_BACKEND; 128 + signal number when stopped by
SIGINT (130), SIGTERM (143), SIGHUP (129) or a closed standard output
(SIGPIPE, 141). Each prints one line saying how to continue.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.util
import os
import sys
from pathlib import Path

from keras_cifar_resnet import messages
from keras_cifar_resnet.backend_choice import (
    BackendError,
    choose_backend,
    keep_framework_warnings_as_warnings,
    use_package_keras_settings,
)
from keras_cifar_resnet.compilation_cache import enable_compilation_cache
from keras_cifar_resnet.config import (
    RESUME_OVERRIDABLE,
    UsageError,
    build_parser,
    config_from_flags,
    explicit_flags,
    flag_name,
    saved_config,
)
from keras_cifar_resnet.errors import DistributionError, ModelFileError, RunFileError
from keras_cifar_resnet.output_paths import foreign_run_files
from keras_cifar_resnet.process_exit import end_process
from keras_cifar_resnet.safe_files import unwritable_reason
from keras_cifar_resnet.training.run_folder import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    RunFolder,
    refuse_if_busy,
)


def _default_output_dir(config):
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(Path("runs") / f"{config.model}-{config.recipe}-{stamp}")


def _resumed_config(run_dir, flags):
    """The saved config of the run in `run_dir`, with the flags that may change.

    Flags are compared as given with the saved values: repeating the
    original command with `--resume` added changes nothing (a `--batch-size`
    equal to the saved one keeps the saved learning rate). Only the
    `RESUME_OVERRIDABLE` fields may differ.

    Raises:
        UsageError: not a resumable run, or flags that would change it.
    """
    folder = RunFolder(run_dir)
    if not folder.config_path.is_file():
        raise UsageError(
            f"--resume {run_dir}: no {CONFIG_NAME} there, not a run folder"
        )
    _check_writable("--resume", run_dir)
    try:
        saved, unreadable = saved_config(folder.saved_record()), None
    except RunFileError as err:
        raise UsageError(f"--resume {run_dir}: {err}") from None
    except (ValueError, TypeError, KeyError) as err:
        saved, unreadable = None, err
    changed = [
        name
        for name, value in sorted(flags.items())
        if name not in RESUME_OVERRIDABLE
        and not _same_as_saved(name, value, saved, run_dir)
    ]
    if changed:
        names = ", ".join(
            flag_name(name)
            + ("" if saved is None else f" (saved: {getattr(saved, name)!r})")
            for name in changed
        )
        allowed = ", ".join(flag_name(name) for name in RESUME_OVERRIDABLE)
        raise UsageError(
            f"--resume continues with the run's saved settings; drop {names} "
            f"(only {allowed} may change)"
        )
    if unreadable is not None:
        raise UsageError(
            f"--resume {run_dir}: cannot read its {CONFIG_NAME} ({unreadable})"
        )
    overrides = {name: flags[name] for name in RESUME_OVERRIDABLE if name in flags}
    if saved.data_dir is None and "data_dir" not in overrides:
        overrides["data_dir"] = recorded_data_dir(folder.saved_record())
    try:
        return dataclasses.replace(saved, output_dir=str(run_dir), **overrides)
    except ValueError as err:  # as without --resume: a usage error
        raise UsageError(str(err)) from None


def recorded_data_dir(record):
    """Where the run in `record` (its `config.json`) last read CIFAR-10, or None.

    None when the data location is given now (`KERAS_CIFAR_RESNET_DATA`),
    the run was synthetic, or the recorded folder is gone: then the data is
    looked for as on a first start. So a resume in a new shell, without the
    variable the run was started with, reads the same data.
    """
    # Here, not at the top: numpy comes with the data package, and main
    # imports it only once Ctrl-C is guarded.
    from keras_cifar_resnet.data.cifar10 import DATA_ENV_VAR

    if os.environ.get(DATA_ENV_VAR):
        return None
    entries = [record, *record.get("resumed", [])]
    data = next((e["data"] for e in reversed(entries) if e.get("data")), None)
    path = (data or {}).get("path")
    return path if path and Path(path).exists() else None


def _logged_epochs(folder):
    """The epochs the run's log records (0 when it is unreadable: nothing kept)."""
    try:
        return len(folder.read_log())
    except RunFileError:
        return 0


def _same_as_saved(name, value, saved, run_dir):
    """Whether flag `name`'s `value` is what the saved run already has."""
    if saved is None:
        return False
    if name == "output_dir":
        # The folder being resumed, however it is spelled.
        return Path(value).resolve() == Path(run_dir).resolve()
    return value == getattr(saved, name)


def _check_writable(flag, output_dir):
    """Refuses an output folder that cannot take files or is in use, before any work."""
    reason = unwritable_reason(output_dir)
    if reason is not None:
        raise UsageError(f"{flag} {output_dir}: {reason}")
    refuse_if_busy(output_dir)  # before the folder's contents are judged


def _with_tensorboard(config):
    """`config`, or UsageError when it asks for TensorBoard and none is installed."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UsageError(
            "--tensorboard needs the tensorboard package, which is not installed: "
            "pip install 'tensorboard>=2.16'"
        )
    return config


def config_for_arguments(args):
    """(config, resume) from parsed arguments.

    Raises:
        UsageError: bad values, flags that cannot go with `--resume`, or an
            output folder that already holds a run.
    """
    flags = explicit_flags(args)
    if args.from_previous_checkpoint and args.resume is None:
        raise UsageError("--from-previous-checkpoint goes with --resume DIR")
    if args.resume is not None:
        return _with_tensorboard(_resumed_config(Path(args.resume), flags)), True
    try:
        config = _with_tensorboard(config_from_flags(flags))
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.output_dir is None:
        config = dataclasses.replace(config, output_dir=_default_output_dir(config))
    _check_writable("--output-dir", config.output_dir)
    foreign = foreign_run_files(config.output_dir)
    if foreign:
        raise UsageError(messages.foreign_files(config.output_dir, foreign))
    folder = RunFolder(config.output_dir)
    if folder.holds_run() and folder.holds_checkpoint():
        raise UsageError(messages.already_holds_a_run(config.output_dir))
    if folder.holds_run():
        # Stopped before its first checkpoint: nothing there to lose.
        print(messages.starting_in_place(config.output_dir), flush=True)
    return config, False


def main(argv=None):
    """The `keras-cifar-resnet-train` command; returns the exit status.

    Args:
        argv: list of str, or None for the process's own command line; then a
            run stopped by a signal ends the process at once
            (`process_exit.end_process`) instead of returning.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else messages.EXIT_USAGE
    keep_framework_warnings_as_warnings()
    try:
        # Here, not at the top: numpy's import takes a while, in which a
        # Ctrl-C must be one line like any other.
        from keras_cifar_resnet.training.checkpoints import (
            checkpoint_to_resume,
            summary_mismatch,
        )

        config, resume = config_for_arguments(args)
        checkpoint = None
        if resume:
            folder = RunFolder(config.output_dir)
            found = checkpoint_to_resume(folder, args.from_previous_checkpoint)
            checkpoint, state = found if found else (None, None)
            if os.path.lexists(folder.summary_path):
                mismatch = summary_mismatch(folder, state, config.epochs)
                if mismatch is None:
                    print(
                        messages.run_complete(folder.path, folder.summary_path),
                        flush=True,
                    )
                    return 0
                print(messages.summary_not_trusted(folder.summary_path, mismatch))
        choose_backend()
        enable_compilation_cache(choose_backend().name)
    except (UsageError, BackendError) as err:
        # Named by the command even when the backend is only missing.
        print(messages.usage_error(parser.prog, err), file=sys.stderr)
        return messages.exit_status(err)
    except RunFileError as err:
        print(messages.failure_line(err), file=sys.stderr)
        return messages.exit_status(err)
    except KeyboardInterrupt as interrupt:
        print(messages.stopped_before_starting(), flush=True)
        return messages.exit_status(interrupt)
    if resume and checkpoint is None:
        logged = _logged_epochs(RunFolder(config.output_dir))
        if logged:
            # Starting again would write over epochs the log records.
            print(
                messages.logged_without_checkpoint(
                    RunFolder(config.output_dir).log_path, logged, CHECKPOINT_NAME
                ),
                file=sys.stderr,
            )
            return messages.EXIT_FAILED
        print(messages.starting_again(config.output_dir, CHECKPOINT_NAME), flush=True)
        resume = False
    status = _train(config, resume, checkpoint, parser.prog)
    if argv is None and status > 128:
        # The process's own command, stopped by a signal: nothing is left to
        # do, and the frameworks' teardown may crash mid-compilation.
        end_process(status)
    return status


def _train(config, resume, checkpoint, prog):
    try:
        # Keras is imported from here on, with the backend chosen: seconds
        # in which Ctrl-C must still be one line.
        from keras_cifar_resnet.data.cifar10 import DataError
        from keras_cifar_resnet.training.loop import train

        note = use_package_keras_settings()
        if note:
            print(messages.printable(note), flush=True)
    except KeyboardInterrupt as interrupt:
        print(messages.stopped_before_starting())
        return messages.exit_status(interrupt)

    try:
        return train(config, resume=resume, checkpoint=checkpoint)
    except (
        UsageError,
        DistributionError,
        DataError,
        RunFileError,
        ModelFileError,
    ) as err:
        # A lost process is a DistributionError that is no usage error.
        print(messages.failure(prog, err), file=sys.stderr)
        return messages.exit_status(err)


if __name__ == "__main__":
    sys.exit(main())
