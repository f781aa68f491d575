"""Reading a saved model as data: checked before Keras builds anything.

A `.keras` file is a zip archive whose `config.json` tells Keras which
classes to build with which arguments, and Keras's `safe_mode` blocks only
a denylist (a `Lambda` may still name a Keras function that writes files).
So `load_model` reads the archive first and accepts only what this package
makes:

- members: `config.json`, `metadata.json` and `model.weights.h5`, each
  within a size declared in the archive's directory (checked before
  inflating), with intact checksums;
- classes: the model must be this package's `ResNet`, and every object the
  config names must be in `ALLOWED_CLASSES` (no `Lambda`, no functions);
- size: the parameters the config declares (`MAX_PARAMETERS`), its input
  (`MAX_INPUT_PIXELS`) and the memory it needs (`resources`), checked by
  `model_limits.check_declared_size`;
- fit: the input and the classes the caller expects (32x32x3 and 10 for
  CIFAR-10);
- weights: floating-point and finite.

Each refusal is a `ModelFileError` with one line naming what was refused.
Keras is imported only once the file has passed, and any
temporary files of a load that fails are removed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from keras_cifar_resnet.errors import ModelFileError, RunFileError
from keras_cifar_resnet.reporting.model_limits import (
    CIFAR10_CLASSES,
    CIFAR10_INPUT_SHAPE,
    check_declared_size,
    check_weight_layout,
    check_zip_member,
)
from keras_cifar_resnet.run_files import RUN_MODEL_FILES
from keras_cifar_resnet.safe_files import open_regular_file

CONFIG_MEMBER = "config.json"
METADATA_MEMBER = "metadata.json"
WEIGHTS_MEMBER = "model.weights.h5"
# The largest each member may inflate to; the weights' limit grows with the
# parameters the config declares (float64 at most, plus HDF5's own records).
MEMBER_LIMITS = {CONFIG_MEMBER: 1 << 20, METADATA_MEMBER: 64 << 10}
WEIGHTS_BYTES_PER_PARAMETER = 8
WEIGHTS_OVERHEAD_BYTES = 16 << 20
# Every class a model file of this package may name, by the name Keras
# registers it under (a package's `package>Class`, Keras's own class name),
# with the module the file must give for it. To let a new layer or
# initializer through, add its row here.
ALLOWED_CLASSES = {
    "keras_cifar_resnet>ResNet": "keras_cifar_resnet.models",
    "keras_cifar_resnet>BatchNormalization": "keras_cifar_resnet.network.batch_norm",
    "keras_cifar_resnet>Conv2D": "keras_cifar_resnet.network.conv",
    "keras_cifar_resnet>MaxPooling2D": "keras_cifar_resnet.network.pooling",
    **{
        f"keras_cifar_resnet>{name}": "keras_cifar_resnet.network.initializers"
        for name in ("SeededVarianceScaling", "SeededUniform", "Constant")
    },
    **{
        name: "keras.layers"
        for name in (
            "InputLayer",
            "Rescaling",
            "Conv2D",
            "BatchNormalization",
            "ReLU",
            "MaxPooling2D",
            "Add",
            "GlobalAveragePooling2D",
            "Dense",
        )
    },
    **{
        name: "keras.initializers"
        for name in (
            "Constant",
            "GlorotNormal",
            "GlorotUniform",
            "HeNormal",
            "HeUniform",
            "Ones",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Zeros",
        )
    },
    "L2": "keras.regularizers",
    "DTypePolicy": "keras",
    "FloatDTypePolicy": "keras",
}
MODEL_CLASS = "keras_cifar_resnet>ResNet"
# Where the package's classes lived before it was split into subpackages:
# files saved then give these modules, and must still load.
FORMER_MODULES = {
    f"keras_cifar_resnet.{name}": f"keras_cifar_resnet.network.{name}"
    for name in ("batch_norm", "conv", "initializers")
}


def resolve_model_path(path):
    """The `.keras` file that `path` names: the file itself, or a run's folder's.

    A folder resolves to its first file of `RUN_MODEL_FILES`, else to its
    only `.keras` file.

    Raises:
        ModelFileError: nothing there, a folder without a model, a file that
            is not `.keras`, or not a regular file (usage errors).
    """
    path = Path(path)
    if path.is_dir():
        for name in RUN_MODEL_FILES:
            if os.path.lexists(path / name):
                # A run's own file: a link or a pipe there is not trusted.
                _check_run_file(path / name)
                return path / name
        candidates = sorted(
            child for child in path.glob("*.keras") if _is_own_file(child)
        )
        if len(candidates) == 1:
            return candidates[0]
        found = f"{len(candidates)} .keras files" if candidates else "no .keras file"
        raise ModelFileError(
            f"{path} is a folder with {found}; expected one of "
            f"{', '.join(RUN_MODEL_FILES)} or a single .keras file",
            usage=True,
        )
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}", usage=True)
    if not path.is_file():
        raise ModelFileError(
            f"{path} is not a regular file (a pipe or device?)", usage=True
        )
    if path.suffix != ".keras":
        raise ModelFileError(
            f"{path} is not a .keras file (Keras 3 saves models with "
            "`model.save('name.keras')`)",
            usage=True,
        )
    return path


def _is_own_file(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _check_run_file(path):
    if not _is_own_file(path):
        what = "a link" if os.path.islink(path) else "not a regular file"
        raise ModelFileError(
            f"{path} is {what}; a run's model files must be its own", usage=True
        )


def _class_key(entry):
    """The `ALLOWED_CLASSES` key of a serialized object, or None if it is split.

    Keras finds a class by `registered_name` but handles some `class_name`s
    itself (`__numpy__`, `function`...): both must name the same allowed
    class.
    """
    key = entry.get("registered_name") or entry.get("class_name")
    if not isinstance(key, str) or entry.get("class_name") != key.split(">")[-1]:
        return None
    return key


def _describe(entry, name):
    what = f"a {entry.get('class_name')!r} ({entry.get('module')})"
    return f"layer {name!r} is {what}" if name else f"the model holds {what}"


def check_classes(config, path):
    """Every object `config` names is in `ALLOWED_CLASSES`; the model a ResNet.

    Raises:
        ModelFileError: one line naming the first object refused.
    """
    if not isinstance(config, dict) or _class_key(config) != MODEL_CLASS:
        found = config.get("class_name") if isinstance(config, dict) else config
        raise ModelFileError(
            f"{path}: the model is a {found!r}, not this package's ResNet; "
            "only models this package makes are loaded"
        )

    def walk(value, owner):
        if isinstance(value, list):
            for item in value:
                walk(item, owner)
        elif isinstance(value, dict):
            if "class_name" in value:
                inner = value.get("config")
                if isinstance(inner, dict) and isinstance(inner.get("name"), str):
                    owner = inner["name"]
                module = FORMER_MODULES.get(value.get("module"), value.get("module"))
                if ALLOWED_CLASSES.get(_class_key(value)) != module:
                    raise ModelFileError(
                        f"{path}: refused: {_describe(value, owner)}; a model file "
                        "may hold only this package's ResNet and the layers it uses"
                    )
            for item in value.values():
                walk(item, owner)

    # Keras ignores the compile settings when loading for inference
    # (`compile=False`), so a compiled model's optimizer and loss may stay.
    walk({k: v for k, v in config.items() if k != "compile_config"}, None)


def _check_members(archive, path):
    """Only the expected members, each within its limit before inflating."""
    names = [info.filename for info in archive.infolist()]
    for name in (CONFIG_MEMBER, WEIGHTS_MEMBER):
        if name not in names:
            raise ModelFileError(f"{path}: the archive has no {name}")
    for info in archive.infolist():
        check_zip_member(info, path)
        if info.filename not in (*MEMBER_LIMITS, WEIGHTS_MEMBER):
            raise ModelFileError(
                f"{path}: unexpected member {info.filename!r} (a model file of "
                f"this package holds {CONFIG_MEMBER}, {METADATA_MEMBER} and "
                f"{WEIGHTS_MEMBER})"
            )
        limit = MEMBER_LIMITS.get(info.filename)
        if limit is not None and info.file_size > limit:
            raise ModelFileError(
                f"{path}: its {info.filename} inflates to {info.file_size:,} "
                f"bytes, above the limit of {limit:,}"
            )


def _read_weights(archive, path, parameters):
    """The weights member's bytes, within the size its parameters justify."""
    info = archive.getinfo(WEIGHTS_MEMBER)
    limit = WEIGHTS_BYTES_PER_PARAMETER * parameters + WEIGHTS_OVERHEAD_BYTES
    if info.file_size > limit:
        raise ModelFileError(
            f"{path}: its {WEIGHTS_MEMBER} inflates to {info.file_size:,} bytes, "
            f"above the {limit:,} that {parameters:,} parameters need"
        )
    return archive.read(WEIGHTS_MEMBER)


