"""The GPU run within a wall-clock budget (`bash benchmarks/gpu/run.sh`)."""
