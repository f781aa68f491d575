"""Files written whole or not at all: beside their name, synced, renamed over it.

The run folder, the checkpoints, the plots and the evaluate command's
report all write through `write_atomically`, so a process killed while
writing leaves the previous version intact. Imports nothing of the package
but its exceptions, so every floor may use it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from keras_cifar_resnet.errors import WriteError


def write_atomically(path, write, *, keep_previous=None):
    """Writes `path` through `write(temporary_path)`, then fsyncs and renames.

    The temporary file keeps `path`'s suffix (Keras saves only to `.keras`
    names). Its bytes reach the disk before the rename makes them the file,
    so a crash or power cut leaves the old file or the new one, never a
    truncated one.

    Args:
        path: str or Path, the file to (re)write.
        write: callable taking the temporary Path and writing the content.
        keep_previous: str, Path or None: where the old `path` is kept once
            the new one is written (a damaged file then has a fallback).
            Defaults to None (not kept).

    Returns:
        Path, the written file.

    Raises:
        WriteError: the file could not be written; the old one is intact.
    """
    path = Path(path)
    try:
        return _write_atomically(path, write, keep_previous)
    except WriteError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        raise WriteError(error.errno, f"cannot write {path}: {reason}") from error


def _write_atomically(path, write, keep_previous):
    # Renamed over a regular file only: never a folder, device or pipe.
    if os.path.exists(path) and not os.path.isfile(path):
        raise WriteError(
            errno.EEXIST, f"cannot write {path}: it exists and is not a regular file"
        )
    temporary = path.with_name(f".{os.getpid()}.{path.name}")
    try:
        write(temporary)
        with open(temporary, "r+b") as file:
            os.fsync(file.fileno())
        if keep_previous is not None and path.exists():
            _keep_copy(path, Path(keep_previous))
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def _keep_copy(path, copy):
    """Makes `copy` hold `path`'s bytes, atomically, leaving `path` in place.

    A hard link costs nothing; a copy serves file systems without links.
    `path` never goes missing, so there is no moment without a checkpoint.
    """
    temporary = copy.with_name(f".{os.getpid()}.{copy.name}")
    try:
        try:
            os.link(path, temporary)
        except OSError:
            shutil.copyfile(path, temporary)
        os.replace(temporary, copy)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_json(path, data):
    """Writes `data` as indented JSON to `path`, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text))
