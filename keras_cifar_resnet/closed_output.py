"""A standard output closed by its reader (`... | head -2`): a quiet stop, no traceback.

Python ignores SIGPIPE, so a write to a pipe whose reader has gone raises
`BrokenPipeError` from whatever line printed next (a progress bar, an
epoch line). `closed_stdout_guard` turns that into a call the command
chooses: the training command stops as it does on a signal (a checkpoint,
the resume line on stderr, the exit status of SIGPIPE); evaluation and
prediction go on and write their files. Keras-free.
"""

from __future__ import annotations

import contextlib
import os
import sys


class _GuardedStdout:
    """Stands in for `sys.stdout`: writes go on until the reader closes the pipe.

    From then on they go to `sys.stderr` (itself guarded: a closed stderr
    swallows them) or nowhere, and file descriptor 1 points at the null device so that
    the interpreter's last flush at exit finds nothing to complain about.
    """

    def __init__(self, stream, on_close, rest_to_stderr):
        self._stream = stream
        self._on_close = on_close
        self._rest = _to_stderr if rest_to_stderr else len
        self.closed_by_reader = False

    def write(self, text):
        if self.closed_by_reader:
            return self._rest(text)
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()
            return self._rest(text)

    def flush(self):
        if self.closed_by_reader:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def _closed(self):
        self.closed_by_reader = True
        with contextlib.suppress(OSError, ValueError):
            descriptor = self._stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, descriptor)
            os.close(null)
        if self._on_close is not None:
            self._on_close()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...
        return getattr(self._stream, name)


def _to_stderr(text):
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()
    return len(text)


@contextlib.contextmanager
def closed_stdout_guard(on_close=None, *, rest_to_stderr=True):
    """Guards `sys.stdout` for the block against a reader that closes the pipe.

    Args:
        on_close: callable taking nothing, or None: called once, from the
            write that found the pipe closed (it may raise to stop the
            command there). Defaults to None (go on).
        rest_to_stderr: bool, whether what is printed after the pipe closed
            goes to stderr (the line that says how to continue) or is
            dropped (the rest of a report written to a file anyway).
            Defaults to True.

    Yields:
        the guard; its `closed_by_reader` says whether the pipe closed.
    """
    guard = _GuardedStdout(sys.stdout, on_close, rest_to_stderr)
    sys.stdout = guard
    try:
        yield guard
    finally:
        if sys.stdout is guard:
            sys.stdout = guard._stream
