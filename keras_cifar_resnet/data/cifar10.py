"""CIFAR-10: found in any official form, downloaded if need be, loaded safely.

`load_cifar10()` reads the python version (pickles) or the binary version of
CIFAR-10, as extracted folders or as the official `.tar.gz` archives, and
downloads the python archive into the Keras cache when it finds nothing.
Reading never runs code from the data: pickles go through an unpickler that
only rebuilds numpy arrays (`keras_cifar_resnet.data.files`), and archives
are read member by member in memory,
refusing any archive with a path that leaves it or a link. Every file is
checked (size, shape, label range) and any problem is one `DataError` naming
the file.

What happens to the arrays afterwards (the validation split, synthetic data,
the batches `fit` reads) is `keras_cifar_resnet.data.input_pipeline`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tarfile
import threading
import urllib.parse
from pathlib import Path, PurePosixPath

from keras_cifar_resnet.data.files import (  # noqa: F401 -- part of this API
    MAX_BATCH_BYTES,
    NUM_CLASSES,
    TEST_FILE,
    TRAIN_FILES,
    DataError,
    assemble,
    check_size,
    parse_binary_batch,
    parse_python_batch,
    unsafe_member_reason,
)

CLASS_NAMES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE = (32, 32, 3)

# Where the user can point the loader without an argument.
DATA_ENV_VAR = "KERAS_CIFAR_RESNET_DATA"

PYTHON_ARCHIVE_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
PYTHON_ARCHIVE_SHA256 = (
    "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
)
PYTHON_ARCHIVE = "cifar-10-python.tar.gz"
BINARY_ARCHIVE = "cifar-10-binary.tar.gz"
PYTHON_FOLDER = "cifar-10-batches-py"
BINARY_FOLDER = "cifar-10-batches-bin"

# The Keras cache layout of `keras.datasets.cifar10.load_data()`: Keras 3
# downloads to `<home>/datasets/cifar-10-batches-py-target_archive` and
# extracts into `cifar-10-batches-py-target/`; Keras 2 extracted straight
# into `cifar-10-batches-py/`. Downloads here use the Keras 3 names, so either
# loader finds what the other fetched.
_KERAS_ARCHIVE = "cifar-10-batches-py-target_archive"
_KERAS_FOLDER = "cifar-10-batches-py-target"

DEFAULT_DOWNLOAD_TIMEOUT = 20.0
# ---------------------------------------------------------- folders, archives


def _batch_file_names(version):
    suffix = ".bin" if version == "binary" else ""
    return {name: name + suffix for name in (*TRAIN_FILES, TEST_FILE)}


def _load_folder(folder, version):
    parse = parse_binary_batch if version == "binary" else parse_python_batch
    batches = {}
    # Every file is there and of a size CIFAR-10 can have before any is read.
    for file_name in _batch_file_names(version).values():
        path = folder / file_name
        if not path.is_file():
            raise DataError(
                f"{path}: missing; the CIFAR-10 folder {folder} is incomplete"
            )
        check_size(path.stat().st_size, version, path)
    for name, file_name in _batch_file_names(version).items():
        path = folder / file_name
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise DataError(f"{path}: cannot be read ({err.strerror})") from None
        batches[name] = parse(raw, path)
    return assemble(batches, folder)


def _read_archive(archive):
    """The CIFAR-10 batch files in a tar archive: (version, {file name: bytes}).

    Reads in one forward pass (a .tar.gz cannot seek back cheaply) and writes
    nothing; refuses the whole archive if any member is unsafe, so a tampered
    archive is reported rather than half-used.
    """
    members = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                reason = unsafe_member_reason(member)
                if reason:
                    raise DataError(f"{archive}: refused unsafe archive: {reason}")
                path = PurePosixPath(member.name)
                if (
                    member.isfile()
                    and len(path.parts) == 2
                    and path.parts[0]
                    in (
                        PYTHON_FOLDER,
                        BINARY_FOLDER,
                    )
                ):
                    version = "python" if path.parts[0] == PYTHON_FOLDER else "binary"
                    check_size(member.size, version, f"{archive}:{member.name}")
                    members[member.name] = tar.extractfile(member).read()
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as err:
        raise DataError(
            f"{archive}: not a readable tar archive; truncated or corrupt "
            f"({type(err).__name__}: {err})"
        ) from None
    for version, folder in (("python", PYTHON_FOLDER), ("binary", BINARY_FOLDER)):
        if f"{folder}/data_batch_1{'.bin' if version == 'binary' else ''}" in members:
            files = {
                file_name: members.get(f"{folder}/{file_name}")
                for file_name in _batch_file_names(version).values()
            }
            missing = [name for name, raw in files.items() if raw is None]
            if missing:
                raise DataError(f"{archive}: {folder}/{missing[0]} is missing")
            return version, files
    raise DataError(
        f"{archive}: no {PYTHON_FOLDER}/ or {BINARY_FOLDER}/ batch files inside; "
        "not a CIFAR-10 archive"
    )


def _load_archive(archive):
    version, files = _read_archive(archive)
    parse = parse_binary_batch if version == "binary" else parse_python_batch
    batches = {
        name: parse(files[file_name], f"{archive}:{file_name}")
        for name, file_name in _batch_file_names(version).items()
    }
    return assemble(batches, archive)


def _find_form(path):
    """(form, path) of the CIFAR-10 in `path`, or None where there is none.

    `form` is "python" or "binary" (an extracted folder) or "archive".
    """
    if path.is_file():
        return "archive", path
    if not path.is_dir():
        return None
    if (path / "data_batch_1").is_file():
        return "python", path
    if (path / "data_batch_1.bin").is_file():
        return "binary", path
    # Extracted folders first (no decompression), the binary one first (no
    # unpickling); then the archives.
    for name, form in ((BINARY_FOLDER, "binary"), (PYTHON_FOLDER, "python")):
        if (
            path / name / f"data_batch_1{'.bin' if form == 'binary' else ''}"
        ).is_file():
            return form, path / name
    for name in (BINARY_ARCHIVE, PYTHON_ARCHIVE):
        if (path / name).is_file():
            return "archive", path / name
    return None


def _load_path(path, origin):
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: does not exist (given as {origin})")
    found = _find_form(path)
    if found is None:
        raise DataError(
            f"{path}: no CIFAR-10 here (given as {origin}); expected the extracted "
            f"{PYTHON_FOLDER}/ or {BINARY_FOLDER}/ folder, {PYTHON_ARCHIVE} or "
            f"{BINARY_ARCHIVE}, or a folder holding one of them"
        )
    form, path = found
    if form == "archive":
        return _load_archive(path)
    return _load_folder(path, form)


# --------------------------------------------------------------- Keras cache


def keras_datasets_dir():
    """The folder where `keras.datasets` and `keras.utils.get_file` cache data.

    `$KERAS_HOME/datasets`, else `~/.keras/datasets` (Keras's own rule, read
    here from the environment because Keras keeps its accessor private).
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home).expanduser() / "datasets"


