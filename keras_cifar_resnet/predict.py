"""Classify your own images with a saved model: top-k classes and probabilities.

Each image is made to look like a CIFAR-10 image before the model sees it:
EXIF rotation applied, converted to RGB (transparent parts over white),
cropped to the largest centred square (`--fit crop`, the default) or
squashed whole (`--fit stretch`), then resized to the model's input size
(32x32) with Pillow's bicubic filter, which averages over the source pixels
when shrinking (antialiased). Images above `MAX_IMAGE_PIXELS` and
arguments that are not regular files (a pipe would wait forever) are
refused in one line each, before anything is decoded.

    python -m keras_cifar_resnet.predict runs/resnet18 cat.jpg photos/
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import warnings
from pathlib import Path

import numpy as np

from keras_cifar_resnet import messages
from keras_cifar_resnet.backend_choice import (
    BackendError,
    choose_backend,
    keep_framework_warnings_as_warnings,
    use_package_keras_settings,
)
from keras_cifar_resnet.closed_output import closed_stdout_guard
from keras_cifar_resnet.compilation_cache import enable_compilation_cache
from keras_cifar_resnet.config import positive_int
from keras_cifar_resnet.reporting.evaluation import (
    default_class_names,
    predict_logits,
    softmax,
)
from keras_cifar_resnet.reporting.model_files import ModelFileError, load_model

# Files a folder argument contributes; a file named on its own is always tried.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FITS = ("crop", "stretch")
# The largest image read, in pixels (an 8000x8000 photo): checked from the
# file's header before decoding, so a small file that decodes to gigabytes
# is refused instead of filling the memory.
MAX_IMAGE_PIXELS = 64_000_000
# The most bytes an image may decode to (its pixels times its mode's bytes
# per pixel, from the header): an 8000x8000 RGB photo is 192 MB; a 16-bit
# or RGBA image of as many pixels is refused.
MAX_DECODED_BYTES = 200_000_000
# Rows of a 16-bit image scaled to 8 bits at a time, so the scaling needs
# no full-size array of wider numbers.
_ROWS_PER_CHUNK = 256


class ImageError(Exception):
    """An image file that cannot be read (message: one line)."""


def _import_pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError as error:
        raise ImportError(
            "reading images needs Pillow, which is not installed: "
            "pip install 'keras-cifar-resnet[plots]'"
        ) from error
    return Image, ImageOps


def load_image(path, size=(32, 32), fit="crop"):
    """An image file as a uint8 array shaped like a CIFAR-10 image.

    Args:
        path: str or Path, a PNG or JPEG (anything Pillow reads) of any size.
        size: (height, width), the model's input size. Defaults to (32, 32).
        fit: `"crop"` (default) cuts the largest centred square first, keeping
            the aspect ratio; `"stretch"` resizes the whole image, distorting
            it if it is not square.

    Returns:
        (height, width, 3) uint8 numpy array.

    Raises:
        ImageError: the file is missing, not a regular file, not a readable
            image, or larger than `MAX_IMAGE_PIXELS`.
        ValueError: `fit` is not one of `FITS`.
    """
    if fit not in FITS:
        raise ValueError(f"`fit` must be one of {FITS}. Received: {fit=}")
    Image, ImageOps = _import_pillow()
    path = Path(path)
    problem = _path_problem(path)
    if problem:
        raise ImageError(f"{path}: {problem}")
    try:
        with warnings.catch_warnings():
            # Our own limit below, in one line, replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            pixels = image.width * image.height  # from the header, not decoded
            if pixels > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} is {pixels:,} pixels, "
                    f"above the limit of {MAX_IMAGE_PIXELS:,}"
                )
            decoded = pixels * _bytes_per_pixel(image)
            if decoded > MAX_DECODED_BYTES:
                raise ImageError(
                    f"{path}: {image.width}x{image.height} in mode {image.mode} "
                    f"decodes to {decoded:,} bytes, above the limit of "
                    f"{MAX_DECODED_BYTES:,}"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder") from None
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        # Pillow's "cannot identify image file" for non-images, truncation
        # errors for broken ones.
        message = " ".join(str(error).split())
        raise ImageError(f"{path}: not a readable image ({message})") from None
    image = _to_8_bits(image, Image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent pixels over white, as a photo of the object would be,
        # instead of whatever colour the file stores under alpha 0.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if fit == "crop":
        side = min(image.size)
        left = (image.width - side) // 2
        top = (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    height, width = size
    # Grayscale is resized before it becomes RGB (the same pixels): a large
    # grey image is never tripled in memory.
    image = image.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _path_problem(path):
    """Why `path` cannot be opened as an image without trying, or None.

    A pipe would wait for a writer forever; a name too long for the file
    system is this path's problem alone.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"
    if stat.S_ISDIR(mode):
        return "is a folder"
    if not stat.S_ISREG(mode):
        return "not a regular file (a pipe or device?)"
    return None


