"""What feeding a batch costs next to a training step, on the current backend.

Usage (from the repository root; the backend comes from KERAS_BACKEND):

    KERAS_BACKEND=torch python benchmarks/input_pipeline.py
    KERAS_BACKEND=jax python benchmarks/input_pipeline.py --data-dir DIR --model tiny

Per batch of `--batch-size` images it times, each as the median of
`--repeats` runs:

- index: `TrainingBatches.__getitem__`, the shuffled gather of uint8 images
  and labels from the training set in numpy (what `fit` asks for each step);
- transfer: `keras.ops.convert_to_tensor` of both onto the backend's default
  device, waited for;
- augment: the recipe's `Augmentation` (benchmarks/harness.py) on that batch,
  run eagerly and copied back to the host, so an upper bound of what it adds
  inside the compiled step.

and one training step of `--model` (the package's compiled step, as
benchmarks/harness.py runs it: the same recipe, augmentation included), the
mean of `--steps` steps after a first one that builds and compiles.

The feed (index + transfer) happens outside the step, so its share of the
step is the figure that says whether the input pipeline slows training.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import keras
import numpy as np
from harness import AUGMENTATION, KerasTrainStep

from keras_cifar_resnet.data.cifar10 import DataError, load_cifar10
from keras_cifar_resnet.data.input_pipeline import TrainingBatches, synthetic_cifar10


def _wait(tensor):
    # JAX dispatches asynchronously; torch and TensorFlow on CPU return done.
    if hasattr(tensor, "block_until_ready"):
        tensor.block_until_ready()
    return tensor


def _median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_feed(images, labels, batch_size, repeats, seed=0):
    """Median seconds of index, transfer and augment for one batch."""
    batches = TrainingBatches(images, labels, batch_size, seed=seed)
    index = iter(range(10**9))
    index_seconds = _median_seconds(lambda: batches[next(index)], repeats)

    batch_images, batch_labels = batches[0]

    def transfer():
        _wait(keras.ops.convert_to_tensor(batch_images))
        _wait(keras.ops.convert_to_tensor(batch_labels))

    transfer_seconds = _median_seconds(transfer, repeats)

    device_images = _wait(keras.ops.convert_to_tensor(batch_images))
    step = iter(range(10**9))

    def augment():
        keras.ops.convert_to_numpy(AUGMENTATION(device_images, next(step)))

    augment()  # first call traces/dispatches caches
    augment_seconds = _median_seconds(augment, repeats)
    return index_seconds, transfer_seconds, augment_seconds


def measure_step(model_name, batch_size, steps):
    """(first step seconds, mean seconds of `steps` further steps)."""
    step = KerasTrainStep(model_name, batch_size, "float32")
    first = step.first_step()
    start = time.perf_counter()
    step.run(steps)
    return first, (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=128, help="images per batch")
    parser.add_argument(
        "--repeats", type=int, default=50, help="timed runs of each feed part"
    )
    parser.add_argument(
        "--model",
        default="resnet18",
        choices=["resnet18", "resnet34", "tiny", "none"],
        help="network whose training step the feed is compared with; none skips it",
    )
    parser.add_argument(
        "--steps", type=int, default=3, help="timed training steps after the first"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="real CIFAR-10 (any form load_cifar10 reads); default: random images "
        "of the real size (50,000), which cost the same to feed",
    )
    args = parser.parse_args(argv)
    for name in ("batch_size", "repeats", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")

    try:
        if args.data_dir:
            (images, labels), _ = load_cifar10(args.data_dir)
        else:
            (images, labels), _ = synthetic_cifar10(num_test=0)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1

    backend = keras.backend.backend()
    index, transfer, augment = measure_feed(
        images, labels, args.batch_size, args.repeats
    )
    feed = index + transfer
    print(f"backend {backend}, batch {args.batch_size}, {len(images):,} images")
    print(f"  index     {index * 1e3:8.3f} ms  (TrainingBatches.__getitem__)")
    print(f"  transfer  {transfer * 1e3:8.3f} ms  (convert_to_tensor, images + labels)")
    print(f"  feed      {feed * 1e3:8.3f} ms  (index + transfer, outside the step)")
    print(f"  augment   {augment * 1e3:8.3f} ms  ({AUGMENTATION}, eager)")
    if args.model == "none":
        return 0
    first, step = measure_step(args.model, args.batch_size, args.steps)
    print(
        f"  step      {step * 1e3:8.1f} ms  ({args.model}, mean of {args.steps}; "
        f"first step with compilation {first:.1f} s)"
    )
    print(
        f"feed = {100 * feed / step:.2g}% of a {args.model} step; "
        f"feed + augment = {100 * (feed + augment) / step:.2g}%"
    )
    return 0


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    sys.exit(main())
