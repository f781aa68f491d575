"""Whole-batch augmentation with `keras.ops`: random crop, flip, cutout.

Randomness is counter-based: each image's draws are a hash of
`(seed, step, image index, draw)`, the image index counted over the global
batch (so data-parallel replicas draw different crops for their slices),
computed with 32-bit integer ops that wrap
identically on every backend. So the augmentation needs no random state to
thread through JAX's stateless step, is exactly the same on TensorFlow,
PyTorch and JAX, and resumes exactly from the optimizer's step counter.
"""

from __future__ import annotations

import dataclasses
import functools

from keras import ops

# Draw slots per image: one hash stream each.
_FLIP, _CROP_Y, _CROP_X, _CUTOUT_Y, _CUTOUT_X = range(5)

# Cutout's fill, in 0-255 pixels: the middle grey that the model's input
# scaling maps to 0. The Cutout paper cuts after normalisation, i.e. fills
# with the normalised data's zero; filling 0 here would be black (-1).
CUTOUT_FILL = 127.5


def _to_int32(value):
    """A uint32 constant as the int32 with the same bits."""
    return value - (1 << 32) if value >= (1 << 31) else value


def _shift_right_logical(x, bits):
    # int32 >> is arithmetic; masking off the sign-extended bits makes it
    # the logical shift the hash needs.
    return ops.bitwise_and(ops.right_shift(x, bits), (1 << (32 - bits)) - 1)


def hash32(x):
    """lowbias32 integer hash (Chris Wellons) on int32 tensors, wrap-around."""
    x = ops.bitwise_xor(x, _shift_right_logical(x, 16))
    x = ops.multiply(x, _to_int32(0x7FEB352D))
    x = ops.bitwise_xor(x, _shift_right_logical(x, 15))
    x = ops.multiply(x, _to_int32(0x846CA68B))
    return ops.bitwise_xor(x, _shift_right_logical(x, 16))


def _hash32_int(value):
    """`hash32` of a Python int, in Python: a constant folded before tracing."""
    value &= 0xFFFFFFFF
    value ^= value >> 16
    value = (value * 0x7FEB352D) & 0xFFFFFFFF
    value ^= value >> 15
    value = (value * 0x846CA68B) & 0xFFFFFFFF
    return _to_int32(value ^ (value >> 16))


def random_integers(batch_size, seed, step, draw, maxval, first_index=0):
    """One integer in [0, maxval) per image, a pure function of its inputs.

    Args:
        batch_size: int, images in the batch.
        seed: int, the run's seed.
        step: int or int tensor, the training step.
        draw: int, which draw for each image (flip, crop y, ...).
        maxval: int, exclusive upper bound (small: < 2**16).
        first_index: int or int tensor, the global index of the batch's first
            image: a data-parallel replica's offset into the global batch.
            Defaults to 0.
    """
    index = ops.add(
        ops.arange(batch_size, dtype="int32"), ops.cast(first_index, "int32")
    )
    # The seed is hashed on its own before the step is mixed in: with
    # hash(seed + step), seed s+1 at step t would repeat seed s at step t+1.
    key = hash32(ops.add(_hash32_int(seed), ops.cast(step, "int32")))
    key = hash32(ops.bitwise_xor(key, _to_int32((draw * 0x9E3779B9) & 0xFFFFFFFF)))
    bits = hash32(ops.add(ops.multiply(index, _to_int32(0x85EBCA6B)), key))
    # The top 16 bits are the best mixed; maxval < 2**16 keeps the bias tiny.
    return ops.mod(_shift_right_logical(bits, 16), maxval)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation of a whole NHWC batch.

    Args:
        crop_padding: int, pixels of zero padding before the random crop back
            to the input size; 0 turns cropping off. Defaults to 4.
        flip: bool, random horizontal flip. Defaults to True.
        cutout_size: int, side of a square filled with `CUTOUT_FILL` (mid
            grey, the model's 0) at a random centre (it may hang over the
            edge); 0 turns cutout off. Defaults to 0.
        seed: int, the stream's seed. Defaults to 0.
    """

    crop_padding: int = 4
    flip: bool = True
    cutout_size: int = 0
    seed: int = 0

    def __post_init__(self):
        for name in ("crop_padding", "cutout_size", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(
                    f"`{name}` must be a non-negative int. Received: {name}={value!r}"
                )

    @property
    def enabled(self):
        return bool(self.crop_padding or self.flip or self.cutout_size)

    def __call__(self, images, step, first_index=0):
        """Augments `images` (N, H, W, C) for training step `step`.

        `first_index` is the global index of `images[0]`: a data-parallel
        replica's offset into the global batch, so that each image gets the
        draws it would get on one device.

        Returns float32 images in the input's value range.
        """
        images = ops.cast(images, "float32")
        batch_size, height, width = (ops.shape(images)[i] for i in range(3))
        draws = functools.partial(
            random_integers, batch_size, self.seed, step, first_index=first_index
        )
        if self.crop_padding:
            images = self._random_crop(images, draws, batch_size, height, width)
        if self.flip:
            flip = draws(_FLIP, 2)
            images = ops.where(
                ops.reshape(flip, (-1, 1, 1, 1)) == 1, ops.flip(images, axis=2), images
            )
        if self.cutout_size:
            images = self._cutout(images, draws, height, width)
        return images

    def _random_crop(self, images, draws, batch_size, height, width):
        # A crop of the zero-padded image, read from the image itself: pixels
        # that fall in the padding are zeroed instead of gathered. No
        # `ops.pad`, which builds a new Keras operation on every call (a
        # fresh graph for torch.compile at every step).
        pad = self.crop_padding
        channels = ops.shape(images)[3]
        offset_y = draws(_CROP_Y, 2 * pad + 1)
        offset_x = draws(_CROP_X, 2 * pad + 1)
        rows = (
            offset_y[:, None, None]
            + ops.arange(height, dtype="int32")[None, :, None]
            - pad
        )
        cols = (
            offset_x[:, None, None]
            + ops.arange(width, dtype="int32")[None, None, :]
            - pad
        )
        inside = ops.logical_and(
            ops.logical_and(rows >= 0, rows < height),
            ops.logical_and(cols >= 0, cols < width),
        )
        # One batched gather of flat pixel indices, instead of a per-image loop
        # (or a gather of rows, then another of columns).
        pixels = ops.clip(rows, 0, height - 1) * width + ops.clip(cols, 0, width - 1)
        pixels = ops.reshape(pixels, (batch_size, height * width, 1))
        pixels = ops.broadcast_to(pixels, (batch_size, height * width, channels))
        flat = ops.reshape(images, (batch_size, -1, channels))
        cropped = ops.reshape(
            ops.take_along_axis(flat, pixels, axis=1),
            (batch_size, height, width, channels),
        )
        return ops.where(inside[:, :, :, None], cropped, 0.0)

    def _cutout(self, images, draws, height, width):
        half = self.cutout_size // 2
        centre_y = draws(_CUTOUT_Y, height)
        centre_x = draws(_CUTOUT_X, width)
        rows = ops.arange(height, dtype="int32")[None, :] - centre_y[:, None]
        cols = ops.arange(width, dtype="int32")[None, :] - centre_x[:, None]
        inside_rows = ops.logical_and(rows >= -half, rows < self.cutout_size - half)
        inside_cols = ops.logical_and(cols >= -half, cols < self.cutout_size - half)
        inside = ops.logical_and(inside_rows[:, :, None], inside_cols[:, None, :])
        return ops.where(inside[:, :, :, None], CUTOUT_FILL, images)
