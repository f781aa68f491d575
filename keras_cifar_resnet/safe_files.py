"""Files written atomically and read safely: the one place that touches their bytes.

Every file a command writes goes through `write_atomically`: into a new
file beside its name, created exclusively at an unpredictable name (a link
planted there is never followed), flushed to disk, then renamed over the
name, so a run killed while writing leaves the old file or the new one,
never a truncated one. Every file of a run that a command reads goes
through `open_regular_file`: opened without following a link and without
waiting on a pipe or device, checked from the open file to be a regular
file within its size, so what is read is what was checked. Keras-free and
free of the package's other modules (`errors` aside), so any module may
use it.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path

from keras_cifar_resnet.errors import RunFileError, WriteError

# The most a run's text file may hold before it is read: a log of 100,000
# epochs is about 10 MB.
TEXT_FILE_LIMIT = 64 << 20


def unwritable_reason(folder):
    """Why files cannot be written in `folder`, or None when they can.

    Checked before a command does any work, without creating `folder`: its
    nearest existing ancestor must be a folder that takes a file (a
    temporary one, removed at once), so a read-only file system or a path
    through a file is caught here rather than after minutes of work.

    Args:
        folder: str or Path, the folder a command will write into (it may not
            exist yet).

    Returns:
        str (one line) or None.
    """
    folder = Path(folder)
    try:
        os.stat(folder)
    except (FileNotFoundError, NotADirectoryError):
        pass  # judged from its nearest existing ancestor below
    except OSError as error:  # a name too long, a loop of links, no access
        return f"cannot be used ({error.strerror or error})"
    existing = folder
    while not existing.exists() and existing.parent != existing:
        if os.path.islink(existing):
            return f"{existing} is a link to {os.readlink(existing)}, which is missing"
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        return f"cannot write in {existing} ({error.strerror or error})"
    return None


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
    temporary = _exclusive_temporary(path)
    try:
        write(temporary)
        with open(temporary, "r+b") as file:
            os.fsync(file.fileno())
        if keep_previous is not None and _is_own_file(path):
            _keep_copy(path, Path(keep_previous))
        os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            temporary.unlink()
    return path


def _exclusive_temporary(path):
    """A new, empty file beside `path` with an unpredictable name, made here.

    Created exclusively (`mkstemp`: O_CREAT | O_EXCL, which never follows a
    link), so a link planted at a guessable name is never written through.
    Its mode is what `open` would give (the umask's), not mkstemp's 0600.
    """
    descriptor, name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent
    )
    try:
        os.fchmod(descriptor, 0o666 & ~_umask())
    finally:
        os.close(descriptor)
    return Path(name)


def _umask():
    """The process's umask, read without changing it where Linux says it."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)  # elsewhere: set and put back at once
    os.umask(mask)
    return mask


def _is_own_file(path):
    """Whether `path` is a regular file itself, not a link to one elsewhere."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _keep_copy(path, copy):
    """Makes `copy` hold `path`'s bytes, atomically, leaving `path` in place.

    A hard link costs nothing; a copy serves file systems without links.
    Either is made at a new unpredictable name (a link is never followed),
    then renamed over `copy`. `path` never goes missing, so there is no
    moment without a checkpoint.
    """
    temporary = copy.with_name(f".{copy.name}.{secrets.token_hex(8)}")
    try:
        try:
            os.link(path, temporary, follow_symlinks=False)
        except OSError as error:
            if error.errno == errno.EEXIST:
                raise
            _copy_exclusively(path, temporary)
        os.replace(temporary, copy)
    finally:
        if os.path.lexists(temporary):
            temporary.unlink()


def _copy_exclusively(source, target):
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with (
        open_regular_file(source) as reader,
        os.fdopen(os.open(target, flags, 0o666), "wb") as writer,
    ):
        shutil.copyfileobj(reader, writer)


def open_regular_file(path, limit=None, follow_links=False):
    """`path` opened for reading in binary, when it is a regular file of its own.

    Opened without following a link and without waiting (a pipe or device
    would block or never end), then checked from the open file: so what is
    read is what was checked. A run's files are its own: a link is refused.

    Args:
        path: str or Path.
        limit: int or None, the most bytes the file may hold. Defaults to
            None (no limit).
        follow_links: bool, accept a link to a regular file (a file the
            user names, not a run's). Defaults to False.

    Returns:
        a binary file object; the caller closes it.

    Raises:
        RunFileError: missing, a link, not a regular file, too large, or
            unreadable (one line naming it).
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_links:
        flags |= os.O_NOFOLLOW
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        if error.errno == errno.ELOOP and not follow_links:
            raise RunFileError(
                f"{path} is a link; a run's files must be its own (replace it "
                "with the file itself)"
            ) from None
        if error.errno == errno.ENOENT:
            raise RunFileError(f"{path} is missing") from None
        raise RunFileError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            what = "a folder" if stat.S_ISDIR(status.st_mode) else "a pipe or device"
            raise RunFileError(f"{path} is {what}, not a regular file")
        if limit is not None and status.st_size > limit:
            raise RunFileError(
                f"{path} holds {status.st_size:,} bytes, above the {limit:,} "
                "such a file may hold"
            )
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_run_text(path, limit=TEXT_FILE_LIMIT):
    """A run's text file (`config.json`, `log.csv`, `summary.json`) as str.

    Raises:
        RunFileError: see `open_regular_file`, or not UTF-8 text.
    """
    with open_regular_file(path, limit) as file:
        data = file.read(limit + 1)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunFileError(f"{path} is not UTF-8 text (damaged?)") from None


def read_run_json(path):
    """A run's JSON file as a dict.

    Raises:
        RunFileError: unreadable (`read_run_text`), not JSON, or not an object.
    """
    try:
        data = json.loads(read_run_text(path))
    except (ValueError, RecursionError):
        raise RunFileError(f"{path} is not valid JSON (damaged?)") from None
    if not isinstance(data, dict):
        raise RunFileError(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def write_json(path, data):
    """Writes `data` as indented JSON to `path`, atomically."""
    text = json.dumps(data, indent=2) + "\n"
    return write_atomically(path, lambda temporary: temporary.write_text(text))
