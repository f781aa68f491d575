"""The network's parts: its layers and its initializers.

The network itself is `keras_cifar_resnet.models`.
"""
