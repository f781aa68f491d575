"""The network's parts: its layers, its initializers and its size estimate.

The network itself is `keras_cifar_resnet.models`.
"""
