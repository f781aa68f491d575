"""Training throughput and accuracy per backend, beside plain PyTorch.

Run from the repository root: `python -m benchmarks.<module>` (see README.md).
"""
