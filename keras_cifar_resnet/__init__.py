"""ResNet18/34 on CIFAR-10 with Keras 3, on TensorFlow, PyTorch and JAX."""

from keras_cifar_resnet.augment import Augmentation
from keras_cifar_resnet.models import ResNet, ResNet18, ResNet34

__all__ = ["Augmentation", "ResNet", "ResNet18", "ResNet34"]
__version__ = "0.1.0"
