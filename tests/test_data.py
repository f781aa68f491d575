"""CIFAR-10 loading in every official form, refusals, the split, and the batches."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import time

import keras
import numpy as np
import pytest

from keras_cifar_resnet.data import cifar10 as data, input_checks
from keras_cifar_resnet.data.cifar10 import CLASS_NAMES, DataError, load_cifar10
from keras_cifar_resnet.data.input_pipeline import (
    SkipBatches,
    TrainingBatches,
    fit_input,
    split_validation,
    synthetic_cifar10,
)
from tests.backend_subprocess import run_under_backend

IMAGES_PER_FILE = 12
FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


# ------------------------------------------------------------ fake CIFAR-10


def _fake_batches(seed=0):
    """{file name: (NHWC uint8 images, labels)} for the six batch files."""
    rng = np.random.default_rng(seed)
    return {
        name: (
            rng.integers(0, 256, (IMAGES_PER_FILE, 32, 32, 3), dtype=np.uint8),
            rng.integers(0, 10, IMAGES_PER_FILE),
        )
        for name in FILES
    }


def _expected(batches):
    train = [batches[name] for name in FILES[:5]]
    return (
        (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
        batches["test_batch"],
    )


def _rows(images):
    # Both official versions store each image as its R, G, B planes in turn.
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _python_pickle(images, labels):
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(label) for label in labels],
        b"data": _rows(images),
        b"filenames": [b"image_%d.png" % i for i in range(len(images))],
    }
    raw = pickle.dumps(batch, protocol=3)
    # The official files were written with numpy 1, whose arrays name
    # `numpy.core.multiarray`; write that spelling, as they do.
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def _binary_records(images, labels):
    records = np.concatenate(
        [np.asarray(labels, np.uint8)[:, None], _rows(images)], axis=1
    )
    return records.tobytes()


def _write_folder(root, version, batches):
    folder = root / (data.PYTHON_FOLDER if version == "python" else data.BINARY_FOLDER)
    folder.mkdir(parents=True)
    for name, (images, labels) in batches.items():
        if version == "python":
            (folder / name).write_bytes(_python_pickle(images, labels))
        else:
            (folder / f"{name}.bin").write_bytes(_binary_records(images, labels))
    (folder / "readme.html").write_text("<p>CIFAR-10</p>")
    return folder


def _write_archive(path, folder):
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def _assert_loaded(loaded, batches):
    (x_train, y_train), (x_test, y_test) = loaded
    (want_x_train, want_y_train), (want_x_test, want_y_test) = _expected(batches)
    assert x_train.dtype == np.uint8 and x_train.shape == (
        5 * IMAGES_PER_FILE,
        32,
        32,
        3,
    )
    assert y_train.dtype == np.int64 and y_train.shape == (5 * IMAGES_PER_FILE,)
    np.testing.assert_array_equal(x_train, want_x_train)
    np.testing.assert_array_equal(y_train, want_y_train)
    np.testing.assert_array_equal(x_test, want_x_test)
    np.testing.assert_array_equal(y_test, want_y_test)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test sees the real data or cache, or reaches the network."""
    monkeypatch.delenv(data.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setattr(
        data, "PYTHON_ARCHIVE_URL", f"http://127.0.0.1:{_closed_port()}/x"
    )


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------- every official form


@pytest.mark.parametrize("version", ["python", "binary"])
@pytest.mark.parametrize(
    "given", ["folder", "parent of folder", "archive", "parent of archive"]
)
def test_loads_every_official_form(tmp_path, version, given):
    batches = _fake_batches()
    folder = _write_folder(tmp_path / "extracted", version, batches)
    archive_name = data.PYTHON_ARCHIVE if version == "python" else data.BINARY_ARCHIVE
    (tmp_path / "archives").mkdir()
    archive = _write_archive(tmp_path / "archives" / archive_name, folder)
    path = {
        "folder": folder,
        "parent of folder": folder.parent,
        "archive": archive,
        "parent of archive": tmp_path / "archives",
    }[given]
    _assert_loaded(load_cifar10(path), batches)


def test_archive_under_another_name_is_recognised_by_content(tmp_path):
    # Keras caches the python archive as `cifar-10-batches-py-target_archive`.
    batches = _fake_batches()
    folder = _write_folder(tmp_path / "x", "python", batches)
    archive = _write_archive(tmp_path / "cifar-10-batches-py-target_archive", folder)
    _assert_loaded(load_cifar10(str(archive)), batches)


def test_class_names():
    assert CLASS_NAMES[0] == "airplane" and CLASS_NAMES[9] == "truck"
    assert len(set(CLASS_NAMES)) == 10


# ------------------------------------------------------------------ refusals


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(tmp_path):
    folder = _write_folder(tmp_path, "python", _fake_batches())
    marker = tmp_path / "code_ran"
    (folder / "data_batch_2").write_bytes(
        pickle.dumps({b"data": _RunsCode(marker), b"labels": []}, protocol=3)
    )
    with pytest.raises(DataError, match=r"data_batch_2: refused to load `(posix|os)"):
        load_cifar10(folder)
    assert not marker.exists()


def test_malicious_pickle_inside_archive_is_refused(tmp_path):
    folder = _write_folder(tmp_path / "x", "python", _fake_batches())
    marker = tmp_path / "code_ran"
    (folder / "test_batch").write_bytes(pickle.dumps(_RunsCode(marker)))
    archive = _write_archive(tmp_path / data.PYTHON_ARCHIVE, folder)
    with pytest.raises(DataError, match=r"tar.gz:test_batch: refused to load"):
        load_cifar10(archive)
    assert not marker.exists()


@pytest.mark.parametrize("version", ["python", "binary"])
def test_truncated_file_is_refused(tmp_path, version):
    folder = _write_folder(tmp_path, version, _fake_batches())
    path = folder / ("data_batch_3" if version == "python" else "data_batch_3.bin")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(DataError, match="data_batch_3.*truncated") as error:
        load_cifar10(folder)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_file_cut_at_a_record_boundary_is_refused(tmp_path):
    folder = _write_folder(tmp_path, "binary", _fake_batches())
    path = folder / "data_batch_4.bin"
    path.write_bytes(path.read_bytes()[: 3 * 3073])
    with pytest.raises(DataError, match="data_batch_4 holds 3 images but the other"):
        load_cifar10(folder)


def test_label_out_of_range_is_refused(tmp_path):
    batches = _fake_batches()
    images, labels = batches["test_batch"]
    labels[5] = 10
    folder = _write_folder(tmp_path, "binary", batches)
    with pytest.raises(
        DataError, match="test_batch.bin: label 10 of image 5 is outside"
    ):
        load_cifar10(folder)


def test_wrong_pickle_content_is_refused(tmp_path):
    folder = _write_folder(tmp_path, "python", _fake_batches())
    (folder / "data_batch_1").write_bytes(
        pickle.dumps({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4})
    )
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be .*\(4, 100\)"):
        load_cifar10(folder)


def test_missing_file_is_named(tmp_path):
    folder = _write_folder(tmp_path, "binary", _fake_batches())
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DataError, match="test_batch.bin: missing"):
        load_cifar10(folder)