def _cached_folder(datasets):
    for folder in (datasets / _KERAS_FOLDER / PYTHON_FOLDER, datasets / PYTHON_FOLDER):
        if (folder / "data_batch_1").is_file():
            return folder
    return None


def _where_to_put_files(datasets):
    return (
        f"put {PYTHON_ARCHIVE} or {BINARY_ARCHIVE} (or its extracted {PYTHON_FOLDER}/ "
        f"or {BINARY_FOLDER}/ folder) in a folder and pass that folder with "
        "--data-dir (`data_dir=` in Python) "
        f"or set {DATA_ENV_VAR} to it, or extract {PYTHON_ARCHIVE} in "
        f"{datasets} (making {datasets / PYTHON_FOLDER}/, where it is looked for)"
    )


def _resolve_host(url, timeout):
    """Looks the host up in a daemon thread, so a dead resolver cannot hang us."""
    host = urllib.parse.urlsplit(url).hostname
    outcome = {}

    def resolve():
        try:
            socket.getaddrinfo(host, None)
            outcome["ok"] = True
        except OSError as err:
            outcome["error"] = err

    thread = threading.Thread(target=resolve, daemon=True)
    thread.start()
    thread.join(timeout)
    if "ok" in outcome:
        return None
    if "error" in outcome:
        return f"cannot resolve {host}: {outcome['error']}"
    return f"no answer resolving {host} within {timeout:g} s"


