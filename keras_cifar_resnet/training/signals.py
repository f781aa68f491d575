"""SIGINT, SIGTERM and SIGHUP during a training run: stop after the step, or at once.

SIGHUP (the terminal closed, without `nohup`) is handled as SIGTERM: a
checkpoint of the step, then the run stops. The terminal is gone by then,
so the outputs that were that terminal are pointed at the null device
first: the lines that would go there cannot fail the save.

Keras-free, like the command line, so that it can be installed before any
framework is imported.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

from keras_cifar_resnet import messages


class RunStopped(BaseException):
    """A signal that stops the run at once: outside the epochs, or a second one.

    A BaseException, like KeyboardInterrupt, so that no `except Exception`
    on the way (in Keras or a framework) swallows it.
    """

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def _say(line):
    """Prints `line` on a line of its own in one write.

    A second signal can stop the run between two writes; `print` writes the
    text and its newline separately, and the next line would join this one.
    """
    print(f"{line}\n", end="", flush=True)


def _is_terminal(stream):
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False


def _silence(streams):
    """Points `streams`' descriptors at the null device (their terminal hung up)."""
    for stream in streams:
        with contextlib.suppress(AttributeError, OSError, ValueError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, stream.fileno())
            os.close(null)


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP for the whole run, from setup to the last file.

    In the epochs (`in_epochs`), the first signal sets `signum`, which the
    `CheckpointOnSignal` callback checks after each step: the run stops there
    with a checkpoint. Outside the epochs (setup, the final test evaluation),
    and for a second signal, the run stops at once (`RunStopped`), except
    while a file is being written (`saving()`): the signal is held until the
    write is done, so the checkpoint a first signal asked for is always
    completed. A third signal during a write stops at once; the atomic write
    leaves the old file then. Once the run stops at once, further signals
    are ignored while it unwinds, so its one line is never cut short.

    Example:

    >>> with StopSignals() as signals:
    ...     signals.in_epochs = True
    ...     with signals.saving():
    ...         write_checkpoint()
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self):
        self.signum = None
        self.in_epochs = False
        self._saving = 0
        self._held = None
        self._stopping = False
        self._previous = {}
        self._previous_unraisable_hook = None
        self._terminal_outputs = ()

    def __enter__(self):
        # Known now: once the terminal hangs up, `isatty` no longer says so.
        self._terminal_outputs = [
            stream for stream in (sys.stdout, sys.stderr) if _is_terminal(stream)
        ]
        # Signal handlers can only be installed from the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        self._previous_unraisable_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = self._previous_unraisable_hook

    def _unraisable(self, unraisable):
        # A signal handled inside code that cannot raise (a garbage
        # collector's callback, a finaliser) has its `RunStopped` swallowed
        # there, with an "Exception ignored" traceback: the run stops after
        # this step instead, with a checkpoint, and prints nothing more.
        if isinstance(unraisable.exc_value, RunStopped):
            self.signum = self.signum or unraisable.exc_value.signum
            return
        self._previous_unraisable_hook(unraisable)

    def stop(self, signum):
        """Acts as if `signum` had arrived (a closed standard output: SIGPIPE)."""
        self._handle(signum, None)

    def _handle(self, signum, frame):
        if signum == signal.SIGHUP:
            _silence(self._terminal_outputs)
        if self._stopping:
            return  # stopping at once already: the unwinding must not break
        if self._saving and self._held is None:
            self._held = signum
            _say(messages.stopping_after_save(signum))
            return
        if self.in_epochs and self.signum is None:
            self.signum = signum
            _say(messages.stopping_after_step(signum))
            return
        self._stopping = True
        raise RunStopped(signum)

    @contextlib.contextmanager
    def saving(self):
        """Holds signals until the block's writes are done, then acts on them."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1
        if not self._saving and self._held is not None:
            signum, self._held = self._held, None
            self._stopping = True
            raise RunStopped(signum)