def check_weights(weights, path, parameters=None):
    """Every array in the HDF5 weights is floating-point and finite.

    With `parameters`, the datasets are first bounded by their metadata
    (`model_limits.check_weight_layout`), before any value is read.
    """
    import h5py

    problems = []

    def visit(name, item):
        if not isinstance(item, h5py.Dataset) or problems:
            return
        if item.dtype.kind != "f":
            problems.append(f"weight {name!r} is {item.dtype}, not floating-point")
        elif not np.isfinite(item[()]).all():
            problems.append(f"weight {name!r} holds NaN or infinite values")

    with h5py.File(io.BytesIO(weights), "r") as file:
        if parameters is not None:
            check_weight_layout(file, path, parameters)
        file.visititems(visit)
    if problems:
        raise ModelFileError(f"{path}: {problems[0]}")


def check_model_file(
    path, input_shape=CIFAR10_INPUT_SHAPE, num_classes=CIFAR10_CLASSES
):
    """Reads and checks a `.keras` archive without building anything.

    Args:
        path: str or Path, the `.keras` file.
        input_shape: tuple or None, the input the model must take. Defaults
            to CIFAR-10's (32, 32, 3); None accepts any within the limits.
        num_classes: int or None, the outputs it must have. Defaults to 10.

    Returns:
        dict, the parsed `config.json`.

    Raises:
        ModelFileError: one line saying what was refused.
    """
    path = Path(path)
    try:
        # Without blocking, checked from the open file: a pipe or device
        # (or a link to one) swapped in after `resolve_model_path` is refused.
        file = open_regular_file(path, follow_links=True)
    except RunFileError as error:
        raise ModelFileError(str(error)) from None
    with file:
        return _check_archive(file, path, input_shape, num_classes)


