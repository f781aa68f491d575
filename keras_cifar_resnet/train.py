"""Train a ResNet on CIFAR-10: `python -m keras_cifar_resnet.train --help`.

The command: flags to a `TrainConfig` (or a saved run's, with `--resume`),
then `training.train`. The run uses the current Keras backend
(KERAS_BACKEND) and writes its output folder (see
`keras_cifar_resnet.run_folder`).

Exit status: 0 done; 1 failed (missing data, non-finite loss); 2 bad
command line; 128 + signal number when stopped by SIGINT (130) or SIGTERM
(143) after saving a checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import sys
from pathlib import Path

from keras_cifar_resnet.checkpoints import CheckpointError, read_checkpoint_state
from keras_cifar_resnet.config import (
    RESUME_OVERRIDABLE,
    TrainConfig,
    UsageError,
    build_parser,
    config_from_flags,
    explicit_flags,
    flag_name,
    learning_rate_scaling,
)
from keras_cifar_resnet.data import DataError
from keras_cifar_resnet.distribute import DistributionError, LostProcessError
from keras_cifar_resnet.run_folder import CHECKPOINT_NAME, CONFIG_NAME, RunFolder
from keras_cifar_resnet.training import EXIT_FAILED, train

EXIT_USAGE = 2


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
    try:
        saved, unreadable = TrainConfig(**folder.saved_record()["config"]), None
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
    if not folder.checkpoint_path.is_file():
        raise UsageError(
            f"--resume {run_dir}: no {CHECKPOINT_NAME} (the run stopped before "
            "its first checkpoint); start it again instead"
        )
    try:
        if unreadable is not None:
            raise unreadable
        read_checkpoint_state(folder.checkpoint_path)
    except (ValueError, TypeError, KeyError, CheckpointError) as err:
        raise UsageError(f"--resume {run_dir}: cannot read the run ({err})") from None
    overrides = {name: flags[name] for name in RESUME_OVERRIDABLE if name in flags}
    return dataclasses.replace(saved, output_dir=str(run_dir), **overrides)


def _same_as_saved(name, value, saved, run_dir):
    """Whether flag `name`'s `value` is what the saved run already has."""
    if saved is None:
        return False
    if name == "output_dir":
        # The folder being resumed, however it is spelled.
        return Path(value).resolve() == Path(run_dir).resolve()
    return value == getattr(saved, name)


def config_for_arguments(args):
    """(config, resume, learning_rate_scaling) from parsed arguments.

    Raises:
        UsageError: bad values, flags that cannot go with `--resume`, or an
            output folder that already holds a run.
    """
    flags = explicit_flags(args)
    if args.resume is not None:
        return _resumed_config(Path(args.resume), flags), True, None
    try:
        config = config_from_flags(flags)
        scaling = learning_rate_scaling(flags)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if config.output_dir is None:
        config = dataclasses.replace(config, output_dir=_default_output_dir(config))
    if RunFolder(config.output_dir).holds_run():
        raise UsageError(
            f"--output-dir {config.output_dir} already holds a run; continue it with "
            f"--resume {config.output_dir} or choose another folder"
        )
    return config, False, scaling


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
    except LostProcessError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, DistributionError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
