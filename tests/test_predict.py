"""Prediction on image files: preprocessing, results, the command and bad input."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from keras_cifar_resnet import predict
from keras_cifar_resnet.data.cifar10 import CLASS_NAMES, load_cifar10
from keras_cifar_resnet.predict import ImageError, expand_inputs, load_image
from keras_cifar_resnet.reporting.evaluation import softmax
from tests.test_evaluate import tiny_model


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    model = tiny_model(seed=1)
    model.save(path)
    return path, model


@pytest.fixture
def image_folder(tmp_path):
    """Two images of odd sizes, one RGBA, a text file and a subfolder."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (90, 50, 3), np.uint8)).save(folder / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 40, 4), np.uint8)).save(folder / "A.PNG")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(folder / "c.jpg")
    (folder / "notes.txt").write_text("not an image")
    (folder / "nested").mkdir()
    return folder


def _thirds(width=96, height=32):
    """Red, green and blue vertical thirds."""
    image = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    image[:, :third, 0] = image[:, third : 2 * third, 1] = image[:, 2 * third :, 2] = (
        255
    )
    return image


# -------------------------------------------------------------- pictures in


def test_crop_keeps_the_centred_square(tmp_path):
    Image.fromarray(_thirds()).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", fit="crop")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    # The middle third only: pure green.
    np.testing.assert_array_equal(image[..., 1], 255)
    np.testing.assert_array_equal(image[..., [0, 2]], 0)


def test_stretch_keeps_the_whole_image(tmp_path):
    Image.fromarray(_thirds()).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", fit="stretch").astype(int)
    assert image.shape == (32, 32, 3)
    # Red on the left, blue on the right (away from the blurred borders).
    assert image[:, 2, 0].min() > 200 and image[:, 2, 2].max() < 50
    assert image[:, -3, 2].min() > 200 and image[:, -3, 0].max() < 50


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((32, 64, 3), np.uint8)
    pixels[:, :32, 0] = 255  # left half red
    pixels[:, 32:, 2] = 255  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = load_image(tmp_path / "phone.jpg", fit="stretch").astype(int)
    # Upright, the left half is on top.
    assert image[:8, :, 0].min() > 200 and image[:8, :, 2].max() < 60
    assert image[-8:, :, 2].min() > 200 and image[-8:, :, 0].max() < 60


def test_a_32x32_image_is_unchanged(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "same.png")
    np.testing.assert_array_equal(load_image(tmp_path / "same.png"), pixels)


def test_transparent_pixels_become_white_and_grey_becomes_rgb(tmp_path):
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    np.testing.assert_array_equal(load_image(tmp_path / "clear.png"), 255)
    Image.new("L", (10, 20), 77).save(tmp_path / "grey.jpg")
    grey = load_image(tmp_path / "grey.jpg")
    assert grey.shape == (32, 32, 3) and np.all(np.abs(grey.astype(int) - 77) <= 1)


def test_unreadable_files_raise_image_error(tmp_path, image_folder):
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(image_folder / "notes.txt")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((image_folder / "b.png").read_bytes()[:60])
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(truncated)
    with pytest.raises(ImageError, match="file not found"):
        load_image(tmp_path / "missing.png")


def test_folders_contribute_their_images_in_name_order(tmp_path, image_folder):
    files, errors = expand_inputs([image_folder, image_folder / "notes.txt"])
    assert [f.name for f in files] == ["A.PNG", "b.png", "c.jpg", "notes.txt"]
    assert errors == []
    empty = tmp_path / "empty"
    empty.mkdir()
    files, errors = expand_inputs([empty])
    assert files == [] and "folder has no .png/.jpg/.jpeg files" in errors[0]["error"]


# -------------------------------------------------------------- results out


def test_predict_files_matches_the_model(saved_model, image_folder):
    _, model = saved_model
    paths = [image_folder / "b.png", image_folder / "notes.txt", image_folder / "c.jpg"]
    results = predict.predict_files(model, paths, top=10)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    assert "not a readable image" in results[1]["error"]
    images = np.stack([load_image(paths[0]), load_image(paths[2])])
    expected = softmax(model.predict(images, verbose=0))
    for result, probabilities in zip([results[0], results[2]], expected, strict=True):
        predictions = result["predictions"]
        assert sorted(p["class"] for p in predictions) == sorted(CLASS_NAMES)
        shown = [p["probability"] for p in predictions]
        assert shown == sorted(shown, reverse=True)
        assert sum(shown) == pytest.approx(1.0)
        best = CLASS_NAMES[int(np.argmax(probabilities))]
        assert predictions[0]["class"] == best
        assert shown[0] == pytest.approx(probabilities.max(), rel=1e-5)


