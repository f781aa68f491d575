"""Export for serving: uint8 input, the same logits as predict, clear refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.serving import (
    BACKENDS_THAT_EXPORT,
    ExportUnavailableError,
    check_export,
    keras_exports_signatures,
)
from tests.backend_subprocess import current_backend

# What each format's runtime needs beside the backend (skipped if missing).
RUNTIME = {"tf_saved_model": ("tensorflow",), "onnx": ("onnxruntime", "onnx")}


def _serve(export_format, path, images):
    if export_format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
        (signature,) = session.get_inputs()
        assert signature.type == "tensor(uint8)" and signature.shape[1:] == [32, 32, 3]
        return session.run(None, {signature.name: images})[0]
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    (spec,) = served.serve.input_signature
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    return served.serve(images).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("export_format", sorted(BACKENDS_THAT_EXPORT))
def test_export_takes_uint8_and_serves_what_predict_gives(export_format, tmp_path):
    backend = current_backend()
    path = tmp_path / ("model.onnx" if export_format == "onnx" else "saved_model")
    model = TinyResNet()
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    model(images, training=True)  # BatchNorm statistics of its own
    if backend not in BACKENDS_THAT_EXPORT[export_format]:
        with pytest.raises(ExportUnavailableError) as refusal:
            model.export(path, format=export_format)
        message = str(refusal.value)
        assert "\n" not in message and backend in message
        assert all(b in message for b in BACKENDS_THAT_EXPORT[export_format])
        assert not path.exists()
        return
    if not keras_exports_signatures():
        with pytest.raises(ExportUnavailableError, match="takes no input_signature"):
            model.export(path, format=export_format)
        return
    for module in RUNTIME[export_format]:
        pytest.importorskip(module, reason=f"{module} is not installed")
    if export_format == "onnx" and backend == "tensorflow":
        pytest.importorskip("tf2onnx", reason="tf2onnx is not installed")
    model.export(path, format=export_format, verbose=False)
    served = _serve(export_format, path, images)
    np.testing.assert_allclose(served, model.predict(images, verbose=0), atol=1e-4)


def test_the_table_refuses_only_what_it_names():
    check_export("tf_saved_model", "tensorflow")
    check_export("litert", "torch")  # not measured here: Keras answers
    with pytest.raises(
        ExportUnavailableError, match="export it under tensorflow or jax"
    ):
        check_export("tf_saved_model", "torch")
    with pytest.raises(
        ExportUnavailableError, match="export it under tensorflow or torch"
    ):
        check_export("onnx", "jax")


def test_a_given_signature_is_kept(tmp_path):
    if current_backend() not in BACKENDS_THAT_EXPORT["tf_saved_model"]:
        pytest.skip("this backend does not export a SavedModel")
    tf = pytest.importorskip("tensorflow")
    if not keras_exports_signatures():
        pytest.skip("this Keras's Model.export takes no input_signature")
    model = TinyResNet()
    spec = [keras.InputSpec(shape=(None, 32, 32, 3), dtype="float32")]
    model.export(tmp_path / "float", input_signature=spec, verbose=False)
    (served,) = tf.saved_model.load(str(tmp_path / "float")).serve.input_signature
    assert served.dtype == tf.float32