def test_nothing_there_says_what_is_expected(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_cifar10(tmp_path / "nowhere")
    with pytest.raises(DataError, match="no CIFAR-10 here.*cifar-10-batches-bin"):
        load_cifar10(tmp_path)


def _archive_with(path, member, content=b"x"):
    folder = _write_folder(path.parent / "good", "binary", _fake_batches())
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
        tar.addfile(member, io.BytesIO(content) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    "member, reason",
    [
        (tarfile.TarInfo("../escaped"), "leaves the extraction folder"),
        (tarfile.TarInfo("/etc/escaped"), "leaves the extraction folder"),
        (
            tarfile.TarInfo("cifar-10-batches-bin/../../escaped"),
            "leaves the extraction folder",
        ),
        (tarfile.TarInfo("cifar-10-batches-bin/link"), "is a link"),
    ],
)
def test_archive_with_unsafe_member_is_refused(tmp_path, member, reason):
    if member.name.endswith("link"):
        member.type, member.linkname = tarfile.SYMTYPE, "/etc/passwd"
    else:
        member.size = 1
    archive = _archive_with(tmp_path / "archive" / data.BINARY_ARCHIVE, member)
    with pytest.raises(DataError, match=f"refused unsafe archive: .*{reason}"):
        load_cifar10(archive)
    assert not (tmp_path / "escaped").exists()


def test_truncated_archive_is_refused(tmp_path):
    folder = _write_folder(tmp_path / "x", "binary", _fake_batches())
    archive = _write_archive(tmp_path / data.BINARY_ARCHIVE, folder)
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(DataError, match="cifar-10-binary.tar.gz: .*truncated"):
        load_cifar10(archive)


# ------------------------------------------------- search order and download


def _keras_cache_folder(keras_home):
    return keras_home / "datasets" / "cifar-10-batches-py-target"


def test_environment_variable_is_used(tmp_path, monkeypatch):
    batches = _fake_batches(seed=1)
    folder = _write_folder(tmp_path / "env", "binary", batches)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(folder))
    _assert_loaded(load_cifar10(), batches)


