"""Export for serving: which backend writes which format, and the input it takes.

`ResNet.export` (Keras's `model.export`) writes artifacts whose input is
what the model takes: raw uint8 pixels `(N, 32, 32, 3)`. Keras 3.15 writes
each format from some backends only; the others are refused with one line
naming a backend that can, before Keras starts (and fails partway).
"""

from __future__ import annotations

# Keras 3.15.1: a SavedModel from torch fails inside Keras's torch.export
# step (a dynamic_shapes structure mismatch); ONNX from JAX needs jax2onnx,
# which has been seen to write the stem's stride-1 "same" max-pool as a
# 4-D MaxPool kernel that onnxruntime rejects.
BACKENDS_THAT_EXPORT = {
    "tf_saved_model": ("tensorflow", "jax"),
    "onnx": ("tensorflow", "torch"),
}


class ExportUnavailableError(ValueError):
    """This backend cannot export this format; the message is one line."""


def keras_exports_signatures():
    """Whether this Keras's `Model.export` takes an `input_signature`.

    The uint8 signature goes through it; Keras 3.6's `export` has none.
    """
    import inspect

    import keras

    return "input_signature" in inspect.signature(keras.Model.export).parameters


def check_signature_support():
    """Raises `ExportUnavailableError` on a Keras that cannot take the uint8 input."""
    if not keras_exports_signatures():
        import keras

        raise ExportUnavailableError(
            f"Keras {keras.__version__}'s Model.export takes no input_signature, "
            "so it cannot export the model's uint8 input; upgrade Keras "
            "(pip install -U keras; 3.15 can)"
        )


def check_export(export_format, backend):
    """Raises `ExportUnavailableError` unless `backend` exports `export_format`."""
    able = BACKENDS_THAT_EXPORT.get(export_format)
    if able is None or backend in able:
        return  # a format of Keras's own that is not measured here: Keras says
    raise ExportUnavailableError(
        f"format={export_format!r} cannot be exported under the {backend} backend "
        f"with Keras; export it under {' or '.join(able)} (set KERAS_BACKEND; a "
        f".keras file loads under any backend). Received: format={export_format!r}"
    )


def image_signature(image_shape):
    """The input signature of raw uint8 images of `image_shape` (H, W, C)."""
    import keras

    return [keras.InputSpec(shape=(None, *image_shape), dtype="uint8")]
