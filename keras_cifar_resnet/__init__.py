"""ResNet18/34 on CIFAR-10 with Keras 3, on TensorFlow, PyTorch and JAX."""

from keras_cifar_resnet.backend_choice import choose_backend_if_possible
from keras_cifar_resnet.registration import register_when_keras_is_imported

# Before anything imports Keras: Keras fixes its backend on import.
choose_backend_if_possible()
# So that `keras.saving.load_model` finds `ResNet` with no custom_objects.
register_when_keras_is_imported()

__all__ = ["Augmentation", "ResNet", "ResNet18", "ResNet34", "compile_for_training"]
__version__ = "0.1.0"

# The public API imports Keras, so it loads on first use: the commands'
# `--help` and their one-line errors need no Keras.
_PUBLIC = {
    "Augmentation": "keras_cifar_resnet.data.augment",
    "ResNet": "keras_cifar_resnet.models",
    "ResNet18": "keras_cifar_resnet.models",
    "ResNet34": "keras_cifar_resnet.models",
    "compile_for_training": "keras_cifar_resnet.training.build",
}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
