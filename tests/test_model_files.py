"""Model files are data: hostile or unfit `.keras` files refused before building."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile

import h5py
import numpy as np
import pytest
from PIL import Image

from keras_cifar_resnet import evaluate, predict
from keras_cifar_resnet.reporting.model_files import (
    ALLOWED_CLASSES,
    ModelFileError,
    load_model,
)
from keras_cifar_resnet.reporting.model_limits import MAX_PARAMETERS
from keras_cifar_resnet.resources import named_model_config, resnet_size
from tests.test_evaluate import tiny_model


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_model().save(path)
    return path


def _members(path):
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def hostile(good, path, edit_config=None, edit_weights=None, **extra):
    """A copy of `good` with its config.json or weights edited."""
    members = _members(good)
    if edit_config is not None:
        config = json.loads(members["config.json"])
        config = edit_config(config) or config
        members["config.json"] = json.dumps(config).encode()
    if edit_weights is not None:
        buffer = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buffer, "r+") as file:
            edit_weights(file)
        members["model.weights.h5"] = buffer.getvalue()
    members.update(extra)
    return _write(path, members)


def _lambda_layer(picture):
    """The payload that made Keras write a file: an allowed Keras function."""
    return {
        "module": "keras.layers",
        "class_name": "Lambda",
        "registered_name": None,
        "config": {
            "name": "innocent",
            "function": {
                "module": "keras.visualization",
                "class_name": "function",
                "config": "plot_image_gallery",
                "registered_name": "function",
            },
            "arguments": {"path": str(picture)},
        },
    }


def _first_dataset(file):
    found = []
    file.visititems(
        lambda name, item: (
            found.append(name) if isinstance(item, h5py.Dataset) and not found else None
        )
    )
    return found[0]


def test_the_package_s_own_model_loads(good_file):
    model, path = load_model(good_file)
    assert path == good_file
    assert model.output_shape == (None, 10)


def test_a_compiled_model_loads_its_compile_settings_unread(good_file, tmp_path):
    def compiled(config):
        config["compile_config"] = {
            "optimizer": {
                "module": "keras.optimizers",
                "class_name": "SGD",
                "config": {"name": "SGD"},
                "registered_name": None,
            },
            "loss": "sparse_categorical_crossentropy",
        }

    path = hostile(good_file, tmp_path / "compiled.keras", compiled)
    model, _ = load_model(path)
    assert model.output_shape == (None, 10) and not model.compiled


@pytest.fixture
def lambda_file(good_file, tmp_path):
    """(a ResNet file holding the picture-writing Lambda, the picture, its bytes)."""
    picture = tmp_path / "holiday.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(picture)

    def add_lambda(config):
        config["config"]["extra"] = _lambda_layer(picture)

    path = hostile(good_file, tmp_path / "evil.keras", add_lambda)
    return path, picture, picture.read_bytes()


def test_a_lambda_inside_the_resnet_is_refused_naming_it(lambda_file):
    path, picture, before = lambda_file
    with pytest.raises(ModelFileError) as caught:
        load_model(path)
    message = str(caught.value)
    assert "layer 'innocent' is a 'Lambda'" in message
    assert "\n" not in message
    assert picture.read_bytes() == before


def test_a_functional_model_with_a_lambda_is_refused(good_file, tmp_path):
    def functional(config):
        return {
            "module": "keras",
            "class_name": "Functional",
            "registered_name": "Functional",
            "config": {"name": "m", "layers": [_lambda_layer(tmp_path / "x.png")]},
        }

    path = hostile(good_file, tmp_path / "functional.keras", functional)
    with pytest.raises(ModelFileError, match="'Functional', not this package's ResNet"):
        load_model(path)


def test_a_class_named_as_allowed_but_from_another_module_is_refused(
    good_file, tmp_path
):
    def disguised(config):
        config["config"]["extra"] = {
            "module": "os",
            "class_name": "Conv2D",
            "registered_name": None,
            "config": {"name": "conv"},
        }

    path = hostile(good_file, tmp_path / "disguised.keras", disguised)
    with pytest.raises(ModelFileError, match="layer 'conv' is a 'Conv2D' \\(os\\)"):
        load_model(path)


def test_the_allowlist_is_keyed_by_registered_name():
    assert (
        ALLOWED_CLASSES["keras_cifar_resnet>ResNet"]
        == "keras_cifar_resnet.models"
    )
    assert "Lambda" not in ALLOWED_CLASSES


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            {
                "width_multiplier": 64.0,
                "stackwise_num_blocks": [2, 2, 2, 2],
                "stackwise_num_filters": [64, 128, 256, 512],
                "stackwise_strides": [1, 2, 2, 2],
                "stem_filters": 64,
            },
            "parameters, above the limit of",
        ),
        ({"input_shape": [8000, 8000, 3]}, "input of 8000x8000 pixels, above the"),
        ({"input_shape": [64, 64, 3]}, "takes 64x64x3 images; this command needs"),
        ({"input_shape": [None, None, 3]}, "input_shape \\[None, None, 3\\], not a"),
        ({"num_classes": 5}, "has 5 classes; this command needs 10"),
    ],
    ids=["width-64", "8000x8000", "64x64", "any-size", "5-classes"],
)
def test_declared_sizes_that_do_not_fit_are_refused_before_building(
    good_file, tmp_path, edit, message
):
    path = hostile(
        good_file, tmp_path / "m.keras", lambda config: config["config"].update(edit)
    )
    with pytest.raises(ModelFileError, match=message) as caught:
        load_model(path)
    assert "\n" not in str(caught.value)


def test_a_config_json_bomb_is_refused_before_inflating(good_file, tmp_path):
    path = hostile(good_file, tmp_path / "bomb.keras")
    members = _members(path)
    members["config.json"] = members["config.json"] + b" " * (8 << 20)
    _write(path, members)
    assert path.stat().st_size < 200_000
    with pytest.raises(ModelFileError, match="config.json inflates to 8,3"):
        load_model(path)


def test_an_unexpected_member_is_refused(good_file, tmp_path):
    path = hostile(good_file, tmp_path / "m.keras", **{"assets/x": b"1"})
    with pytest.raises(ModelFileError, match="unexpected member 'assets/x'"):
        load_model(path)


def test_a_bad_checksum_is_refused_and_leaves_no_temporary_files(good_file, tmp_path):
    path = tmp_path / "crc.keras"
    with zipfile.ZipFile(good_file) as source, zipfile.ZipFile(path, "w") as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))  # stored, not compressed
    data = bytearray(path.read_bytes())
    offset = data.index(b"\x89HDF") + 5000  # inside the weights' stored bytes
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    temporary = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(ModelFileError, match="corrupt .*CRC"):
        load_model(path)
    assert set(os.listdir(tmp_path)) == {"crc.keras"}
    assert set(os.listdir(tempfile.gettempdir())) <= temporary


@pytest.mark.parametrize(
    "value, message",
    [(np.nan, "holds NaN or infinite values"), ("int32", "is int32, not floating")],
)
def test_weights_that_are_not_finite_floats_are_refused(
    good_file, tmp_path, value, message
):
    def spoil(file):
        name = _first_dataset(file)
        array = file[name][()]
        del file[name]
        if value == "int32":
            file[name] = array.astype(np.int32)
        else:
            array.flat[0] = value
            file[name] = array

    path = hostile(good_file, tmp_path / "w.keras", edit_weights=spoil)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_overflowing_outputs_are_an_error_and_the_json_stays_json(
    good_file, tmp_path, capsys
):
    def huge(file):
        # Finite float32 logits weights whose sums overflow to infinity.
        kernel = file["layers/dense/vars/0"]
        kernel.write_direct(np.full(kernel.shape, 3e38, "f4"))

    path = hostile(good_file, tmp_path / "huge.keras", edit_weights=huge)
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (9, 90, 200)).save(image)
    assert predict.main([str(path), str(image), "--json"]) == 1
    captured = capsys.readouterr()
    results = json.loads(captured.out)  # no NaN: strict JSON
    assert "not a finite number" in results[0]["error"]


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_the_commands_refuse_a_hostile_file_in_one_line(
    lambda_file, tmp_path, capsys, command
):
    path, picture, before = lambda_file
    if command == "evaluate":
        status = evaluate.main([str(path), "--output", str(tmp_path / "e.json")])
    else:
        status = predict.main([str(path), str(picture)])
    err = capsys.readouterr().err
    assert status == 1
    assert err.count("\n") == 1 and "'Lambda'" in err
    assert picture.read_bytes() == before


def test_a_fifo_is_refused_as_the_model(tmp_path, capsys):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    assert predict.main([str(fifo), str(tmp_path)]) == 2
    assert "not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_the_size_estimate_counts_the_built_model_s_parameters(name):
    from keras_cifar_resnet.models import MODELS

    options = {"width_multiplier": 0.125} if name == "resnet18" else {}
    parameters, _, _ = resnet_size(named_model_config(name, **options))
    assert parameters == MODELS[name](**options).count_params()
    assert parameters < MAX_PARAMETERS


def test_evaluate_refuses_overflowing_outputs_and_writes_no_report(
    good_file, tmp_path, capsys
):
    from tests.test_data import _fake_batches, _write_folder

    data_dir = _write_folder(tmp_path / "data", "binary", _fake_batches())

    def huge(file):
        kernel = file["layers/dense/vars/0"]
        kernel.write_direct(np.full(kernel.shape, 3e38, "f4"))

    path = hostile(good_file, tmp_path / "huge.keras", edit_weights=huge)
    report = tmp_path / "report.json"
    argv = [str(path), "--data-dir", str(data_dir), "--output", str(report)]
    assert evaluate.main([*argv, "--quiet"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].endswith("(its weights overflow); no report written")
    assert not report.exists()


def test_a_clone_or_a_new_head_saved_as_a_graph_passes_the_checks(tmp_path):
    """clone_model's and fine_tune's models are saved as Keras's graph."""
    import keras

    from keras_cifar_resnet import ResNet
    from keras_cifar_resnet.fine_tune import backbone_of
    from keras_cifar_resnet.models import TinyResNet
    from keras_cifar_resnet.reporting.model_limits import graph_parameters

    trained = TinyResNet()
    clone = keras.models.clone_model(trained)
    backbone = backbone_of(trained, pooling="avg")
    head = keras.layers.Dense(100, dtype="float32", name="logits")
    new_head = ResNet(backbone.input, head(backbone.output))
    for name, model, classes in (("clone", clone, 10), ("head", new_head, 100)):
        path = tmp_path / f"{name}.keras"
        model.save(path)
        config = json.loads(_members(path)["config.json"])["config"]
        assert "graph" in config
        assert graph_parameters(config["graph"]) == model.count_params()
        loaded, _ = load_model(path, input_shape=(32, 32, 3), num_classes=classes)
        assert loaded.count_params() == model.count_params()
    with pytest.raises(ModelFileError, match="has 100 outputs .* needs 10"):
        load_model(tmp_path / "head.keras", input_shape=(32, 32, 3), num_classes=10)
