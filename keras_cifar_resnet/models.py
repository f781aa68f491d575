"""The network's former path, kept so scripts importing it keep working.

The network lives in `keras_cifar_resnet.network.models`.
"""

from keras_cifar_resnet.network.models import (  # noqa: F401
    ARCHITECTURES,
    BLOCK_TYPES,
    BLOCKS,
    MODELS,
    ResNet,
    ResNet18,
    ResNet34,
    TinyResNet,
    architecture,
    basic_block,
)
