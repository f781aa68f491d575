"""A run's checkpoints, their one owner: everything needed to continue exactly.

One `.npz` file holds the model's, the optimizer's and the metrics'
variables (running totals, for a checkpoint in the middle of an epoch) and
a JSON record of where the run stands and of the settings that shape the
computation (`run_settings`), so a resume whose `config.json` was edited is
refused in one line. Values are keyed by position and checked against the
variables' paths and shapes on load, so a checkpoint written under one
backend loads under another. The data order and augmentation need no saved
random state: they are functions of the seed, the epoch and the
optimizer's step counter saved here.

This module owns writing (`Checkpoints`, `save_checkpoint`: atomic, through
`safe_files`, the file replaced kept as `checkpoint.previous.npz` by
`run_folder.previous_checkpoint_path`), choosing the one a resume continues
from (`checkpoint_to_resume`: the previous one when the last is damaged or
gone), restoring it (`load_checkpoint`), and whether a run's `summary.json`
is the one its checkpoint finished with (`summary_mismatch`). Reading a
damaged file raises `CheckpointError` in one line; every member's declared
size is checked before numpy allocates it.

Reading needs numpy only; Keras is imported by the functions that touch
variables, so a command can check a checkpoint before choosing the backend.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_cifar_resnet import messages
from keras_cifar_resnet.config import RESUME_OVERRIDABLE, UsageError
from keras_cifar_resnet.errors import CheckpointError, RunFileError
from keras_cifar_resnet.safe_files import (
    open_regular_file,
    read_run_json,
    write_atomically,
)
from keras_cifar_resnet.training.run_folder import (
    DAMAGED_CHECKPOINT_NAME,
    now,
    previous_checkpoint_path,
)

FORMAT_VERSION = 1


def run_settings(config):
    """The settings of `config` that shape the computation, JSON-ready.

    All of a `TrainConfig` but where the output goes and what a resume may
    change (`config.RESUME_OVERRIDABLE`).
    """
    skip = {*RESUME_OVERRIDABLE, "output_dir"}
    settings = {k: v for k, v in config.to_dict().items() if k not in skip}
    return json.loads(json.dumps(settings))  # tuples as lists, as saved


def check_run_settings(state, settings, path):
    """Raises `CheckpointError` when `settings` differ from the checkpoint's.

    A checkpoint written before the settings were stored has its seed
    compared only.

    Args:
        state: dict, the checkpoint's saved state.
        settings: dict, `run_settings` of the run about to continue.
        path: Path, the checkpoint, for the message.
    """
    saved = state.get("settings")
    if saved is None:
        saved = {"seed": state["seed"]} if "seed" in state else {}
    differ = [
        f"{name} {settings[name]!r} (checkpoint: {value!r})"
        for name, value in saved.items()
        if name in settings and settings[name] != value
    ]
    if differ:
        raise CheckpointError(
            f"{path.parent / 'config.json'} disagrees with {path.name}: "
            f"{', '.join(differ)}; the checkpoint records how the run was "
            "trained: put its values back in config.json, or start a new run"
        )


def _signature(group, variable):
    """What must match between saved and restored variables: path and shape.

    Optimizer paths start with the optimizer's name, which Keras makes unique
    per process (`sgd`, `sgd_1`, ...), so that first part is left out.
    """
    path = variable.path
    if group == "optimizer":
        path = path.split("/", 1)[-1]
    return [path, list(variable.shape)]


def _groups(model):
    """The variables a checkpoint holds, by group, in a fixed order."""
    return {
        "model": list(model.variables),
        "optimizer": list(model.optimizer.variables) if model.optimizer else [],
        "metrics": list(model.metrics_variables),
    }


def save_checkpoint(path, model, state):
    """Writes `model`'s variables and `state` to `path`, atomically.

    Inside `fit`, call `model.sync_training_state()` first: under JAX the
    variables do not hold the latest values until then.

    Args:
        path: str or Path, the checkpoint file (`.npz`); the file it replaces
            is kept as `previous_checkpoint_path(path)`.
        model: a compiled Keras model whose optimizer has been built.
        state: dict, JSON-ready: where the run stands (epoch, step, seed...).

    Returns:
        Path, the written file.
    """
    import keras

    path = Path(path)
    arrays = {}
    paths = {}
    for group, variables in _groups(model).items():
        paths[group] = [_signature(group, v) for v in variables]
        for index, variable in enumerate(variables):
            # The variable, not `.value`: under tf.distribute the metrics' totals
            # are per-replica (sync-on-read) and only the variable sums them.
            arrays[f"{group}/{index:05d}"] = keras.ops.convert_to_numpy(variable)
    record = {"format": FORMAT_VERSION, "state": state, "variables": paths}
    arrays["record"] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)

    def write(temporary):
        with open(temporary, "wb") as file:
            np.savez(file, **arrays)

    write_atomically(path, write, keep_previous=previous_checkpoint_path(path))
    return path


def _damage(path, error):
    """What is wrong with a checkpoint file that failed to read, in words.

    Never numpy's own message: for a file it cannot parse it suggests
    `allow_pickle=True`, which must not be done with a file this package
    wrote (it holds plain arrays only).
    """
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "not a complete .npz archive (truncated or overwritten)"
    if isinstance(error, (zipfile.BadZipFile, zlib.error, EOFError)):
        return f"its archive is corrupt ({' '.join(str(error).split())})"
    if isinstance(error, (UnicodeDecodeError, json.JSONDecodeError)):
        return "its record is not valid JSON"
    if isinstance(error, KeyError):
        return "it has no record of the run (not written by this package)"
    return f"a member is not a plain array ({type(error).__name__})"


def _read(path):
    path = Path(path)
    try:
        file = open_regular_file(path)
    except RunFileError as err:
        if not os.path.lexists(path):
            raise CheckpointError(f"{path}: no checkpoint there") from None
        raise CheckpointError(str(err)) from None
    try:
        with file:
            _check_members(file, os.fstat(file.fileno()).st_size)
            file.seek(0)
            with np.load(file, allow_pickle=False) as contents:
                arrays = {name: contents[name] for name in contents.files}
        record = json.loads(arrays.pop("record").tobytes().decode())
        _check_arrays(record, arrays)
    except CheckpointError as err:
        raise CheckpointError(f"{path} is not a readable checkpoint: {err}") from None
    except Exception as err:  # noqa: BLE001 - any failure is the file's damage
        raise CheckpointError(
            f"{path} is not a readable checkpoint: {_damage(path, err)}"
        ) from None
    if record.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {record.get('format')!r}, expected "
            f"{FORMAT_VERSION}"
        )
    return record, arrays


def _check_members(file, file_size):
    """Every member is a stored array no larger than the bytes it holds.

    Read from each member's header before its values: numpy allocates the
    whole declared array first, so a small file declaring a (40000, 40000)
    array would otherwise take gigabytes before failing.
    """
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > file_size:
                raise CheckpointError(
                    f"member {info.filename!r} is compressed or larger than the "
                    "file (not written by this package)"
                )
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version not in _HEADER_READERS:
                    raise CheckpointError(
                        f"member {info.filename!r} has an unknown array header"
                    )
                shape, _, dtype = _HEADER_READERS[version](member)
            declared = math.prod(shape) * dtype.itemsize
            if declared > info.file_size:
                raise CheckpointError(
                    f"member {info.filename!r} declares a {shape} array of "
                    f"{declared:,} bytes but holds {info.file_size:,}"
                )


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _check_arrays(record, arrays):
    """Every variable the record lists is there, with its shape, as finite numbers."""
    if record.get("format") != FORMAT_VERSION:
        return  # reported by the caller, with the versions
    for group, signatures in record["variables"].items():
        for index, (variable, shape) in enumerate(signatures):
            array = arrays.get(f"{group}/{index:05d}")
            if array is None or list(array.shape) != shape:
                raise CheckpointError(f"{group} value #{index} is missing or cut")
            # "V": bfloat16 values, which numpy stores as raw 2-byte records.
            if array.dtype.kind not in "biufV":
                raise CheckpointError(
                    f"{group} value #{index} ({variable}) is {array.dtype}, not numbers"
                )
            if array.dtype.kind == "f" and not np.isfinite(array).all():
                raise CheckpointError(
                    f"{group} value #{index} ({variable}) holds NaN or infinite values"
                )


def read_checkpoint_state(path):
    """The `state` dict saved in the checkpoint at `path`, without loading values.

    Raises:
        CheckpointError: missing or unreadable file.
    """
    return _read(path)[0]["state"]


def load_checkpoint(path, model, settings=None):
    """Restores `model`'s, its optimizer's and its metrics' variables from `path`.

    Builds the optimizer first if needed. Every variable's path and shape
    must match the saved ones (same architecture, optimizer and precision
    policy), else nothing is assigned.

    Args:
        path: str or Path, a file written by `save_checkpoint`.
        model: the compiled model, built as when the checkpoint was written.
        settings: dict or None, `run_settings` of the run continuing; when
            given, they must match the checkpoint's. Defaults to None.

    Returns:
        dict, the `state` saved with the checkpoint.

    Raises:
        CheckpointError: missing or unreadable file, settings or variables
            that do not match the run's.
    """
    record, arrays = _read(path)
    if settings is not None:
        check_run_settings(record["state"], settings, Path(path))
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    groups = _groups(model)
    for group, variables in groups.items():
        saved = record["variables"].get(group, [])
        current = [_signature(group, v) for v in variables]
        if saved != current:
            mismatch = next(
                (
                    f"#{i}: saved {s}, model has {c}"
                    for i, (s, c) in enumerate(zip(saved, current, strict=False))
                    if s != c
                ),
                f"saved {len(saved)} variables, model has {len(current)}",
            )
            raise CheckpointError(
                f"{path}: the {group} variables do not match this run's ({mismatch});"
                " the checkpoint is from a different model, optimizer or precision"
            )
    for group, variables in groups.items():
        for index, variable in enumerate(variables):
            variable.assign(arrays[f"{group}/{index:05d}"])
    return record["state"]


def saved_state(path):
    """The state of the checkpoint at `path`, or None when none is readable."""
    try:
        return read_checkpoint_state(path)
    except CheckpointError:
        return None


def checkpoint_to_resume(folder, from_previous=False):
    """(path, state) of the checkpoint `--resume` continues from; None: none yet.

    The last checkpoint; the previous one when asked, or when the last is
    gone (deleted, or a copy of the folder without it), so that the epochs
    it holds are never redone from the beginning. None means the run
    stopped before its first checkpoint: it has nothing to lose.

    Args:
        folder: the run's `RunFolder`.
        from_previous: bool, `--from-previous-checkpoint`.

    Raises:
        CheckpointError: the checkpoint is damaged (the message says whether
            the previous one is good and how to continue from it).
        UsageError: `--from-previous-checkpoint` without a previous one.
    """
    last, previous = folder.checkpoint_path, folder.previous_checkpoint_path
    if from_previous:
        if not os.path.lexists(previous):
            raise UsageError(
                f"--from-previous-checkpoint: {folder.path} has no {previous.name}"
            )
        return previous, read_checkpoint_state(previous)
    if not os.path.lexists(last):
        if os.path.lexists(previous):
            return previous, read_checkpoint_state(previous)
        return None
    try:
        return last, read_checkpoint_state(last)
    except CheckpointError as err:
        previous_state = saved_state(previous)
        advice = messages.previous_checkpoint_advice(
            folder.path, last, previous, previous_state, os.path.lexists(previous)
        )
        raise CheckpointError(f"{err}; {advice}") from None


def set_aside_last(folder, checkpoint):
    """Before a run continues from the previous checkpoint, moves the last away.

    Else the next save would keep the damaged last file as the previous one
    and drop the good one. Returns the note to print (or None when the run
    continues from the last checkpoint).
    """
    if checkpoint == folder.checkpoint_path:
        return None
    if os.path.lexists(folder.checkpoint_path):
        damaged = folder.path / DAMAGED_CHECKPOINT_NAME
        folder.checkpoint_path.replace(damaged)
        return messages.continuing_from(checkpoint, damaged)
    return messages.continuing_from(checkpoint, missing=folder.checkpoint_path.name)


def summary_mismatch(folder, state, epochs):
    """Why the run's `summary.json` is not the one its checkpoint finished with.

    None when it is: a regular file of the run, recording `epochs` epochs
    and the checkpoint's training time, while the checkpoint stands at the
    end of the last epoch. Only then is a resumed run complete.

    Args:
        folder: the run's `RunFolder`.
        state: dict or None, the checkpoint's state.
        epochs: int, the run's epochs.

    Returns:
        str (why not) or None.
    """
    if state is None or (state["epoch"], state["step"]) != (epochs, 0):
        return "its checkpoint has not finished the last epoch"
    try:
        summary = read_run_json(folder.summary_path)
    except RunFileError as err:
        return str(err)
    if summary.get("epochs") != epochs or summary.get("train_seconds") != round(
        state["train_seconds"], 1
    ):
        return "it records other epochs or another training time than the checkpoint"
    return None


class Checkpoints:
    """Saves the model with the run's `Position` to the run's checkpoint.

    Args:
        path: Path of `checkpoint.npz`.
        model: the compiled Keras model.
        config: the run's `TrainConfig` (its seed goes in the record).
        steps_per_epoch: int, recorded so a resume can check the data.
        distribution: the run's `Distribution`; only its chief writes.
        signals: `StopSignals`, held while the file is written.
    """

    def __init__(self, path, model, config, steps_per_epoch, distribution, signals):
        self.path = path
        self.model = model
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.distribution = distribution
        self.signals = signals

    def save(self, position):
        """Writes `position` and the model's state."""
        import keras

        if not self.distribution.is_chief:
            # As the chief's write reads them (TF across workers).
            self.distribution.join_chief_read(self.model.metrics_variables)
            return
        state = {
            "epoch": position.epoch,
            "step": position.step,
            "seed": self.config.seed,
            "steps_per_epoch": self.steps_per_epoch,
            "best_epoch": position.best_epoch,
            "best_val_accuracy": position.best_val_accuracy,
            "train_seconds": position.train_seconds,
            # What shaped the computation: a resume compares config.json with it.
            "settings": run_settings(self.config),
            "backend": keras.backend.backend(),
            "time": now(),
        }
        with self.signals.saving():
            save_checkpoint(self.path, self.model, state)
