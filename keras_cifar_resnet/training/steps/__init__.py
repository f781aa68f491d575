"""The one place that picks the backend's train-step class.

Each backend's gradient mechanics live in a module of the same shape
(`jax.py`, `tensorflow.py`, `torch.py`); only the chosen one is imported, so a
JAX or torch process never imports TensorFlow.
"""

from __future__ import annotations

import importlib

_TRAIN_STEP_CLASSES = {
    "jax": ("keras_cifar_resnet.training.steps.jax", "JAXTrainStep"),
    "tensorflow": (
        "keras_cifar_resnet.training.steps.tensorflow",
        "TensorFlowTrainStep",
    ),
    "torch": ("keras_cifar_resnet.training.steps.torch", "TorchTrainStep"),
}


def backend_train_step_class(backend=None):
    """The train-step mixin for `backend` (default: Keras's current backend).

    Raises:
        ValueError: for a backend without a train step (for example `numpy`,
            which cannot train).
    """
    # Keras imported here, not at the top: importing this package first must
    # not start Keras's import, whose class registration imports `models`,
    # which needs this function (registration.py).
    import keras

    backend = backend or keras.backend.backend()
    if backend not in _TRAIN_STEP_CLASSES:
        raise ValueError(
            "keras_cifar_resnet trains on the backends "
            f"{sorted(_TRAIN_STEP_CLASSES)}; set KERAS_BACKEND to one of them. "
            f"Received: backend={backend!r}"
        )
    module_name, class_name = _TRAIN_STEP_CLASSES[backend]
    return getattr(importlib.import_module(module_name), class_name)