def _check_archive(file, path, input_shape, num_classes):
    if not zipfile.is_zipfile(file):
        # Keras reports a corrupt archive as "File not found"; say what it is.
        raise ModelFileError(
            f"{path} is not a valid .keras file (not a zip archive; "
            "corrupt or truncated?)"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            _check_members(archive, path)
            config = json.loads(archive.read(CONFIG_MEMBER))
            check_classes(config, path)
            parameters = check_declared_size(
                config.get("config") or {}, path, input_shape, num_classes
            )
            weights = _read_weights(archive, path, parameters)
            if METADATA_MEMBER in archive.namelist():
                archive.read(METADATA_MEMBER)  # its checksum
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ModelFileError(
            f"{path}: the archive is corrupt ({' '.join(str(error).split())})"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ModelFileError(
            f"{path}: its {CONFIG_MEMBER} is not valid JSON ({type(error).__name__})"
        ) from None
    try:
        check_weights(weights, path, parameters)
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - h5py's many errors: the file's
        raise ModelFileError(
            f"{path}: its {WEIGHTS_MEMBER} is not readable HDF5 "
            f"({type(error).__name__})"
        ) from None
    return config


@contextlib.contextmanager
def _private_temporary_folder():
    """Points `tempfile` at a folder of our own, removed afterwards.

    Whatever Keras extracts during a load that fails halfway goes with it.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="keras-cifar-resnet-load-") as folder:
        tempfile.tempdir = folder
        try:
            yield folder
        finally:
            tempfile.tempdir = previous


def load_model(path, input_shape=CIFAR10_INPUT_SHAPE, num_classes=CIFAR10_CLASSES):
    """Load a saved model (a `.keras` file or a run's folder) for inference.

    The file is checked first (`check_model_file`): only this package's
    ResNet, within the limits, taking `input_shape` and giving `num_classes`
    logits, with finite floating-point weights.

    Args:
        path: str or Path, a `.keras` file or a training run's output folder.
        input_shape: tuple or None, see `check_model_file`.
        num_classes: int or None, see `check_model_file`.

    Returns:
        (keras.Model, Path): the model and the file it came from.

    Raises:
        ModelFileError: with a one-line message, for a missing, misnamed,
            corrupt, refused or unloadable file.
    """
    model_path = resolve_model_path(path)
    check_model_file(model_path, input_shape, num_classes)
    import keras

    # Registers `keras_cifar_resnet>ResNet` so Keras can rebuild the model.
    import keras_cifar_resnet.models  # noqa: F401

    try:
        with _private_temporary_folder():
            model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    except Exception as error:  # noqa: BLE001 - any failure is the file's fault
        message = " ".join(str(error).split())[:300]
        raise ModelFileError(
            f"cannot load model {model_path}: {type(error).__name__}: {message}"
        ) from error
    return model, model_path
