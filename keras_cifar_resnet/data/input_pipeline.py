"""The fit-time input pipeline: from loaded arrays to the batches `fit` reads.

`prepare_data(config)` loads CIFAR-10 (`keras_cifar_resnet.data.cifar10`) or makes
synthetic data of the same structure, holds out the validation images
(`split_validation`) and trims the training set. `TrainingBatches` feeds
uint8 batches to `Model.fit` in an order that is a pure function of
`(seed, epoch, batch index)`, with numpy only, so JAX and torch runs never
import TensorFlow; `SkipBatches` resumes one mid-epoch; `fit_input` hands
them to TensorFlow as a tf.data pipeline. Augmentation is not
done here: the model's train step applies `keras_cifar_resnet.Augmentation`
to whole batches on the device.
"""

from __future__ import annotations

import dataclasses
import sys
import threading

import keras
import numpy as np

from keras_cifar_resnet.data.cifar10 import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    load_cifar10,
)
from keras_cifar_resnet.data.input_checks import single_class_warning
from keras_cifar_resnet.errors import DistributionError, UsageError

# Batches tf.data may fetch ahead of the epoch fit() has begun.
_PREFETCH_SLACK = 64
# Real CIFAR-10 sizes, for synthetic data of the same shape.
_TRAIN_SIZE = 50_000
_TEST_SIZE = 10_000


def split_validation(images, labels, validation_size=5000, seed=0):
    """Holds out a fixed, seeded subset of the training set for model selection.

    The same `(seed, validation_size)` on the same training set always holds
    out the same images, so checkpoints are chosen on data the model never
    trained on, and the test set is kept for the final figure only.

    Args:
        images: array (N, ...), the training images.
        labels: array (N,), their labels.
        validation_size: int in [0, N), images to hold out. Defaults to 5000.
        seed: int, picks which images. Defaults to 0.

    Returns:
        `((train_images, train_labels), (val_images, val_labels))`, each part in
        the original order; the validation arrays are empty for size 0.

    Raises:
        ValueError: for a size that is negative, not an int, or leaves no
            training images, or for images and labels of different lengths.
    """
    count = len(images)
    if len(labels) != count:
        raise ValueError(
            f"`images` and `labels` must have the same length. Received: "
            f"{count} images and {len(labels)} labels"
        )
    if isinstance(validation_size, bool) or not isinstance(
        validation_size, (int, np.integer)
    ):
        raise ValueError(
            f"`validation_size` must be an int. Received: {validation_size=!r}"
        )
    if not 0 <= validation_size < count:
        raise ValueError(
            f"`validation_size` must be in [0, {count}) for {count} training "
            f"images. Received: {validation_size=}"
        )
    order = np.random.default_rng(seed).permutation(count)
    held_out = np.sort(order[:validation_size])
    kept = np.sort(order[validation_size:])
    return (images[kept], labels[kept]), (images[held_out], labels[held_out])


