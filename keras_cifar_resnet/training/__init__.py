"""A training run: the loop, its callbacks, checkpoints, run folder and devices."""
