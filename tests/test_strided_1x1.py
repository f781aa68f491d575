"""The strided 1x1 shortcut convolution, computed without TensorFlow's faulty kernel.

TensorFlow 2.21's oneDNN gradient of a strided 1x1 convolution's kernel
(`Conv2DBackpropFilter`) corrupts the heap for an odd batch size on
AVX-512/AMX CPUs, which aborts `fit` with "double free or corruption"
(docs/errors.md). The package's `Conv2D` takes every stride-th pixel first
and convolves unstrided there: the same result, another kernel.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cifar_resnet.models import TinyResNet
from keras_cifar_resnet.network.conv import Conv2D
from tests.backend_subprocess import current_backend, run_under_backend


@pytest.mark.parametrize("batch", [1, 3, 4])
def test_a_strided_1x1_convolution_is_keras_s(batch):
    reference = keras.layers.Conv2D(8, 1, strides=2)
    layer = Conv2D(8, 1, strides=2)
    shape = (batch, 30, 30, 4)
    reference.build(shape)
    layer.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=v.shape).astype("float32") for v in reference.weights]
    reference.set_weights(weights)
    layer.set_weights(weights)
    images = rng.normal(size=shape).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(images)),
        keras.ops.convert_to_numpy(reference(images)),
        atol=1e-5,
    )


def test_tensorflow_s_training_step_has_no_strided_1x1_kernel_gradient():
    if current_backend() != "tensorflow":
        pytest.skip("TensorFlow's graph only")
    import tensorflow as tf

    model = TinyResNet()
    images = tf.zeros((3, 32, 32, 3))

    @tf.function
    def gradients(images):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(images, training=True))
        return tape.gradient(loss, model.trainable_variables)

    graph = gradients.get_concrete_function(images).graph
    kernel_gradients = [
        op for op in graph.get_operations() if op.type == "Conv2DBackpropFilter"
    ]
    assert kernel_gradients, "no convolution gradients found: the check saw nothing"
    for op in kernel_gradients:
        kernel_size = op.outputs[0].shape.as_list()[:2]
        strides = list(op.get_attr("strides"))
        assert not (kernel_size == [1, 1] and strides != [1, 1, 1, 1]), op.name


@pytest.mark.slow
def test_fit_with_an_odd_and_a_ragged_batch_under_tensorflow_completes():
    """In a fresh process: the fault kills the process, not a test."""
    pytest.importorskip("tensorflow", reason="TensorFlow is not installed")
    output = run_under_backend(
        "tensorflow",
        """
        import numpy as np
        from keras_cifar_resnet import compile_for_training
        from keras_cifar_resnet.models import TinyResNet

        images = np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3), np.uint8)
        labels = np.arange(64) % 10
        model = compile_for_training(
            TinyResNet(), steps_per_epoch=4, epochs=2, batch_size=21
        )
        model.fit(images, labels, batch_size=21, epochs=2, verbose=0)
        print("fitted")
        """,
    )
    assert "fitted" in output
