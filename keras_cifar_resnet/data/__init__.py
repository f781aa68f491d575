"""CIFAR-10 and the batches a model reads: loading, splits, augmentation, checks.

`from keras_cifar_resnet.data import load_cifar10` is the public path (the
loader itself lives in `keras_cifar_resnet.data.cifar10`); numpy only.
"""

from keras_cifar_resnet.data.cifar10 import CLASS_NAMES, DataError, load_cifar10

__all__ = ["CLASS_NAMES", "DataError", "load_cifar10"]
