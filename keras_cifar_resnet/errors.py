"""The package's file errors, in a module that imports nothing of the package.

So that any module may raise or catch them without importing the one that
reads the file (no import circles). Each message is one line naming the
file.
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