@pytest.mark.real_data
def test_real_test_images_as_png_files(saved_model, real_data_dir, tmp_path):
    """CIFAR-10 test images saved as PNG get the model's own predictions."""
    _, model = saved_model
    _, (images, _) = load_cifar10(real_data_dir)
    images = images[:8]
    paths = []
    for index, pixels in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(pixels).save(paths[-1])
    results = predict.predict_files(model, paths, top=1)
    expected = np.asarray(model.predict(images, verbose=0)).argmax(axis=1)
    predicted = [CLASS_NAMES.index(r["predictions"][0]["class"]) for r in results]
    assert predicted == expected.tolist()


# ------------------------------------------------------------------ command


def test_command_reports_bad_files_and_classifies_the_rest(
    saved_model, image_folder, capsys
):
    path, _ = saved_model
    status = predict.main(
        [str(path), str(image_folder), str(image_folder / "notes.txt"), "--top-k", "2"]
    )
    assert status == 1
    captured = capsys.readouterr()
    for name in ("A.PNG", "b.png", "c.jpg"):
        assert str(image_folder / name) in captured.out
    assert captured.out.count("%") == 3 * 2
    assert captured.err.strip().splitlines() == [
        f"error: {image_folder / 'notes.txt'}: not a readable image "
        f"(cannot identify image file '{image_folder / 'notes.txt'}')"
    ]


def test_command_json(saved_model, image_folder, capsys):
    path, _ = saved_model
    argv = [str(path), str(image_folder / "b.png"), "--json", "--top-k", "3"]
    assert predict.main(argv + ["--fit", "stretch"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 1 and results[0]["path"] == str(image_folder / "b.png")
    assert [set(p) for p in results[0]["predictions"]] == [{"class", "probability"}] * 3


def test_command_bad_model_files(tmp_path, image_folder, capsys):
    image = str(image_folder / "b.png")
    assert predict.main([str(tmp_path / "missing.keras"), image]) == 2
    assert "model file not found" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.keras"
    corrupt.write_bytes(b"\x00" * 100)
    assert predict.main([str(corrupt), image]) == 1
    assert "not a valid .keras file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        predict.main([str(corrupt), image, "--top-k", "-1"])
    assert caught.value.code == 2


@pytest.mark.slow
def test_module_entry_point_without_traceback(saved_model, image_folder):
    path, _ = saved_model
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "keras_cifar_resnet.predict",
            str(path),
            str(image_folder / "notes.txt"),
            str(image_folder / "c.jpg"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "notes.txt: not a readable image" in result.stderr
    assert str(image_folder / "c.jpg") in result.stdout


def test_a_16_bit_grayscale_image_is_scaled_not_clipped(tmp_path):
    # A horizontal ramp over the whole 16-bit range: mid-grey on average.
    ramp = np.tile(np.linspace(0, 65535, 64), (64, 1)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "gray16.png")
    image = load_image(tmp_path / "gray16.png")
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert abs(float(image.mean()) - 127.5) < 4
    assert image[:, 0].max() < 16 and image[:, -1].min() > 239


def _png_header_only(path, width, height):
    """A PNG whose header declares `width` x `height` (it holds no pixels)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)  # RGBA
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    )
    return path


def test_an_image_above_the_pixel_limit_is_refused_from_its_header(tmp_path):
    path = _png_header_only(tmp_path / "huge.png", 13000, 13000)
    with pytest.raises(ImageError, match="13000x13000 is 169,000,000 pixels, above"):
        load_image(path)


def test_a_fifo_is_refused_instead_of_waited_on(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    signal.alarm(20)  # a hang fails the test instead of blocking it
    try:
        with pytest.raises(ImageError, match="not a regular file"):
            load_image(fifo)
        files, errors = expand_inputs([fifo])
    finally:
        signal.alarm(0)
    assert files == []
    assert errors == [
        {"path": str(fifo), "error": f"{fifo}: not a regular file (a pipe or device?)"}
    ]