def _bytes_per_pixel(image):
    """Bytes per pixel of `image`'s mode once decoded, from its header."""
    if image.mode in ("I", "F"):
        return 4
    if image.mode.startswith("I;16"):
        return 2
    return len(image.getbands())


def _to_8_bits(image, Image):
    """A 16-bit (or 32-bit integer) grayscale image scaled to 8 bits.

    Pillow's own conversion clips these modes at 255 instead of scaling, so
    a 16-bit PNG would come out almost white. Scaled a band of rows at a
    time, in integers: a full-size float copy of a large image would take
    gigabytes.
    """
    if image.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return image
    pixels = np.asarray(image)
    # 16-bit files (the only integer images PNG holds): 65535 is white.
    full_scale = max(65535, int(pixels.max(initial=0)))
    scaled = np.empty(pixels.shape, dtype=np.uint8)
    for top in range(0, pixels.shape[0], _ROWS_PER_CHUNK):
        band = slice(top, top + _ROWS_PER_CHUNK)
        rows = np.clip(pixels[band], 0, None).astype(np.int64)
        scaled[band] = (rows * 255 + full_scale // 2) // full_scale
    return Image.fromarray(scaled, mode="L")


def expand_inputs(paths):
    """The image files to classify, and one-line errors for arguments that give none.

    A folder contributes its files ending in `IMAGE_SUFFIXES` (any case),
    sorted by name, not its subfolders. A file is taken as it is, whatever
    its name, so that a wrong file gets a clear error of its own.

    Returns:
        (list of Path, list of {"path", "error"} dicts).
    """
    files, errors = [], []
    for path in map(Path, paths):
        problem = _path_problem(path)
        if problem and problem not in ("is a folder", "file not found"):
            # Its own line; the other arguments are still classified.
            errors.append({"path": str(path), "error": f"{path}: {problem}"})
        elif problem == "is a folder":
            found = sorted(
                child
                for child in path.iterdir()
                if child.suffix.lower() in IMAGE_SUFFIXES
                and _path_problem(child) != "is a folder"
            )
            if not found:
                message = f"{path}: folder has no {'/'.join(IMAGE_SUFFIXES)} files"
                errors.append({"path": str(path), "error": message})
            files.extend(found)
        else:
            files.append(path)
    return files, errors


def top_k(probabilities, class_names, k):
    """The `k` most probable classes, most probable first.

    Returns:
        list of {"class": str, "probability": float}.
    """
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [
        {"class": class_names[index], "probability": float(probabilities[index])}
        for index in order
    ]


def predict_files(model, paths, top=3, fit="crop", class_names=None, batch_size=64):
    """Classify image files with `model`; unreadable files get an error instead.

    Args:
        model: a Keras model taking raw 0-255 pixels and returning logits.
        paths: sequence of str or Path, image files.
        top: int, classes to report per image. Defaults to 3.
        fit: `"crop"` or `"stretch"`, see `load_image`.
        class_names: sequence of str or None (CIFAR-10's names).
        batch_size: int, images per forward pass. Defaults to 64.

    Returns:
        list, one dict per path in order: `{"path", "predictions"}` with the
        `top_k` list, or `{"path", "error"}` with a one-line message.
    """
    height, width = model.input_shape[1:3]
    num_classes = model.output_shape[-1]
    if class_names is None:
        class_names = default_class_names(num_classes)
    results, images, loaded = [], [], []
    for path in paths:
        try:
            images.append(load_image(path, (height, width), fit))
        except ImageError as error:
            results.append({"path": str(path), "error": str(error)})
            continue
        results.append({"path": str(path)})
        loaded.append(results[-1])
    if images:
        logits = predict_logits(model, np.stack(images), batch_size)
        with np.errstate(invalid="ignore", over="ignore"):  # reported below
            all_probabilities = softmax(logits)
        for result, probabilities in zip(loaded, all_probabilities, strict=True):
            if np.isfinite(probabilities).all():
                result["predictions"] = top_k(probabilities, class_names, top)
            else:  # weights so large that the logits overflow
                result["error"] = (
                    f"{result['path']}: the model's output is not a finite number"
                )
    return results


def format_results(results):
    """The results as text: each image, then its classes with percentages."""
    lines = []
    for result in results:
        if "error" in result:
            continue
        lines.append(messages.printable(result["path"]))
        width = max(len(p["class"]) for p in result["predictions"])
        for rank, prediction in enumerate(result["predictions"], start=1):
            lines.append(
                f"  {rank}. {prediction['class']:{width}}  "
                f"{100 * prediction['probability']:5.1f}%"
            )
    return "\n".join(lines)


def build_parser():
    parser = argparse.ArgumentParser(
        prog=messages.PROGRAMS["predict"],
        description=(
            "Classify PNG/JPEG images of any size with a saved model and print "
            "the top-k CIFAR-10 classes with their probabilities. Each image is "
            "turned upright (EXIF orientation), converted to RGB (transparent "
            "parts over white), cropped to the "
            "largest centred square (or, with --fit stretch, squashed whole), "
            "and resized to 32x32 with Pillow's bicubic filter (antialiased "
            "when shrinking)."
        ),
        epilog=(
            "Exit status: 0 all images classified, 1 some image could not be "
            "read or the model could not be loaded, 2 bad usage (unknown flag, "
            "missing model file). Unreadable images (pipes and devices, images "
            f"above {MAX_IMAGE_PIXELS:,} pixels included) are reported one line "
            "each on stderr; the others are still classified."
        ),
    )
    parser.add_argument(
        "model",
        help="a .keras file, or a training run's output folder (best.keras first)",
    )
    parser.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help=(
            "image files, or folders whose .png/.jpg/.jpeg files are all "
            "classified (sorted by name, not recursive)"
        ),
    )
    parser.add_argument(
        "--top-k",
        metavar="K",
        type=positive_int,
        default=3,
        help="classes to show per image, most probable first (default: %(default)s)",
    )
    parser.add_argument(
        "--fit",
        choices=FITS,
        default="crop",
        help=(
            "crop: cut the largest centred square, keeping proportions; "
            "stretch: squash the whole image (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help=(
            'print JSON instead: a list of {"path", "predictions": [{"class", '
            '"probability"}]} or {"path", "error"}, in argument order'
        ),
    )
    return parser


