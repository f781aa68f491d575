"""Ending the training command's process at once once a signal has stopped it.

After a run stopped by a signal has written what it keeps and printed how
to continue, there is nothing left to do; but the interpreter's usual
clean-up still runs every framework's teardown. Under JAX, a second
Ctrl-C during the first step's compilation leaves XLA mid-compile, and
that teardown then crashes (SIGSEGV) or prints a traceback from an atexit
hook. `end_process` skips it: the files are already written (each fsynced
and renamed into place), and the kernel releases the folder's lock.
Keras-free.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def end_process(status):
    """Flushes stdout and stderr and ends the process with `status`, now.

    Signals that arrive meanwhile are ignored: the run has stopped already.
    Only for the command's own process, never a library caller's.

    Args:
        status: int, the exit status (128 + the signal number).
    """
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signum, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
