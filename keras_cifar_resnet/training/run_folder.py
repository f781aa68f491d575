"""A training run's output folder: its files, how each is written and read back.

A run leaves in its folder:

- `config.json`: the resolved settings, backend, package versions, device;
  each `--resume` is appended under `resumed`;
- `log.csv`: one row per epoch, columns `LOG_COLUMNS`;
- `checkpoint.npz`: everything needed to continue (`checkpoints`), and
  `checkpoint.previous.npz`, the one before it;
- `final.keras`: the last epoch's model, and `best.keras`, the model with
  the best validation accuracy (when images are held out for validation);
- `summary.json`: the last epoch's model on the test set, and the best
  validation model's figures apart, labelled as chosen on validation;
- `curves.png`: loss and accuracy per epoch.

Every file is written and read through `safe_files`: written beside its
final name, flushed to disk and renamed over it, so a run killed while
writing leaves the previous version intact; read only as a regular file of
the run's own, within its size. `model_files.load_model` reads a run's model (or
any `.keras` file) back for inference.

Keras is imported inside the functions that need it, so the commands can
check their paths before the backend is chosen (`backend_choice`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import fcntl
import importlib.metadata
import io
import os
import platform
from pathlib import Path

from keras_cifar_resnet.errors import RunFileError, UsageError

# The run folder's file names, kept below every floor (run_files), are
# imported from here too.
from keras_cifar_resnet.run_files import (
    BEST_NAME as BEST_NAME,
    CHECKPOINT_NAME as CHECKPOINT_NAME,
    CONFIG_NAME as CONFIG_NAME,
    CURVES_NAME as CURVES_NAME,
    DAMAGED_CHECKPOINT_NAME as DAMAGED_CHECKPOINT_NAME,
    FINAL_NAME as FINAL_NAME,
    LOCK_NAME as LOCK_NAME,
    LOG_COLUMNS as LOG_COLUMNS,
    LOG_NAME as LOG_NAME,
    PREVIOUS_CHECKPOINT_NAME as PREVIOUS_CHECKPOINT_NAME,
    RUN_MODEL_FILES as RUN_MODEL_FILES,
    SUMMARY_NAME as SUMMARY_NAME,
    previous_checkpoint_path as previous_checkpoint_path,
)

# Re-exported from their former home here, where callers found them.
from keras_cifar_resnet.safe_files import (
    WriteError,
    open_regular_file as open_regular_file,
    read_run_json,
    read_run_text,
    unwritable_reason as unwritable_reason,
    write_atomically,
    write_json,
)


def now():
    """The local time, to the second, as ISO 8601 with its UTC offset."""
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def package_versions():
    """Versions of the packages that decide the numbers (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in (
        "keras-cifar-resnet",
        "keras",
        "numpy",
        "jax",
        "jaxlib",
        "tensorflow",
        "tensorflow-cpu",
        "torch",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description():
    """Where the backend puts tensors, read from a tensor (no framework import)."""
    import keras

    tensor = keras.ops.zeros(())
    device = getattr(tensor, "device", None)
    if callable(device):
        device = device()
    if device is None and hasattr(tensor, "devices"):
        # Older JAX (0.4.28) has no `device`: an array names its devices as a set.
        device = next(iter(tensor.devices()))
    return {
        "tensor_device": str(device),
        "device_kind": getattr(device, "device_kind", None),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }


def environment():
    """The backend, package versions and device, for `config.json`."""
    import keras

    return {
        "backend": keras.backend.backend(),
        "versions": package_versions(),
        "device": device_description(),
    }


class RunFolderBusy(UsageError):
    """Another process is training into the same folder (message: one line).

    A usage error: the command names a folder it cannot have now (exit 2).
    """


@contextlib.contextmanager
def hold_run_folder(path, held=True):
    """Holds the run folder `path` for one process at a time, for the block.

    An exclusive `flock` on the folder itself (an open descriptor of it),
    taken without waiting. The kernel holds the lock, not a file in the
    folder: deleting or replacing any file there admits no second process,
    and a killed process cannot leave the lock behind.

    Args:
        path: str or Path, the run's folder (created if missing).
        held: bool, False does nothing (the processes of a distributed run
            other than the chief, which write no files). Defaults to True.

    Raises:
        RunFolderBusy: another process holds the folder.
        WriteError: the folder cannot be created or opened.
    """
    if not held:
        yield
        return
    path = Path(path)
    # The folder and its parents (`runs/`) that this run creates, deepest first.
    created = [
        folder
        for folder in (path, *path.absolute().parents)
        if not os.path.lexists(folder)
    ]
    descriptor = _lock(path)
    try:
        yield
    finally:
        # A run stopped before writing leaves no empty folder, nor an empty
        # parent it made.
        with contextlib.suppress(OSError):
            for folder in created:
                folder.rmdir()
        os.close(descriptor)


def refuse_if_busy(path):
    """Raises `RunFolderBusy` when another process holds the run folder `path`.

    A look before the command reads the folder, so its other messages (a
    run to resume, a run to replace) do not come first; creates nothing.
    The run itself still takes the lock (`hold_run_folder`).
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return  # no folder there yet: nobody holds it
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(path) from None
    finally:
        os.close(descriptor)


def _busy(path):
    return RunFolderBusy(
        f"{path} is in use by another training process (it holds a lock on "
        "the folder); wait for it to end or choose another folder"
    )


def _lock(path):
    """An open descriptor of the folder `path` (created if missing), locked."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        reason = error.strerror or str(error)
        raise WriteError(error.errno, f"cannot create {path}: {reason}") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise _busy(path) from None
    return descriptor


def _format_number(value):
    return "" if value is None else f"{value:.6g}"


class RunFolder:
    """One training run's folder: the paths of its files and their writers.

    Args:
        path: str or Path, the folder (created by `start`).

    Example:

    >>> folder = RunFolder("runs/r18")
    >>> folder.saved_record()["config"]["model"]
    'resnet18'
    """

    def __init__(self, path):
        self.path = Path(path)
        self.config_path = self.path / CONFIG_NAME
        self.log_path = self.path / LOG_NAME
        self.checkpoint_path = self.path / CHECKPOINT_NAME
        self.previous_checkpoint_path = self.path / PREVIOUS_CHECKPOINT_NAME
        self.summary_path = self.path / SUMMARY_NAME
        self.curves_path = self.path / CURVES_NAME

    def holds_run(self):
        """Whether a run has started here (its `config.json` exists)."""
        return self.config_path.exists()

    def holds_checkpoint(self):
        """Whether the run here wrote a checkpoint (the last or the previous)."""
        return self.checkpoint_path.exists() or self.previous_checkpoint_path.exists()

    def start(self, record):
        """Creates the folder, its `config.json` (`record`) and the log's header.

        Raises:
            WriteError: the folder or a file could not be written.
        """
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            reason = error.strerror or str(error)
            raise WriteError(
                error.errno, f"cannot create {self.path}: {reason}"
            ) from error
        write_json(self.config_path, record)
        self._write_log([])

    def saved_record(self):
        """`config.json` as a dict (`config`, `started`, `resumed`, ...).

        Raises:
            RunFileError: the file is missing, damaged, a link, or its
                `resumed` entry is not a list (one line naming it).
        """
        record = read_run_json(self.config_path)
        if not isinstance(record.get("resumed", []), list):
            raise RunFileError(
                f'{self.config_path}: its "resumed" entry is '
                f"{type(record['resumed']).__name__}, not a list (edited?)"
            )
        return record

    def record_resume(self, entry):
        """Appends `entry` to the `resumed` list of `config.json`."""
        record = self.saved_record()
        record.setdefault("resumed", []).append(entry)
        write_json(self.config_path, record)

    def read_log(self):
        """The log's rows as dicts of strings, first epoch first.

        Raises:
            RunFileError: the log is missing, damaged or not this package's.
        """
        rows = list(csv.DictReader(io.StringIO(read_run_text(self.log_path))))
        if rows and not set(LOG_COLUMNS) >= set(rows[0]) - {None}:
            raise RunFileError(
                f"{self.log_path} has columns other than {', '.join(LOG_COLUMNS)}"
            )
        return rows

    def _write_log(self, rows):
        def write(temporary):
            with open(temporary, "w", newline="") as file:
                writer = csv.DictWriter(file, LOG_COLUMNS)
                writer.writeheader()
                writer.writerows(rows)

        write_atomically(self.log_path, write)

    def append_log_row(self, row):
        """Adds one epoch's row (numbers, or None for an empty cell)."""
        cells = {
            key: value if key == "epoch" else _format_number(value)
            for key, value in row.items()
        }
        self._write_log([*self.read_log(), cells])

    def truncate_log(self, epochs_done):
        """Keeps the first `epochs_done` epochs' rows (a resume redoes the rest).

        The rows are renumbered from 1, as the console counts epochs: logs
        written by earlier versions of the package count from 0.
        """
        rows = self.read_log()[:epochs_done]
        self._write_log(
            [row | {"epoch": str(number)} for number, row in enumerate(rows, 1)]
        )

    def save_model(self, model, name):
        """Saves `model` as `name` (`best.keras`, `final.keras`), atomically."""
        return write_atomically(self.path / name, model.save)

    def write_summary(self, summary):
        return write_json(self.summary_path, summary)
