"""Whole-batch augmentation: what each transform does, and that it is seeded."""

from __future__ import annotations

import numpy as np
import pytest
from keras import ops

from keras_cifar_resnet.data.augment import CUTOUT_FILL, Augmentation, random_integers
from tests.backend_subprocess import (
    BACKENDS,
    CROSS_BACKEND_SESSION,
    current_backend,
    run_only_in_session,
    run_under_backend,
)


def _images(count=16, seed=0):
    rng = np.random.default_rng(seed)
    # Strictly positive, so zero padding and cutout are recognisable.
    return rng.integers(1, 256, (count, 32, 32, 3), dtype=np.uint8)


def _augment(augmentation, images, step=0):
    return ops.convert_to_numpy(augmentation(images, step))


def test_disabled_augmentation_reports_itself():
    assert not Augmentation(crop_padding=0, flip=False, cutout_size=0).enabled
    assert Augmentation().enabled


def test_crop_is_a_shifted_window_of_the_zero_padded_image():
    images = _images()
    out = _augment(Augmentation(crop_padding=4, flip=False, seed=3), images, step=5)
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0))).astype(np.float32)
    offsets = []
    for image, result in zip(padded, out, strict=True):
        matches = [
            (dy, dx)
            for dy in range(9)
            for dx in range(9)
            if np.array_equal(image[dy : dy + 32, dx : dx + 32], result)
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    # Offsets vary from image to image.
    assert len(set(offsets)) > 4


def test_flip_mirrors_some_images_and_keeps_the_others():
    images = _images(64)
    out = _augment(Augmentation(crop_padding=0, flip=True, seed=1), images, step=2)
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images, strict=True)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 16 < sum(flipped) < 48


def test_cutout_fills_one_square_at_most_its_size_with_the_models_zero():
    images = _images()
    size = 8
    out = _augment(
        Augmentation(crop_padding=0, flip=False, cutout_size=size, seed=2), images
    )
    # Mid grey, which the model's input scaling maps to 0 (the normalised
    # data's zero, as in the Cutout paper), not black (-1).
    assert CUTOUT_FILL == 127.5 and 2 * CUTOUT_FILL / 255 - 1 == 0
    zeroed = np.all(out == CUTOUT_FILL, axis=-1)
    for mask, result, image in zip(zeroed, out, images, strict=True):
        rows, cols = np.nonzero(mask)
        assert 0 < len(rows) <= size * size
        assert rows.max() - rows.min() < size and cols.max() - cols.min() < size
        np.testing.assert_array_equal(result[~mask], image[~mask])
    # Somewhere a full square lands inside the image.
    assert (zeroed.sum(axis=(1, 2)) == size * size).any()


def test_same_seed_and_step_same_batch_different_step_different_batch():
    images = _images()
    augmentation = Augmentation(cutout_size=8, seed=7)
    first = _augment(augmentation, images, step=11)
    np.testing.assert_array_equal(first, _augment(augmentation, images, step=11))
    assert not np.array_equal(first, _augment(augmentation, images, step=12))
    other_seed = Augmentation(cutout_size=8, seed=8)
    assert not np.array_equal(first, _augment(other_seed, images, step=11))


def test_neighbouring_seeds_are_independent_streams():
    # With a key of hash(seed + step), seed s+1 at step t repeated seed s at
    # step t+1; the seed is now hashed on its own.
    for seed, step in ((0, 1), (41, 7), (1000, 0)):
        here = ops.convert_to_numpy(random_integers(64, seed + 1, step, 1, 1000))
        shifted = ops.convert_to_numpy(random_integers(64, seed, step + 1, 1, 1000))
        assert (here == shifted).mean() < 0.1


def test_a_replicas_slice_gets_the_draws_of_its_global_position():
    images = _images(16)
    augmentation = Augmentation(cutout_size=8, seed=5)
    whole = _augment(augmentation, images, step=3)
    second_half = ops.convert_to_numpy(augmentation(images[8:], 3, first_index=8))
    np.testing.assert_array_equal(second_half, whole[8:])
    # Numbered from 0 instead, the slice would repeat the first half's draws.
    assert not np.array_equal(
        ops.convert_to_numpy(augmentation(images[8:], 3)), whole[8:]
    )


def test_random_integers_are_in_range_and_roughly_uniform():
    draws = ops.convert_to_numpy(
        random_integers(9000, seed=5, step=3, draw=1, maxval=9)
    )
    assert draws.min() == 0 and draws.max() == 8
    counts = np.bincount(draws, minlength=9)
    assert counts.min() > 850 and counts.max() < 1150


def test_step_may_be_a_tensor():
    images = _images(4)
    augmentation = Augmentation(seed=1)
    as_int = _augment(augmentation, images, step=9)
    as_tensor = _augment(augmentation, images, step=ops.convert_to_tensor(9, "int64"))
    np.testing.assert_array_equal(as_int, as_tensor)


@pytest.mark.parametrize(
    "kwargs", [{"crop_padding": -1}, {"cutout_size": 2.5}, {"seed": -3}]
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="Received:"):
        Augmentation(**kwargs)


@pytest.mark.slow
def test_identical_on_every_backend(tmp_path):
    run_only_in_session(CROSS_BACKEND_SESSION, "compares every backend itself")
    images = _images(8, seed=4)
    np.save(tmp_path / "images.npy", images)
    expected = _augment(Augmentation(cutout_size=16, seed=12), images, step=1234)
    for backend in BACKENDS:
        if backend == current_backend():
            continue
        run_under_backend(
            backend,
            f"""
            import numpy as np
            from keras import ops
            from keras_cifar_resnet.data.augment import Augmentation
            images = np.load({str(tmp_path / "images.npy")!r})
            out = Augmentation(cutout_size=16, seed=12)(images, 1234)
            np.save({str(tmp_path / backend)!r} + ".npy", ops.convert_to_numpy(out))
            """,
        )
        np.testing.assert_array_equal(np.load(tmp_path / f"{backend}.npy"), expected)
