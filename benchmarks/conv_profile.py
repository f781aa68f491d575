"""Where a CPU training step's time goes: ResNet18's convolutions, per framework.

Times the forward and backward pass (gradients for the input and the kernel)
of every convolution shape in ResNet18 at one batch size, alone, in JAX
(XLA:CPU, jitted) and in PyTorch (oneDNN, channels_last as Keras's torch
backend runs it), and sums them with each shape's count in the network. Set
beside the whole training step from the benchmark table, the sums say how
much of a backend's step is convolution, and whether the gap between
backends is in the convolutions or elsewhere.

    python benchmarks/conv_profile.py --batch-size 128 --rounds 5

XLA_FLAGS in the environment apply to the JAX half, so a flag can be
judged on the convolutions alone; `--dtype bfloat16` shows whether a
framework's convolutions gain from bf16 on this CPU. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# (input channels, output channels, kernel, stride, input side, count) of
# ResNet18 at width 1 on 32x32 images: the stem's valid 3x3 gives 30x30.
RESNET18_CONVOLUTIONS = (
    (3, 64, 3, 1, 32, 1),  # stem (valid)
    (64, 64, 3, 1, 30, 4),  # stage 1
    (64, 128, 3, 2, 30, 1),  # stage 2, first conv
    (64, 128, 1, 2, 30, 1),  # stage 2 shortcut
    (128, 128, 3, 1, 15, 3),
    (128, 256, 3, 2, 15, 1),  # stage 3
    (128, 256, 1, 2, 15, 1),
    (256, 256, 3, 1, 8, 3),
    (256, 512, 3, 2, 8, 1),  # stage 4
    (256, 512, 1, 2, 8, 1),
    (512, 512, 3, 1, 4, 3),
)


def _median_seconds(function, rounds):
    function()  # compile / warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def jax_convolution(batch, cin, cout, kernel, stride, side, stem, dtype):
    import jax
    import jax.numpy as jnp

    padding = "VALID" if stem else "SAME"
    key = jax.random.PRNGKey(0)
    images = jax.random.normal(key, (batch, side, side, cin), dtype)
    weights = jax.random.normal(key, (kernel, kernel, cin, cout), dtype)

    def loss(images, weights):
        out = jax.lax.conv_general_dilated(
            images,
            weights,
            (stride, stride),
            padding,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        return jnp.sum(jnp.square(out.astype(jnp.float32)))

    step = jax.jit(jax.grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(step(images, weights))


def torch_convolution(batch, cin, cout, kernel, stride, side, stem, dtype):
    import torch

    dtype = getattr(torch, dtype)
    padding = 0 if stem or kernel == 1 else 1
    images = torch.randn(batch, cin, side, side, dtype=dtype).to(
        memory_format=torch.channels_last
    )
    images.requires_grad_(True)
    weights = torch.randn(cout, cin, kernel, kernel, dtype=dtype, requires_grad=True)

    def step():
        out = torch.nn.functional.conv2d(
            images, weights, stride=stride, padding=padding
        )
        out.float().square().sum().backward()
        images.grad = weights.grad = None

    return step


FRAMEWORKS = {"jax": jax_convolution, "torch": torch_convolution}


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python benchmarks/conv_profile.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--batch-size", type=int, default=128, help="default 128")
    parser.add_argument(
        "--rounds", type=int, default=5, help="timed calls per shape (median); 5"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="of the images, kernels and convolutions; default float32",
    )
    parser.add_argument(
        "--frameworks",
        default="jax,torch",
        help="comma-separated, from jax,torch; default both",
    )
    args = parser.parse_args(argv)
    frameworks = [f for f in args.frameworks.split(",") if f]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown or args.batch_size < 1 or args.rounds < 1:
        parser.error(
            f"--frameworks must be among {sorted(FRAMEWORKS)} and --batch-size, "
            f"--rounds positive. Received: {args}"
        )
    totals = dict.fromkeys(frameworks, 0.0)
    print(
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}, batch {args.batch_size}, "
        f"{args.dtype}"
    )
    print(
        "| conv (in, out, k, stride, side) | count | "
        + " | ".join(f"{f} ms" for f in frameworks)
        + " |"
    )
    print("|---|---:|" + "---:|" * len(frameworks))
    for index, (cin, cout, kernel, stride, side, count) in enumerate(
        RESNET18_CONVOLUTIONS
    ):
        cells = []
        for framework in frameworks:
            step = FRAMEWORKS[framework](
                args.batch_size,
                cin,
                cout,
                kernel,
                stride,
                side,
                stem=index == 0,
                dtype=args.dtype,
            )
            seconds = _median_seconds(step, args.rounds)
            totals[framework] += seconds * count
            cells.append(f"{seconds * 1e3:.1f}")
        print(
            f"| {cin}, {cout}, {kernel}, {stride}, {side} | {count} | "
            + " | ".join(cells)
            + " |",
            flush=True,
        )
    print(
        "| **all convolutions, forward + backward** | "
        + str(sum(shape[-1] for shape in RESNET18_CONVOLUTIONS))
        + " | "
        + " | ".join(f"**{totals[f] * 1e3:.0f}**" for f in frameworks)
        + " |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
