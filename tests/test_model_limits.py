"""Model files whose declared size is small but whose cost is not: refused first."""

from __future__ import annotations

import os
import signal
import struct
import zipfile

import numpy as np
import pytest

from keras_cifar_resnet.reporting.model_files import ModelFileError, check_model_file
from tests.test_evaluate import tiny_model
from tests.test_model_files import _first_dataset, hostile


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model().save(path)
    return path


@pytest.fixture
def no_hang():
    """Fails a check that waits (on a FIFO) instead of hanging the suite."""

    def timed_out(signum, frame):
        raise AssertionError("the check waited on a FIFO")

    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def _refused(path):
    with pytest.raises(ModelFileError) as caught:
        check_model_file(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message[len(f"{path}: ") :]


def test_class_name_and_registered_name_must_both_be_allowed(model_file, tmp_path):
    def numpy_class(config):
        config["class_name"] = "__numpy__"  # what Keras dispatches on

    path = hostile(model_file, tmp_path / "split.keras", numpy_class)
    assert _refused(path) == (
        "the model is a '__numpy__', not this package's ResNet; only models "
        "this package makes are loaded"
    )

    def split_entry(config):
        config["config"]["extra"] = {
            "module": "keras.initializers",
            "class_name": "__tensor__",
            "registered_name": "HeNormal",
            "config": {"value": [1.0] * 4, "dtype": "float32"},
        }

    path = hostile(model_file, tmp_path / "split-entry.keras", split_entry)
    message = _refused(path)
    assert message.startswith("refused: ") and "is a '__tensor__'" in message


def test_a_compressed_extra_dataset_is_refused_unread(model_file, tmp_path):
    def extra(file):
        # 400 MB of zeros in a few hundred bytes of the file.
        file.create_dataset(
            "layers/zzz/vars/0", shape=(100_000_000,), dtype="f4", compression="gzip"
        )

    path = hostile(model_file, tmp_path / "gzip.keras", edit_weights=extra)
    assert os.path.getsize(path) < 200_000
    assert _refused(path) == (
        "weight 'layers/zzz/vars/0' is stored through a filter (compression); a "
        "model file of this package stores its weights plainly"
    )


def test_a_plain_extra_dataset_is_refused_by_the_count(model_file, tmp_path):
    def extra(file):
        file.create_dataset("zzz", data=np.zeros(10, "f4"))

    path = hostile(model_file, tmp_path / "extra.keras", edit_weights=extra)
    message = _refused(path)
    assert message.startswith("its weights hold ") and message.endswith(
        " parameters"
    ), message


def test_a_weight_stored_externally_on_a_fifo_is_refused_without_waiting(
    model_file, tmp_path, no_hang, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"")

    def external(file):
        name = _first_dataset(file)
        shape, dtype = file[name].shape, file[name].dtype
        del file[name]
        file.create_dataset(
            name, shape=shape, dtype=dtype, external=[(str(outside), 0, 1 << 20)]
        )

    path = hostile(model_file, tmp_path / "external.keras", edit_weights=external)
    outside.unlink()
    os.mkfifo(outside)
    assert _refused(path).endswith("is stored in an external file")


@pytest.mark.parametrize(
    "field, value, said",
    [
        ("stackwise_strides", [1, 0], "stackwise_strides[1] is 0, not a"),
        ("stackwise_num_filters", [8, -1], "stackwise_num_filters[1] is -1, not"),
        ("stackwise_num_blocks", [1, 1, 1], "stackwise_num_filters has 2 entries"),
        ("width_multiplier", 1e308 * 10, "width_multiplier is inf, not a finite"),
        ("stem_filters", 0, "stem_filters is 0, not a positive int"),
    ],
)
def test_structural_fields_that_break_the_size_are_named(
    model_file, tmp_path, field, value, said
):
    def edit(config):
        config["config"][field] = value

    path = hostile(model_file, tmp_path / "zero.keras", edit)
    assert _refused(path).startswith(f"its config's {said}")


def _patch_member(path, name, *, flag_bits=None, method=None):
    """Rewrites a member's flag bits or method in its local and central headers."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        offset = archive.getinfo(name).header_offset
    centrals = [offset]  # the local header, then its central directory entry
    start = 0
    while (start := raw.find(b"PK\x01\x02", start)) != -1:
        length = struct.unpack_from("<H", raw, start + 28)[0]
        if raw[start + 46 : start + 46 + length] == name.encode():
            centrals.append(start)
        start += 4
    for where, shift in zip(centrals, (0, 2), strict=True):
        if flag_bits is not None:
            struct.pack_into("<H", raw, where + 6 + shift, flag_bits)
        if method is not None:
            struct.pack_into("<H", raw, where + 8 + shift, method)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("change", ["encrypted", "unknown method"])
def test_an_encrypted_or_unknown_zip_member_is_refused(model_file, tmp_path, change):
    path = hostile(model_file, tmp_path / "zip.keras")
    if change == "encrypted":
        _patch_member(path, "model.weights.h5", flag_bits=0x1)
        expected = "member 'model.weights.h5' is encrypted; a model file of"
    else:
        _patch_member(path, "model.weights.h5", method=99)
        expected = "member 'model.weights.h5' uses compression method 99, not one"
    assert _refused(path).startswith(expected)
