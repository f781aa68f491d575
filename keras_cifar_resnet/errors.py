"""The package's exceptions that several floors raise, below all of them.

Imports nothing of the package, so any module may raise or catch these
without an import that runs up a floor or closes a circle. Each message
is one line, for the commands' `error:` lines; `usage` says whose the
fix is (`messages.exit_status`: True, the user's, exit status 2).
"""

from __future__ import annotations


class RunFileError(Exception):
    """A file of a run's folder that cannot be trusted: missing, unreadable,
    damaged, a link or not a regular file, or not this run's."""


class CheckpointError(RunFileError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


class ModelFileError(Exception):
    """A model path that is not a usable `.keras` file (message: one line)."""

    def __init__(self, message, usage=False):
        super().__init__(message)
        # True when the user named the wrong thing (exit status 2), False
        # when the named file itself is broken.
        self.usage = usage


class UsageError(Exception):
    """A bad command line or setting: the command exits with status 2, one line."""

    usage = True  # `messages.exit_status`: the user's to fix


class DistributionError(Exception):
    """Data-parallel training cannot start as asked (one line, for the CLI)."""

    usage = True  # `messages.exit_status`: the user's to fix


class LostProcessError(DistributionError):
    """Another process of a multi-process run stopped or became unreachable."""

    usage = False


class WriteError(OSError):
    """A run's file could not be written (a full disk, a read-only place).

    The message names the file and the reason in one line; the file's old
    version, if any, is intact (`safe_files.write_atomically`).
    """

    def __str__(self):
        return self.strerror