def test_search_order(tmp_path, monkeypatch):
    explicit, from_env, cached = _fake_batches(1), _fake_batches(2), _fake_batches(3)
    explicit_folder = _write_folder(tmp_path / "explicit", "binary", explicit)
    env_folder = _write_folder(tmp_path / "env", "python", from_env)
    _write_folder(_keras_cache_folder(tmp_path / "keras_home"), "python", cached)

    # The Keras cache, found without any network (the URL is a closed port).
    _assert_loaded(load_cifar10(), cached)
    monkeypatch.setenv(data.DATA_ENV_VAR, str(env_folder))
    _assert_loaded(load_cifar10(), from_env)
    _assert_loaded(load_cifar10(explicit_folder), explicit)
    # A variable naming nothing is an error, not a silent fall-through.
    monkeypatch.setenv(data.DATA_ENV_VAR, str(tmp_path / "typo"))
    with pytest.raises(DataError, match=f"given as {data.DATA_ENV_VAR}="):
        load_cifar10()


def test_keras2_cache_layout_is_found(tmp_path):
    batches = _fake_batches()
    _write_folder(tmp_path / "keras_home" / "datasets", "python", batches)
    _assert_loaded(load_cifar10(), batches)


def test_offline_download_fails_fast_and_leaves_nothing(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError) as error:
        load_cifar10(timeout=2)
    message = str(error.value)
    assert "could not download CIFAR-10 from http://127.0.0.1" in message
    assert data.DATA_ENV_VAR in message and "data_dir" in message
    assert "\n" not in message
    assert time.monotonic() - start < 30
    assert not (tmp_path / "keras_home").exists()


def test_silent_server_times_out(tmp_path, monkeypatch):
    # Accepts the connection, never answers: only the timeout ends the wait.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        monkeypatch.setattr(data, "PYTHON_ARCHIVE_URL", f"http://127.0.0.1:{port}/x")
        start = time.monotonic()
        with pytest.raises(DataError, match="could not download CIFAR-10.*timed out"):
            load_cifar10(timeout=1)
        assert time.monotonic() - start < 30
    datasets = tmp_path / "keras_home" / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())