def main(argv=None):
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    keep_framework_warnings_as_warnings()
    try:
        # A reader that stops early (`| head`) is no failure: the rest of
        # the output is dropped, the files are still written.
        with closed_stdout_guard(rest_to_stderr=False):
            return _run(args)
    except KeyboardInterrupt as interrupt:
        # Ctrl-C: nothing is written, so nothing is lost.
        print(messages.stopped_before_writing(), file=sys.stderr)
        return messages.exit_status(interrupt)


def _run(args):
    try:
        _import_pillow()
        choose_backend()
        enable_compilation_cache(choose_backend().name)
        note = use_package_keras_settings()
        if note:
            print(messages.printable(note), file=sys.stderr)
        model, _ = load_model(args.model)
    except (ModelFileError, BackendError, ImportError) as error:
        print(messages.failure_line(error), file=sys.stderr)
        return messages.exit_status(error)
    files, folder_errors = expand_inputs(args.images)
    results = folder_errors + predict_files(model, files, top=args.top_k, fit=args.fit)
    # Names as the terminal can show them; JSON escapes control characters
    # itself, but not bytes the file system's encoding cannot decode.
    for result in results:
        result["path"] = messages.printable(result["path"])
    if args.json:
        print(json.dumps(results, indent=2, allow_nan=False))
    else:
        text = format_results(results)
        if text:
            print(text)
    errors = [result["error"] for result in results if "error" in result]
    for message in errors:
        print(messages.failure_line(message), file=sys.stderr)
    return messages.EXIT_FAILED if errors else messages.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