def synthetic_cifar10(num_train=50_000, num_test=10_000, seed=0):
    """Random images and labels shaped like CIFAR-10, for smoke tests and timing.

    Args:
        num_train: int, training images. Defaults to 50,000.
        num_test: int, test images. Defaults to 10,000.
        seed: int. Defaults to 0.

    Returns:
        The structure `load_cifar10` returns: uint8 (N, 32, 32, 3) images and
        int64 (N,) labels.
    """
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, np.integer))
            or value < 0
        ):
            raise ValueError(
                f"`{name}` must be an int >= 0. Received: {name}={value!r}"
            )
    rng = np.random.default_rng(seed)

    def part(count):
        images = rng.integers(0, 256, (count, *IMAGE_SHAPE), dtype=np.uint8)
        return images, rng.integers(0, NUM_CLASSES, count, dtype=np.int64)

    return part(num_train), part(num_test)


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled uint8 training batches for `Model.fit`, reproducible per epoch.

    Batch `i` is a pure function of `(seed, epoch, i)`: epoch `e` visits the
    images in the order `numpy.random.default_rng([seed, e]).permutation(N)`.
    So a run resumed at epoch `k` (`start_epoch=k`) trains on exactly the
    batches the uninterrupted run would have, and prefetching threads (tf.data
    under TensorFlow) cannot see a half-updated state, because there is none.

    The dataset spans all epochs: batch `i` belongs to epoch
    `start_epoch + i // steps_per_epoch`. Keras therefore needs
    `steps_per_epoch` (and `shuffle=False`: the order is already shuffled and
    must not be re-shuffled by Keras):

    ```python
    batches = TrainingBatches(x_train, y_train, batch_size=128, seed=0,
                              start_epoch=initial_epoch)
    model.fit(batches, epochs=epochs, initial_epoch=initial_epoch,
              steps_per_epoch=batches.steps_per_epoch, shuffle=False)
    ```

    Batches are the stored uint8 pixels and int64 labels: four times less to
    copy to the device than float32, and the model's own train step scales
    and augments them there. Only numpy is used, so no backend imports
    TensorFlow for the input. One worker: a batch is one fancy-indexing copy
    (under 0.1 ms for 128 images), which threads would not speed up.

    Two misuses of `fit` that would silently spoil a run raise `ValueError`
    instead: no `steps_per_epoch` (the first epoch would never end), and a
    second `fit` on the same object without setting `start_epoch` to its
    `initial_epoch` (it would repeat the first epoch's batches).

    Args:
        images: uint8 array (N, 32, 32, 3).
        labels: int array (N,).
        batch_size: int. Defaults to 128.
        seed: int, picks the order of every epoch. Defaults to 0.
        start_epoch: int, the epoch of batch 0 (the `initial_epoch` of a
            resumed `fit`). Defaults to 0.
        drop_remainder: bool, whether to drop the last `N % batch_size` images
            of each epoch's order (different images each epoch), so that every
            batch has the same shape and compiled steps are not traced again.
            Defaults to True.
        max_queue_size: int, batches Keras may hold ready. Defaults to 10.
    """

    def __init__(
        self,
        images,
        labels,
        batch_size=128,
        *,
        seed=0,
        start_epoch=0,
        drop_remainder=True,
        max_queue_size=10,
    ):
        super().__init__(
            workers=1, use_multiprocessing=False, max_queue_size=max_queue_size
        )
        if len(images) != len(labels):
            raise ValueError(
                f"`images` and `labels` must have the same length. Received: "
                f"{len(images)} images and {len(labels)} labels"
            )
        if isinstance(batch_size, bool) or not isinstance(
            batch_size, (int, np.integer)
        ):
            raise ValueError(f"`batch_size` must be an int. Received: {batch_size=!r}")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1. Received: {batch_size=}")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.start_epoch = start_epoch
        self.drop_remainder = bool(drop_remainder)
        count = len(images)
        if self.drop_remainder:
            self.steps_per_epoch = count // self.batch_size
        else:
            self.steps_per_epoch = -(-count // self.batch_size)
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"No batch to make: {count} images, `batch_size`={self.batch_size}, "
                f"`drop_remainder`={self.drop_remainder}. A full batch needs at "
                "least `batch_size` images (or drop_remainder=False)."
            )
        self._order_cache = (None, None)
        self._lock = threading.Lock()

    @property
    def start_epoch(self):
        """The epoch of batch 0; set it to `initial_epoch` before reusing in `fit`."""
        return self._start_epoch

    @start_epoch.setter
    def start_epoch(self, epoch):
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)):
            raise ValueError(f"`start_epoch` must be an int. Received: {epoch!r}")
        if epoch < 0:
            raise ValueError(f"`start_epoch` must be >= 0. Received: {epoch}")
        self._start_epoch = int(epoch)
        # Epochs `fit` has begun since; only for the misuse checks in __getitem__.
        self._epochs_begun = 0

    def on_epoch_begin(self):
        self._epochs_begun += 1

    @property
    def num_batches(self):
        # None tells Keras the dataset does not end with an epoch; fit's
        # `steps_per_epoch` marks the epochs, and indices keep counting.
        return None

    def epoch_order(self, epoch):
        """The permutation of the images that epoch `epoch` visits."""
        with self._lock:
            cached_epoch, order = self._order_cache
            if cached_epoch != epoch:
                order = np.random.default_rng([self.seed, epoch]).permutation(
                    len(self.images)
                )
                self._order_cache = (epoch, order)
            return order

    def locate(self, index):
        """(epoch, batch within the epoch) of overall batch `index`."""
        if index < 0:
            raise IndexError(f"batch index must be >= 0. Received: {index}")
        epoch, step = divmod(int(index), self.steps_per_epoch)
        return self.start_epoch + epoch, step

    def batch_indices(self, index):
        """The positions in `images` of overall batch `index`'s images."""
        epoch, step = self.locate(index)
        chosen = self.epoch_order(epoch)[
            step * self.batch_size : (step + 1) * self.batch_size
        ]
        # Sorted reads walk the array forwards (faster); the batch's order
        # within itself does not matter to the gradient.
        return np.sort(chosen)

    def __getitem__(self, index):
        self._check_fit_usage(index)
        chosen = self.batch_indices(index)
        return self.images[chosen], self.labels[chosen]

    def _check_fit_usage(self, index):
        """Turns the two ways `fit` can misuse an endless dataset into errors.

        Within one `fit`, batch `index` belongs to the epoch `fit` has begun,
        or a little ahead of it (tf.data prefetches). Far ahead means `fit`
        got no `steps_per_epoch` and its first epoch would never end; behind
        means a second `fit` restarted the indices at 0 on this object, which
        would repeat `start_epoch`'s batches.
        """
        begun = self._epochs_begun
        if not begun:  # not inside fit: read freely
            return
        if index >= begun * self.steps_per_epoch + _PREFETCH_SLACK:
            raise ValueError(
                f"TrainingBatches was asked for batch {index} in epoch {begun} of "
                "fit(): fit() needs `steps_per_epoch=batches.steps_per_epoch` "
                f"({self.steps_per_epoch}), else its first epoch never ends"
            )
        if index < (begun - 1) * self.steps_per_epoch:
            raise ValueError(
                f"TrainingBatches was asked for batch {index} after {begun} epochs "
                "began: it is being reused by another fit(), which would repeat "
                "its first epoch's batches; set `batches.start_epoch = "
                "initial_epoch` before each fit() (or make a new one)"
            )


class SkipBatches(keras.utils.PyDataset):
    """`batches` without its first `skip` batches: the rest of a resumed epoch."""

    def __init__(self, batches, skip):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batches = batches
        self.skip = skip

    @property
    def num_batches(self):
        return None

    @property
    def images(self):
        return self.batches.images

    @property
    def labels(self):
        return self.batches.labels

    def batch_indices(self, index):
        return self.batches.batch_indices(index + self.skip)

    def __getitem__(self, index):
        return self.batches[index + self.skip]


def fit_input(batches, steps):
    """What `Model.fit` reads for the first `steps` batches of `batches`.

    Under TensorFlow, a tf.data pipeline that gathers each batch by its
    indices (`batches.batch_indices`), so the batches are the same. Keras
    hands a PyDataset to TensorFlow through `tf.data.Dataset.from_generator`,
    and with that in the pipeline every training step pages in its tensors
    anew: on a CPU, steps took twice as long. The other backends read the
    PyDataset directly.

    Args:
        batches: `TrainingBatches` or `SkipBatches`.
        steps: int, the batches `fit` will read (its epochs times
            `steps_per_epoch`).

    Returns:
        A `tf.data.Dataset` under TensorFlow, else `batches`.
    """
    if keras.backend.backend() != "tensorflow":
        return batches
    import tensorflow as tf

    # int32 positions: a 100-epoch run's table is under 20 MB.
    table = np.stack([batches.batch_indices(i) for i in range(steps)]).astype(
        np.int32
    )
    images = tf.constant(batches.images)
    labels = tf.constant(batches.labels)
    return (
        tf.data.Dataset.from_tensor_slices(table)
        .map(lambda chosen: (tf.gather(images, chosen), tf.gather(labels, chosen)))
        .prefetch(tf.data.AUTOTUNE)
    )


@dataclasses.dataclass
class Datasets:
    """The run's arrays: uint8 NHWC images, int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def prepare_data(config):
    """Loads (or synthesises) CIFAR-10, holds out validation, trims the training set.

    Raises:
        DataError: the data cannot be found or read.
        UsageError: a validation set as large as the data (the batch size
            is judged with the devices, in `training.batch_plan`).
    """
    if config.synthetic:
        extra = config.max_train_examples or _TRAIN_SIZE - config.validation_size
        (x_train, y_train), (x_test, y_test) = synthetic_cifar10(
            num_train=max(extra, 1) + config.validation_size,
            num_test=min(_TEST_SIZE, config.max_train_examples or _TEST_SIZE),
            seed=config.seed,
        )
    else:
        (x_train, y_train), (x_test, y_test) = load_cifar10(config.data_dir)
    if config.validation_size >= len(x_train):
        raise UsageError(
            f"--validation-size must be below the {len(x_train)} training images, "
            f"got {config.validation_size}"
        )
    (x_train, y_train), (x_val, y_val) = split_validation(
        x_train, y_train, config.validation_size, seed=config.seed
    )
    if config.max_train_examples is not None:
        x_train = x_train[: config.max_train_examples]
        y_train = y_train[: config.max_train_examples]
    warning = single_class_warning(y_train)
    if warning is not None:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return Datasets(x_train, y_train, x_val, y_val, x_test, y_test)


class ProcessShard(keras.utils.PyDataset):
    """Slice `index` of `count` of every batch of `batches`: one process's part.

    Process `i` gets images `[i * b, (i + 1) * b)` of each global batch, with
    `b = global batch / count`, so together the processes see exactly the
    global batch a single device would.

    Args:
        batches: a PyDataset yielding `(images, labels)` global batches.
        index: int, this process.
        count: int, the processes sharing each batch.
    """

    def __init__(self, batches, index, count):
        super().__init__(workers=1, use_multiprocessing=False)
        self.batches = batches
        self.index = index
        self.count = count

    @property
    def num_batches(self):
        return self.batches.num_batches

    def on_epoch_begin(self):
        self.batches.on_epoch_begin()

    def on_epoch_end(self):
        self.batches.on_epoch_end()

    def __getitem__(self, position):
        images, labels = self.batches[position]
        size, remainder = divmod(len(images), self.count)
        if remainder:
            raise DistributionError(
                f"a batch of {len(images)} images does not split over {self.count} "
                "processes"
            )
        part = slice(self.index * size, (self.index + 1) * size)
        return images[part], labels[part]
