"""CIFAR-10 and the batches a model reads: loading, splits, augmentation, checks."""
