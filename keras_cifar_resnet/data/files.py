"""Reading CIFAR-10's batch files without trusting them: pickles and binary records.

Pickles go through an unpickler that only rebuilds numpy arrays; every
batch is checked (size, shape, label range). Any problem is one `DataError`
naming the file. Finding the files, archives included, is
`keras_cifar_resnet.data.cifar10`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import PurePosixPath

import numpy as np

NUM_CLASSES = 10
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
_IMAGE_BYTES = 32 * 32 * 3
_RECORD_BYTES = 1 + _IMAGE_BYTES  # binary version: label byte, then CHW pixels


class DataError(Exception):
    """Missing, unreadable, corrupt or unsafe data; the message names the file."""


# ---------------------------------------------------------------- unpickling


def _latin1_bytes(text, encoding="latin1"):
    """`_codecs.encode` as Python 3 uses it for bytes at protocol 2: latin-1 only.

    Any other codec (zlib, base64...) is refused: an honest file needs none.
    """
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(
            f"refused `_codecs.encode` with codec {encoding!r}: a CIFAR-10 pickle "
            "needs latin1 only, so the file is corrupt or malicious"
        )
    return text.encode("latin1")


# The official pickles were written by Python 2 with numpy 1, and rebuild
# their arrays through these globals (numpy 2 renamed `numpy.core` to
# `numpy._core`; protocol 5 pickles use `_frombuffer`). The functions come
# from numpy's own reducers, not from its private modules.
_RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]
_FROMBUFFER = np.arange(1).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    # Python 3 pickles bytes at protocol 2 (an array's raw data among them)
    # as `_codecs.encode(text, "latin1")`.
    ("_codecs", "encode"): _latin1_bytes,
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, and refuses any other global.

    A pickle runs code only through the globals it names (a `__reduce__`
    calling `os.system`, say); with every global outside numpy's array
    reconstruction refused, loading the file cannot run anything.
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load `{module}.{name}`: a CIFAR-10 pickle holds only "
                "numpy arrays, so the file is corrupt or malicious"
            ) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused a persistent reference")


def _unpickle(raw, where):
    try:
        # encoding="bytes": Python 2's str keys and values load as bytes.
        return _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise DataError(f"{where}: {err}") from None
    except EOFError:
        raise DataError(
            f"{where}: the pickle ends early; the file is truncated"
        ) from None
    except Exception as err:  # noqa: BLE001 -- any other failure means a bad file
        raise DataError(
            f"{where}: not a readable CIFAR-10 pickle ({type(err).__name__}: {err})"
        ) from None


# ------------------------------------------------------------ batch parsing


def parse_python_batch(raw, where):
    """(images NHWC uint8, labels int64) from one python-version batch file."""
    batch = _unpickle(raw, where)
    if not isinstance(batch, dict):
        raise DataError(
            f"{where}: expected a dict of 'data' and 'labels', found a "
            f"{type(batch).__name__}"
        )
    batch = {
        k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()
    }
    if "data" not in batch or "labels" not in batch:
        hint = " (CIFAR-100 has 'fine_labels')" if "fine_labels" in batch else ""
        raise DataError(
            f"{where}: expected keys 'data' and 'labels', found "
            f"{sorted(map(str, batch))}{hint}"
        )
    data = batch["data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != _IMAGE_BYTES
        or data.shape[0] == 0
    ):
        described = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(
            f"{where}: 'data' must be a uint8 array of shape (N, {_IMAGE_BYTES}), "
            f"found a {described}"
        )
    try:
        labels = np.asarray(batch["labels"])
    except Exception:  # noqa: BLE001
        labels = np.asarray([])
    if labels.shape != (data.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{where}: 'labels' must be {data.shape[0]} integers, one per image, found "
            f"{labels.dtype} of shape {labels.shape}"
        )
    return _channels_last(data), _checked_labels(labels, where)


def parse_binary_batch(raw, where):
    """(images NHWC uint8, labels int64) from one binary-version batch file."""
    if len(raw) == 0 or len(raw) % _RECORD_BYTES:
        raise DataError(
            f"{where}: {len(raw)} bytes is not a whole number of {_RECORD_BYTES}-byte "
            "records (1 label byte + 3072 pixel bytes); the file is truncated or "
            "not CIFAR-10"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD_BYTES)
    return _channels_last(records[:, 1:]), _checked_labels(records[:, 0], where)


def _channels_last(rows):
    # Both versions store each image as 1024 red, 1024 green, 1024 blue bytes.
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _checked_labels(labels, where):
    labels = labels.astype(np.int64)
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(
            f"{where}: label {labels[bad[0]]} of image {bad[0]} is outside 0-"
            f"{NUM_CLASSES - 1}"
        )
    return labels


def assemble(batches, where):
    """Training and test sets from the six parsed batch files, checked for agreement.

    The official files hold 10,000 images each; smaller files are accepted when
    all six agree, so that a file cut short at a record boundary still shows.
    """
    counts = {name: len(images) for name, (images, _) in batches.items()}
    if len(set(counts.values())) != 1:
        expected = max(counts.values())
        short = [name for name, count in counts.items() if count != expected]
        raise DataError(
            f"{where}: {short[0]} holds {counts[short[0]]} images but the other "
            f"batches hold {expected}; the file is truncated or from another dataset"
        )
    x_train = np.concatenate([batches[name][0] for name in TRAIN_FILES])
    y_train = np.concatenate([batches[name][1] for name in TRAIN_FILES])
    x_test, y_test = batches[TEST_FILE]
    return (x_train, y_train), (x_test, y_test)


# The most bytes a CIFAR-10 batch file holds, checked before it is read: the
# binary version's 10,000 records exactly; a python-version pickle holds the
# same pixels, at most twice over (protocol 2 spells bytes as latin-1 text),
# and its labels and names.
MAX_BATCH_BYTES = {
    "binary": 10_000 * _RECORD_BYTES,
    "python": 2 * 10_000 * _IMAGE_BYTES + 2**20,
}


def check_size(size, version, where):
    """Refuses a batch file larger than CIFAR-10's before it is read."""
    limit = MAX_BATCH_BYTES[version]
    if size > limit:
        exactly = " (10,000 records of 3,073 bytes)" if version == "binary" else ""
        raise DataError(
            f"{where}: {size:,} bytes, more than a CIFAR-10 batch file holds "
            f"({limit:,}{exactly}); not CIFAR-10"
        )


def unsafe_member_reason(member):
    """Why an archive member could write or point outside the archive, or None."""
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        return f"its path {member.name!r} leaves the extraction folder"
    if member.issym() or member.islnk():
        return f"{member.name!r} is a link (to {member.linkname!r})"
    if not (member.isfile() or member.isdir()):
        return f"{member.name!r} is a device or other special file"
    return None
