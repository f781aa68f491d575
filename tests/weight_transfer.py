"""Moving weights between a model of the package's fused layers and one of Keras's."""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_cifar_resnet.models import TinyResNet


def trained_tiny_resnet(**options):
    """(a TinyResNet with `options` after one step, the images it saw).

    Trained, so that inference depends on BatchNorm's moving statistics.
    """
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    model = TinyResNet(**options)
    model.compile(optimizer="sgd")
    model.fit(images, np.arange(4) % 10, epochs=1, batch_size=4, verbose=0)
    return model, images


def assert_same_predictions(source, target, images):
    np.testing.assert_allclose(
        ops.convert_to_numpy(target.predict(images, verbose=0)),
        ops.convert_to_numpy(source.predict(images, verbose=0)),
        rtol=1e-5,
        atol=1e-5,
    )
