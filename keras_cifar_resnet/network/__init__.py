"""The network: the ResNet, its layers, its initializers and its size."""
