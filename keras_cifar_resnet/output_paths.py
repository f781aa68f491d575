"""Paths a command is about to write: refused before any work if they would clobber.

A command creates its outputs or replaces its own earlier ones; it never
writes over the model it reads, a file of a training run, a device, a pipe
or a folder. Keras-free, like the command line that calls it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from keras_cifar_resnet.training.run_folder import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CURVES_NAME,
    DAMAGED_CHECKPOINT_NAME,
    FINAL_NAME,
    LOCK_NAME,
    LOG_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    SUMMARY_NAME,
)

# Every file a training run writes in its folder.
RUN_FILE_NAMES = (
    CONFIG_NAME,
    LOG_NAME,
    CHECKPOINT_NAME,
    PREVIOUS_CHECKPOINT_NAME,
    DAMAGED_CHECKPOINT_NAME,
    BEST_NAME,
    FINAL_NAME,
    SUMMARY_NAME,
    CURVES_NAME,
    LOCK_NAME,
)


def not_a_regular_file(path):
    """What `path` is when it exists and is not a regular file, else None.

    Symbolic links are followed: a link to a device is a device.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except OSError as error:  # a dangling or looping link, no permission
        return f"cannot be used ({error.strerror or error})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder"
    if stat.S_ISFIFO(mode):
        return "is a pipe (FIFO), not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a regular file"
    return "is not a regular file"


def _same_file(path, other):
    try:
        return os.path.samefile(path, other)
    except OSError:
        return False


def clobber_problem(path, *, inputs=()):
    """Why writing `path` would destroy something, or None when it may be written.

    Args:
        path: str or Path, a file the command is about to write.
        inputs: iterable of str or Path, files the command reads (the model):
            an output may not be one of them. Defaults to ().

    Returns:
        str (the end of one line: "`path` is ...") or None.
    """
    path = Path(path)
    what = not_a_regular_file(path)
    if what is not None:
        return what
    for source in inputs:
        if _same_file(path, source):
            return f"is {source}, the model being read"
    if path.name in RUN_FILE_NAMES and (path.parent / CONFIG_NAME).is_file():
        return f"is the {path.name} of the training run in {path.parent}"
    return None


def foreign_run_files(folder):
    """The files of `folder` that a new run would write over, when it holds no run.

    A folder with `config.json` is a run's (judged by the caller); any other
    folder may hold a user's own files, which a run must not replace.

    Returns:
        list of str, names (empty: nothing would be replaced).
    """
    folder = Path(folder)
    if not folder.is_dir() or (folder / CONFIG_NAME).exists():
        return []
    return [
        name
        for name in RUN_FILE_NAMES
        if name != LOCK_NAME and os.path.lexists(folder / name)
    ]