def _download(datasets, url, timeout):
    """Downloads and extracts the python archive into the Keras cache.

    Returns the extracted `cifar-10-batches-py` folder. On any failure nothing
    is left that looks like good data: Keras removes a partial download, this
    removes a file with the wrong hash, and the folder appears only complete
    (extracted beside it, then renamed).
    """
    created = [folder for folder in (datasets.parent, datasets) if not folder.exists()]
    archive = datasets / _KERAS_ARCHIVE
    try:
        # Keras falls back to /tmp/.keras for a cache folder that does not
        # exist yet (it checks write access); create it so the data lands here.
        datasets.mkdir(parents=True, exist_ok=True)
        if not archive.is_file():
            reason = _resolve_host(url, timeout)
            if reason:
                raise DataError(f"could not download CIFAR-10 from {url}: {reason}")
        previous_timeout = socket.getdefaulttimeout()
        # urllib's sockets take this default: it bounds the connection and
        # every read, so a silent network fails in seconds, not minutes.
        socket.setdefaulttimeout(timeout)
        try:
            import keras  # only to download: reading needs no Keras

            path = keras.utils.get_file(
                fname=_KERAS_ARCHIVE,
                origin=url,
                file_hash=PYTHON_ARCHIVE_SHA256,
                hash_algorithm="sha256",
                cache_dir=str(datasets.parent),
                cache_subdir=datasets.name,
            )
        except Exception as err:  # noqa: BLE001 -- Keras raises a bare Exception
            reason = str(err).rstrip(".") or type(err).__name__
            raise DataError(
                f"could not download CIFAR-10 from {url}: {reason}"
            ) from None
        finally:
            socket.setdefaulttimeout(previous_timeout)
        archive = Path(path)
        version, files = _read_archive(archive)
        if version != "python":
            raise DataError(f"{archive}: expected the python version of CIFAR-10")
        target = archive.parent / _KERAS_FOLDER
        staging = archive.parent / f".{_KERAS_FOLDER}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            (staging / PYTHON_FOLDER).mkdir(parents=True)
            for file_name, raw in files.items():
                (staging / PYTHON_FOLDER / file_name).write_bytes(raw)
            if target.exists():
                # Left by an interrupted Keras extraction: ours is complete.
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target / PYTHON_FOLDER
    except (DataError, OSError) as err:
        if isinstance(err, OSError):
            err = f"cannot write CIFAR-10 into the Keras cache {datasets}: {err}"
        if archive.is_file() and not _has_official_hash(archive):
            archive.unlink()
        for folder in reversed(created):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise DataError(f"{err}; {_where_to_put_files(datasets)}") from None


def _has_official_hash(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == PYTHON_ARCHIVE_SHA256


# ----------------------------------------------------------------- public API


def data_source(data_dir=None):
    """Where `load_cifar10(data_dir)` reads CIFAR-10 from, for a run's records.

    Follows `load_cifar10`'s order without reading anything, so a run's
    `config.json` says where its data came from even when `data_dir` was
    not given.

    Returns:
        dict: `path` (str, absolute) and `given_as`: `"data_dir"`,
        `"KERAS_CIFAR_RESNET_DATA"`, `"keras cache"` or `"download"` (not
        fetched yet; the path is where it will go).
    """
    if data_dir is not None:
        return {
            "path": str(Path(data_dir).expanduser().resolve()),
            "given_as": "data_dir",
        }
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return {
            "path": str(Path(from_env).expanduser().resolve()),
            "given_as": DATA_ENV_VAR,
        }
    datasets = keras_datasets_dir()
    folder = _cached_folder(datasets)
    if folder is not None:
        return {"path": str(folder.resolve()), "given_as": "keras cache"}
    return {
        "path": str(datasets / _KERAS_FOLDER / PYTHON_FOLDER),
        "given_as": "download",
    }


def load_cifar10(data_dir=None, *, download=True, timeout=DEFAULT_DOWNLOAD_TIMEOUT):
    """Loads CIFAR-10 from wherever it is, downloading it as a last resort.

    Looks, in this order, at `data_dir`; the folder or archive named by the
    environment variable `KERAS_CIFAR_RESNET_DATA`; the Keras cache (where
    `keras.datasets.cifar10.load_data()` leaves the data, under `$KERAS_HOME`
    or `~/.keras`); and otherwise downloads the official python-version archive
    into that cache with `keras.utils.get_file`, checking its SHA-256.

    `data_dir` (or the variable) may name the extracted `cifar-10-batches-py/`
    or `cifar-10-batches-bin/` folder, the `cifar-10-python.tar.gz` or
    `cifar-10-binary.tar.gz` archive, or a folder holding any of them.

    Args:
        data_dir: str or path, or None. Defaults to None.
        download: bool, whether to download when nothing is found. Defaults to
            True.
        timeout: float, seconds each network operation (name lookup,
            connection, each read) may take before the download fails.
            Defaults to 20.

    Returns:
        `((x_train, y_train), (x_test, y_test))`: uint8 images of shape
        (N, 32, 32, 3) (channels last, whatever Keras's image data format) and
        int64 labels of shape (N,); 50,000 training and 10,000 test images.

    Raises:
        DataError: data missing, unreadable, truncated, of the wrong shape or
            label range, unsafe (a pickle naming code, an archive member
            leaving the archive), or not downloadable. The message names the
            file and the problem in one line.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = load_cifar10("~/data/cifar-10-batches-bin")
    ```
    """
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or timeout <= 0
    ):
        raise ValueError(f"`timeout` must be a number > 0. Received: {timeout=!r}")
    if data_dir is not None:
        return _load_path(data_dir, "data_dir")
    from_env = os.environ.get(DATA_ENV_VAR)
    if from_env:
        return _load_path(from_env, f"{DATA_ENV_VAR}={from_env}")
    datasets = keras_datasets_dir()
    folder = _cached_folder(datasets)
    if folder is not None:
        return _load_folder(folder, "python")
    if not download:
        raise DataError(f"CIFAR-10 not found; {_where_to_put_files(datasets)}")
    return _load_folder(_download(datasets, PYTHON_ARCHIVE_URL, timeout), "python")
