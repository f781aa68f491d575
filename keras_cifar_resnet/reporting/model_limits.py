"""The bounds a `.keras` file must keep before any of it is inflated or built.

What a model file declares must also be what it costs: its zip members
are stored by a method this package reads and unencrypted; its ResNet
config has sensible structural fields (no stride of 0, no float that
overflows); its HDF5 weights are exactly the values that config declares,
float arrays stored plainly (no compression filter that inflates a few KB
into gigabytes, no external file that a read would wait on). Each check
raises `ModelFileError` with one line naming the member, field or dataset.
`model_files.check_model_file` runs them in that order. Keras-free.
"""

from __future__ import annotations

import math
import zipfile

from keras_cifar_resnet.errors import ModelFileError
from keras_cifar_resnet.resources import (
    ResourceError,
    check_memory,
    inference_bytes,
    resnet_size,
)

# Methods `zipfile` inflates; anything else is not a file Keras wrote.
ZIP_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# The ResNet fields that shape the network: each a positive int (a list of
# one per stage for the `stackwise_` ones).
STAGE_FIELDS = ("stackwise_num_blocks", "stackwise_num_filters", "stackwise_strides")
INT_FIELDS = ("stem_filters",)
# ResNet34 at twice the width has 85 million; 1 GB of float32.
MAX_PARAMETERS = 250_000_000
# Height times width of the declared input.
MAX_INPUT_PIXELS = 1024 * 1024
CIFAR10_INPUT_SHAPE = (32, 32, 3)
CIFAR10_CLASSES = 10


def _error(message):
    return ModelFileError(message)


def check_zip_member(info, path):
    """Refuses a zip member that is encrypted or stored by an unknown method."""
    if info.flag_bits & 0x1:
        raise _error(
            f"{path}: member {info.filename!r} is encrypted; a model file of this "
            "package is not"
        )
    if info.compress_type not in ZIP_METHODS:
        raise _error(
            f"{path}: member {info.filename!r} uses compression method "
            f"{info.compress_type}, not one of "
            f"{', '.join(ZIP_METHODS.values())}"
        )


def _positive_int(value):
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_structure(config, path):
    """Refuses structural fields of a ResNet config that would break its size.

    Missing fields take `ResNet`'s defaults (checked there).

    Args:
        config: dict, the ResNet's constructor arguments from `config.json`.
        path: Path, for the messages.
    """
    if not isinstance(config, dict):
        raise _error(f"{path}: its ResNet config is a {type(config).__name__}")
    stages = None
    for field in STAGE_FIELDS:
        if field not in config:
            continue
        value = config[field]
        if not isinstance(value, list | tuple) or not value:
            raise _error(
                f"{path}: its config's {field} is {value!r}, not a list of "
                "positive ints"
            )
        for index, item in enumerate(value):
            if not _positive_int(item):
                raise _error(
                    f"{path}: its config's {field}[{index}] is {item!r}, not a "
                    "positive int"
                )
        if stages is not None and len(value) != stages:
            raise _error(
                f"{path}: its config's {field} has {len(value)} entries for "
                f"{stages} stages"
            )
        stages = len(value)
    for field in INT_FIELDS:
        if field in config and not _positive_int(config[field]):
            raise _error(
                f"{path}: its config's {field} is {config[field]!r}, not a positive int"
            )
    if "num_classes" in config and not (
        _positive_int(config["num_classes"]) and config["num_classes"] >= 2
    ):
        raise _error(
            f"{path}: its config's num_classes is {config['num_classes']!r}, not "
            "an int >= 2"
        )
    if "width_multiplier" in config:
        value = config["width_multiplier"]
        if not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            raise _error(
                f"{path}: its config's width_multiplier is {value!r}, not a "
                "finite number > 0"
            )


def check_weight_layout(file, path, parameters):
    """Refuses HDF5 weights that are not exactly `parameters` plain float values.

    Looks at each dataset's metadata only, before any value is read: its
    dtype (float, 8 bytes at most), its layout (contiguous, chunked or
    compact; not virtual), no filters (compression, shuffle...) and no
    external storage. The values of all datasets together must number the
    parameters the config declares, so nothing extra rides along.

    Args:
        file: an open `h5py.File`.
        path: Path, the model file, for the messages.
        parameters: int, the values the config declares.
    """
    import h5py

    plain_layouts = (h5py.h5d.CONTIGUOUS, h5py.h5d.CHUNKED, h5py.h5d.COMPACT)
    datasets = []
    file.visititems(
        lambda name, item: (
            datasets.append((name, item)) if isinstance(item, h5py.Dataset) else None
        )
    )
    total = 0
    for name, dataset in datasets:
        where = f"{path}: weight {name!r}"
        plist = dataset.id.get_create_plist()
        if plist.get_external_count():
            raise _error(f"{where} is stored in an external file")
        if plist.get_layout() not in plain_layouts:
            raise _error(f"{where} is a virtual dataset, not stored in the file")
        if plist.get_nfilters():
            raise _error(
                f"{where} is stored through a filter (compression); a model "
                "file of this package stores its weights plainly"
            )
        if dataset.dtype.kind != "f" or dataset.dtype.itemsize > 8:
            raise _error(f"{where} is {dataset.dtype}, not floating-point")
        total += dataset.size
        if total > parameters:
            break
    if total != parameters:
        raise _error(
            f"{path}: its weights hold {total:,}{'+' if total > parameters else ''} "
            f"values; the config declares {parameters:,} parameters"
        )