def test_unwritable_cache_is_a_data_error(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a_file"))
    with pytest.raises(DataError, match="cannot write CIFAR-10 into the Keras cache"):
        load_cifar10()
    with pytest.raises(ValueError, match="timeout"):
        load_cifar10(timeout=0)


def test_no_download_when_told_not_to(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found; put cifar-10-python"):
        load_cifar10(download=False)


@pytest.fixture
def archive_server(tmp_path, monkeypatch):
    """Serves a fake python-version archive; its hash stands in for the official."""
    served = tmp_path / "served"
    batches = _fake_batches(seed=7)
    folder = _write_folder(tmp_path / "source", "python", batches)
    served.mkdir()
    archive = _write_archive(served / data.PYTHON_ARCHIVE, folder)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{data.PYTHON_ARCHIVE}"
    monkeypatch.setattr(data, "PYTHON_ARCHIVE_URL", url)
    monkeypatch.setattr(data, "PYTHON_ARCHIVE_SHA256", digest)
    yield batches
    server.shutdown()
    server.server_close()


def test_download_extracts_into_the_keras_cache(tmp_path, monkeypatch, archive_server):
    _assert_loaded(load_cifar10(), archive_server)
    cache = _keras_cache_folder(tmp_path / "keras_home") / data.PYTHON_FOLDER
    assert sorted(p.name for p in cache.iterdir()) == sorted(FILES)
    # Found there next time, without the network.
    monkeypatch.setattr(
        data, "PYTHON_ARCHIVE_URL", f"http://127.0.0.1:{_closed_port()}/"
    )
    _assert_loaded(load_cifar10(), archive_server)


def test_download_with_wrong_hash_leaves_nothing(tmp_path, monkeypatch, archive_server):
    monkeypatch.setattr(data, "PYTHON_ARCHIVE_SHA256", "0" * 64)
    with pytest.raises(DataError, match="could not download CIFAR-10.*hash"):
        load_cifar10()
    datasets = tmp_path / "keras_home" / "datasets"
    assert not datasets.exists() or not any(datasets.iterdir())


# ------------------------------------------------------------------- split


def test_split_validation_is_a_fixed_seeded_hold_out():
    images = np.arange(100)[:, None] * np.ones((1, 3), np.int64)
    labels = np.arange(100) % 10
    (train_x, train_y), (val_x, val_y) = split_validation(images, labels, 20, seed=3)
    again = split_validation(images, labels, 20, seed=3)
    np.testing.assert_array_equal(val_x, again[1][0])
    assert len(train_x) == 80 and len(val_x) == 20
    assert sorted(np.concatenate([train_x[:, 0], val_x[:, 0]])) == list(range(100))
    np.testing.assert_array_equal(val_y, val_x[:, 0] % 10)
    other = split_validation(images, labels, 20, seed=4)[1][0]
    assert not np.array_equal(val_x, other)


def test_split_validation_of_zero_and_bad_sizes():
    images, labels = np.zeros((10, 2)), np.zeros(10, np.int64)
    (train_x, _), (val_x, val_y) = split_validation(images, labels, 0)
    assert len(train_x) == 10 and val_x.shape == (0, 2) and val_y.shape == (0,)
    for size in (-1, 10, 11, 2.5, True):
        with pytest.raises(ValueError, match="validation_size"):
            split_validation(images, labels, size)


def test_synthetic_data_has_the_real_structure():
    (x_train, y_train), (x_test, y_test) = synthetic_cifar10(64, 16, seed=1)
    assert x_train.shape == (64, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (64,) and y_train.dtype == np.int64
    assert x_test.shape == (16, 32, 32, 3) and y_test.max() < 10
    np.testing.assert_array_equal(x_train, synthetic_cifar10(64, 16, seed=1)[0][0])


# ---------------------------------------------------------- TrainingBatches


def _numbered(count):
    """Images whose first pixel is their index, so batches show which images."""
    images = np.zeros((count, 32, 32, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(count) % 256
    images[:, 0, 0, 1] = np.arange(count) // 256
    return images, np.arange(count) % 10


def _ids(images):
    return images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 0, 1].astype(int)


def test_batches_are_a_pure_function_of_seed_and_epoch():
    images, labels = _numbered(50)
    batches = TrainingBatches(images, labels, batch_size=8, seed=5)
    assert batches.steps_per_epoch == 6 and batches.num_batches is None
    first = [_ids(batches[i][0]) for i in range(12)]
    fresh = TrainingBatches(images, labels, batch_size=8, seed=5)
    # Any order of access gives the same batches.
    for i in reversed(range(12)):
        np.testing.assert_array_equal(_ids(fresh[i][0]), first[i])
    epoch0, epoch1 = np.concatenate(first[:6]), np.concatenate(first[6:])
    assert len(set(epoch0)) == 48 and len(set(epoch1)) == 48
    assert not np.array_equal(epoch0, epoch1)
    x, y = batches[3]
    assert x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(y, _ids(x) % 10)
    other_seed = TrainingBatches(images, labels, batch_size=8, seed=6)
    assert not np.array_equal(_ids(other_seed[0][0]), first[0])


def test_resumed_batches_match_the_uninterrupted_run():
    images, labels = _numbered(40)
    full = TrainingBatches(images, labels, batch_size=16, seed=2)
    resumed = TrainingBatches(images, labels, batch_size=16, seed=2, start_epoch=3)
    steps = full.steps_per_epoch
    for i in range(2 * steps):
        np.testing.assert_array_equal(resumed[i][0], full[3 * steps + i][0])
    assert resumed.locate(steps) == (4, 0)


def test_drop_remainder():
    images, labels = _numbered(20)
    kept = TrainingBatches(images, labels, batch_size=8, drop_remainder=False)
    assert kept.steps_per_epoch == 3
    assert [len(kept[i][0]) for i in range(3)] == [8, 8, 4]
    assert sorted(np.concatenate([_ids(kept[i][0]) for i in range(3)])) == list(
        range(20)
    )
    dropped = TrainingBatches(images, labels, batch_size=8)
    assert dropped.steps_per_epoch == 2
    with pytest.raises(ValueError, match="No batch to make"):
        TrainingBatches(images, labels, batch_size=32)


def test_misuse_by_fit_is_an_error():
    images, labels = _numbered(64)
    batches = TrainingBatches(images, labels, batch_size=2)  # 32 steps per epoch
    batches.on_epoch_begin()
    batches[31 + 64]  # tf.data may read a little ahead
    with pytest.raises(ValueError, match="needs `steps_per_epoch"):
        batches[32 + 64]
    batches.on_epoch_begin()
    batches.on_epoch_begin()
    with pytest.raises(ValueError, match="reused by another fit"):
        batches[0]
    batches.start_epoch = 3
    batches.on_epoch_begin()
    assert batches.locate(0) == (3, 0)
    batches[0]


@pytest.mark.parametrize("skip", [0, 3])
def test_fit_reads_the_same_batches_on_every_backend(skip):
    """`fit_input` (tf.data under TensorFlow) yields exactly the batches, across
    an epoch's end and after a resume's skipped steps, and then ends."""
    images, labels = _numbered(50)
    batches = TrainingBatches(images, labels, batch_size=8, seed=4, start_epoch=2)
    source = SkipBatches(batches, skip) if skip else batches
    steps = 2 * batches.steps_per_epoch - skip
    fed = fit_input(source, steps)
    if keras.backend.backend() == "tensorflow":
        read = [(x.numpy(), y.numpy()) for x, y in fed]
    else:
        assert fed is source
        read = [fed[i] for i in range(steps)]
    assert len(read) == steps
    for i, (x, y) in enumerate(read):
        expected_x, expected_y = batches[skip + i]
        np.testing.assert_array_equal(x, expected_x)
        np.testing.assert_array_equal(y, expected_y)
        assert x.dtype == np.uint8 and y.dtype == np.int64


_FIT_CHILD = """
    import sys

    import keras
    import numpy as np

    from keras_cifar_resnet import Augmentation
    from keras_cifar_resnet.data.input_pipeline import (
        TrainingBatches,
        synthetic_cifar10,
    )
    from keras_cifar_resnet.models import TinyResNet

    (x, y), (x_test, y_test) = synthetic_cifar10(48, 16, seed=0)
    model = TinyResNet()
    model.compile(keras.optimizers.SGD(0.01), augmentation=Augmentation(seed=1))
    batches = TrainingBatches(x, y, batch_size=16, seed=0)
    history = model.fit(
        batches, epochs=2, steps_per_epoch=batches.steps_per_epoch, shuffle=False,
        validation_data=(x_test, y_test), batch_size=16, verbose=0,
    )
    assert int(model.optimizer.iterations) == 6, int(model.optimizer.iterations)
    assert np.isfinite(history.history["loss"]).all()
    print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.slow
def test_fit_on_training_batches():
    """A 2-epoch fit in a fresh process; JAX and torch never import TensorFlow.

    It runs under the session's backend (nox runs the suite once per
    backend), so the suite starts one such process, not three.
    """
    backend = keras.backend.backend()
    output = run_under_backend(backend, _FIT_CHILD, timeout=600)
    expected = "True" if backend == "tensorflow" else "False"
    assert f"tensorflow imported: {expected}" in output


# ----------------------------------------------------------------- real data


@pytest.mark.real_data
def test_real_cifar10(real_data_dir):
    (x_train, y_train), (x_test, y_test) = load_cifar10(real_data_dir)
    assert x_train.shape == (50_000, 32, 32, 3) and x_test.shape == (10_000, 32, 32, 3)
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), [5000] * 10)
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), [1000] * 10)
    means = x_train.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    np.testing.assert_array_equal(np.round(means, 2), [125.31, 122.95, 113.87])


def test_the_data_source_names_where_the_data_comes_from(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_CIFAR_RESNET_DATA", str(tmp_path / "from-env"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert data.data_source(tmp_path / "given") == {
        "path": str(tmp_path / "given"),
        "given_as": "data_dir",
    }
    assert data.data_source() == {
        "path": str(tmp_path / "from-env"),
        "given_as": "KERAS_CIFAR_RESNET_DATA",
    }
    monkeypatch.delenv("KERAS_CIFAR_RESNET_DATA")
    assert data.data_source()["given_as"] == "download"
    cached = tmp_path / "home" / "datasets" / "cifar-10-batches-py"
    cached.mkdir(parents=True)
    (cached / "data_batch_1").write_bytes(b"")
    assert data.data_source() == {"path": str(cached), "given_as": "keras cache"}


def test_python_3_protocol_2_pickles_load(tmp_path):
    # Python 3 writes bytes at protocol 2 through `_codecs.encode`.
    batches = _fake_batches()
    folder = tmp_path / data.PYTHON_FOLDER
    folder.mkdir()
    for name, (images, labels) in batches.items():
        batch = {"labels": [int(label) for label in labels], "data": _rows(images)}
        raw = pickle.dumps(batch, protocol=2)
        assert b"_codecs" in raw
        (folder / name).write_bytes(raw)
    _assert_loaded(load_cifar10(folder), batches)


def test_a_codec_other_than_latin1_is_refused(tmp_path):
    folder = _write_folder(tmp_path, "python", _fake_batches())

    class _Decompresses:
        def __reduce__(self):
            import codecs

            return codecs.encode, ("x" * 100, "zlib_codec")

    (folder / "data_batch_3").write_bytes(pickle.dumps(_Decompresses(), protocol=2))
    with pytest.raises(DataError, match="refused `_codecs.encode` with codec 'zlib"):
        load_cifar10(folder)


def test_a_training_set_of_one_class_warns(monkeypatch, capsys):
    from keras_cifar_resnet.config import TrainConfig
    from keras_cifar_resnet.data import input_pipeline

    assert input_checks.single_class_warning([3, 3, 1]) is None
    images = np.zeros((40, 32, 32, 3), np.uint8)
    cats = np.full(40, 3)
    monkeypatch.setattr(
        input_pipeline,
        "load_cifar10",
        lambda data_dir: ((images, cats), (images[:8], cats[:8])),
    )
    config = TrainConfig(model="tiny", batch_size=8, validation_size=8)
    input_pipeline.prepare_data(config)
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("warning: every one of the 32 training labels is class 3")


@pytest.mark.parametrize("version", ["binary", "python"])
def test_a_batch_file_larger_than_cifar10s_is_refused_before_it_is_read(
    tmp_path, version, monkeypatch
):
    folder = _write_folder(tmp_path, version, _fake_batches())
    test_file = folder / ("test_batch.bin" if version == "binary" else "test_batch")
    with open(test_file, "r+b") as file:
        file.truncate(100 * 10**9)  # sparse: 100 GB that take no disk

    def no_reading(*args, **kwargs):
        raise AssertionError("a batch file was read before the sizes were checked")

    monkeypatch.setattr(type(test_file), "read_bytes", no_reading)
    with pytest.raises(DataError) as caught:
        load_cifar10(folder, download=False)
    limit = f"{data.MAX_BATCH_BYTES[version]:,}"
    assert str(caught.value).startswith(
        f"{test_file}: 100,000,000,000 bytes, more than a CIFAR-10 batch file "
        f"holds ({limit}"
    )
    assert str(caught.value).endswith("); not CIFAR-10")


def test_an_archive_member_larger_than_cifar10s_is_refused_before_it_is_read(
    tmp_path,
):
    info = tarfile.TarInfo(f"{data.BINARY_FOLDER}/data_batch_1.bin")
    info.size = data.MAX_BATCH_BYTES["binary"] + 3073
    archive = tmp_path / "cifar.tar"
    # Only the header: the member's bytes are never reached.
    archive.write_bytes(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    with pytest.raises(DataError, match=r"data_batch_1.bin: 30,733,073 bytes, more"):
        load_cifar10(archive, download=False)


def test_the_not_found_error_names_a_folder_the_user_can_make(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_CIFAR_RESNET_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(DataError) as error:
        load_cifar10(download=False)
    datasets = tmp_path / "datasets"
    assert f"making {datasets / data.PYTHON_FOLDER}/" in str(error.value)
    assert "-target" not in str(error.value)  # Keras's own name: nobody makes it
    # Made as the message says, it is where the data is found.
    batches = _fake_batches()
    _write_folder(datasets, "python", batches)
    _assert_loaded(load_cifar10(download=False), batches)