def check_declared_size(config, path, input_shape, num_classes):
    """The ResNet's declared size is within limits and fits the caller.

    Args:
        config: dict, the ResNet's constructor arguments from `config.json`.
        path: Path, for the messages.
        input_shape: tuple or None, the (height, width, channels) required.
        num_classes: int or None, the number of outputs required.

    Returns:
        int, the parameters it declares.
    """
    if "graph" in config:  # a clone, or a backbone under a new head
        return _check_graph_size(config["graph"], path, input_shape, num_classes)
    check_structure(config, path)
    raw_shape = config.get("input_shape", CIFAR10_INPUT_SHAPE)
    if not (
        isinstance(raw_shape, list | tuple)
        and len(raw_shape) == 3
        and all(isinstance(n, int) and n > 0 for n in raw_shape)
    ):
        needs = (
            ""
            if input_shape is None
            else f"; this command needs {'x'.join(map(str, input_shape))}"
        )
        raise ModelFileError(
            f"{path}: the model takes images of input_shape {raw_shape!r}, not "
            f"a fixed height, width and channels{needs}"
        )
    try:
        parameters, _, _ = resnet_size(config)
        declared_shape = tuple(raw_shape)
        declared_classes = int(config.get("num_classes", CIFAR10_CLASSES))
    except (KeyError, TypeError, ValueError, OverflowError) as error:
        raise ModelFileError(
            f"{path}: its ResNet config is not valid ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:120]})"
        ) from None
    _check_fit(path, declared_shape, input_shape, parameters)
    if num_classes is not None and declared_classes != num_classes:
        raise ModelFileError(
            f"{path}: the model has {declared_classes} classes; this command "
            f"needs {num_classes} (CIFAR-10)"
        )
    try:
        check_memory(inference_bytes(config, batch_size=1), f"loading {path}")
    except ResourceError as error:
        raise ModelFileError(str(error)) from None
    return parameters


def graph_parameters(graph):
    """The parameters a `ResNet` graph's layers declare, from their configs.

    A clone or a backbone under a new head is saved as Keras's graph (its
    layers, each with the input shape it was built for) instead of the
    architecture's arguments: convolutions, dense layers and BatchNorm
    hold all of its weights.
    """
    total = 0
    for layer in graph["layers"]:
        config = layer["config"]
        shape = (layer.get("build_config") or {}).get("input_shape")
        if not {"filters", "units", "momentum"} & set(config):
            continue
        channels = shape[-1]
        if not _positive_int(channels):
            raise ValueError(f"layer {config.get('name')!r} has no built input")
        if "filters" in config:
            size = math.prod(config["kernel_size"]) * channels * config["filters"]
            total += size + (config["filters"] if config.get("use_bias") else 0)
        elif "units" in config:
            total += channels * config["units"] + (
                config["units"] if config.get("use_bias") else 0
            )
        else:  # BatchNormalization: scale and offset, mean and variance
            total += channels * (
                2 + bool(config.get("center")) + bool(config.get("scale"))
            )
    return total


def _first_name(nodes):
    """The layer name of a graph's first input or output: `[name, 0, 0]`, or
    a list of such."""
    return nodes[0] if isinstance(nodes[0], str) else nodes[0][0]


def _check_graph_size(graph, path, input_shape, num_classes):
    """`check_declared_size` for a model saved as a graph; returns its parameters."""
    try:
        layers = {layer["config"]["name"]: layer for layer in graph["layers"]}
        declared_shape = tuple(
            layers[_first_name(graph["input_layers"])]["config"]["batch_shape"][1:]
        )
        output = layers[_first_name(graph["output_layers"])]["config"]
        parameters = graph_parameters(graph)
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:
        raise ModelFileError(
            f"{path}: its graph config is not valid ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:120]})"
        ) from None
    if not (len(declared_shape) == 3 and all(map(_positive_int, declared_shape))):
        raise ModelFileError(f"{path}: the model takes images of {declared_shape}")
    _check_fit(path, declared_shape, input_shape, parameters)
    classes = output.get("units")
    if num_classes is not None and classes != num_classes:
        raise ModelFileError(
            f"{path}: the model has {classes or 'no class'} outputs ("
            f"{output.get('name')!r}); this command needs {num_classes} (CIFAR-10)"
        )
    return parameters


def _check_fit(path, declared_shape, input_shape, parameters):
    """The declared input within limits and the caller's; the parameters too."""
    if declared_shape[0] * declared_shape[1] > MAX_INPUT_PIXELS:
        raise ModelFileError(
            f"{path}: declares an input of {declared_shape[0]}x{declared_shape[1]} "
            f"pixels, above the limit of {MAX_INPUT_PIXELS:,}"
        )
    if input_shape is not None and declared_shape != tuple(input_shape):
        raise ModelFileError(
            f"{path}: the model takes {'x'.join(map(str, declared_shape))} "
            f"images; this command needs {'x'.join(map(str, input_shape))}"
        )
    if parameters > MAX_PARAMETERS:
        raise ModelFileError(
            f"{path}: declares {parameters:,} parameters, above the limit of "
            f"{MAX_PARAMETERS:,}"
        )
