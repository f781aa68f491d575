"""What every backend's train step shares, written once with `keras.ops`.

The loss (softmax cross-entropy on logits with optional label smoothing),
weight decay as an L2 term, augmentation and the metrics are here; the
per-backend modules only differ in how they take gradients and apply them.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

# Modules, not names: Keras's first import may register the package's classes
# while one of these is still initializing (registration.py).
from keras_cifar_resnet.data import augment, input_checks

# Keras's compile settings that `compile` refuses: the model computes them.
_OWN_LOSS_AND_METRICS = ("loss", "loss_weights", "metrics", "weighted_metrics")


def cross_entropy(labels, logits, label_smoothing=0.0):
    """Mean softmax cross-entropy of integer `labels` under `logits`.

    Computed in float32 whatever the compute dtype, so mixed precision does
    not lose the loss to bf16/fp16 rounding.
    """
    logits = ops.cast(logits, "float32")
    num_classes = ops.shape(logits)[-1]
    targets = ops.one_hot(ops.reshape(ops.cast(labels, "int32"), (-1,)), num_classes)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    log_probs = ops.log_softmax(logits, axis=-1)
    return -ops.mean(ops.sum(targets * log_probs, axis=-1))


class TrainStepBase:
    """Shared half of the custom steps; mixed into `ResNet` before `keras.Model`.

    `compile` takes three training options beside Keras's own arguments:

    Args:
        label_smoothing: float in [0, 1), for the training loss. Defaults to 0.
        weight_decay: float >= 0, coefficient of `0.5 * sum(kernel ** 2)` over
            conv and dense kernels (not biases or BatchNorm), added to the
            loss: the coupled L2 of `torch.optim.SGD(weight_decay=...)`.
            Defaults to 0.
        augmentation: an `Augmentation` or None, applied to training batches
            only. Defaults to None.
    """

    def compile(
        self,
        optimizer="adam",
        *,
        label_smoothing=0.0,
        weight_decay=0.0,
        augmentation=None,
        **kwargs,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"`label_smoothing` must be in [0, 1). Received: {label_smoothing=}"
            )
        if weight_decay < 0.0:
            raise ValueError(f"`weight_decay` must be >= 0. Received: {weight_decay=}")
        if "loss" in kwargs or "metrics" in kwargs:
            raise ValueError(
                "ResNet computes its own loss and metrics (cross-entropy, accuracy); "
                "do not pass `loss` or `metrics` to compile. "
                f"Received: {sorted(k for k in kwargs if k in ('loss', 'metrics'))}"
            )
        super().compile(optimizer=optimizer, **kwargs)
        self.label_smoothing = float(label_smoothing)
        self.weight_decay = float(weight_decay)
        self.augmentation = (
            augmentation if augmentation is not None and augmentation.enabled else None
        )
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        # Which trainable variables weight decay applies to, by position, so
        # JAX's stateless step can pick the same ones out of its state.
        self.decayed_variable_indices = [
            i
            for i, v in enumerate(self.trainable_variables)
            if v.path.endswith("kernel")
        ]

    def fit(self, x=None, y=None, *args, **kwargs):
        """Keras's `fit`, after a one-line check of arrays given as `x`, `y`.

        Datasets and loaders are checked batch by batch in the step.
        """
        if _is_array(x):
            self._check_batch(x, y)
            input_checks.check_pixel_range(ops.convert_to_numpy(x))
            self._pixel_range_checked = True
            if _is_array(y):
                input_checks.check_label_values(
                    ops.convert_to_numpy(y), self.num_classes
                )
        return super().fit(x, y, *args, **kwargs)

    def _check_batch(self, images, labels):
        input_checks.check_batch(
            tuple(images.shape),
            None if labels is None else tuple(labels.shape),
            self.image_shape,
            self.num_classes,
        )

    def unpack_batch(self, data):
        """(images, labels) of a batch, checked for the model's layout.

        Shapes are checked when the step is traced. The pixel range needs
        values: it is checked on the first batch a step sees concretely (an
        eager step; a traced one has none).
        """
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        self._check_batch(images, labels)
        if not getattr(self, "_pixel_range_checked", False):
            self._pixel_range_checked = True
            try:
                values = ops.convert_to_numpy(images)
            except Exception:  # noqa: BLE001 -- traced: no values to look at
                values = None
            if values is not None:
                input_checks.check_pixel_range(values)
        return images, labels

    def get_compile_config(self):
        """Keras's compile settings plus the three training options, as plain data.

        What `keras.models.clone_model` and a saved compiled model compile
        their copy from (`compile_from_config`).
        """
        config = super().get_compile_config()
        if not config:
            return config
        # The loss and metrics are the model's own (`compile` refuses them).
        config = {k: v for k, v in config.items() if k not in _OWN_LOSS_AND_METRICS}
        augmentation = getattr(self, "augmentation", None)
        return config | {
            "label_smoothing": self.label_smoothing,
            "weight_decay": self.weight_decay,
            "augmentation": (
                None if augmentation is None else dataclasses.asdict(augmentation)
            ),
        }

    def compile_from_config(self, config):
        config = dict(keras.saving.deserialize_keras_object(config))
        if config.get("augmentation") is not None:
            config["augmentation"] = augment.Augmentation(**config["augmentation"])
        self.compile(**config)
        if self.built:
            # As Keras does: a saved optimizer's variables load into these.
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self):
        # Listed so that fit/evaluate reset them each epoch.
        if not getattr(self, "compiled", False) or not hasattr(self, "loss_tracker"):
            return []
        return [self.loss_tracker, self.accuracy_tracker]

    def sync_training_state(self):
        """Writes state the backend keeps outside the variables into them.

        For a checkpoint in the middle of `fit`. A no-op here: the
        TensorFlow and torch steps update the variables themselves. The JAX
        step overrides it.
        """

    def augment_batch(self, images, step, first_index=0):
        """Augments this replica's `images`, whose first has global index `first_index`.

        Numbering the draws over the global batch keeps data-parallel
        replicas from repeating each other's crops, flips and cutouts.
        """
        if self.augmentation is None:
            return images
        return self.augmentation(images, step, first_index)

    def training_loss(self, labels, logits, trainable_values, decay_in_loss=True):
        """(objective, cross_entropy): cross-entropy plus the L2 weight decay.

        `trainable_values` lines up with `self.trainable_variables`: the
        variables themselves, or JAX's traced values of them. The L2 term
        is in the loss, where the float16 loss scale and TensorFlow's
        per-replica sum apply to it without extra code; the torch step adds
        its gradient instead where it can (`decay_in_loss=False`, then
        `add_weight_decay`).
        """
        loss = cross_entropy(labels, logits, self.label_smoothing)
        if not self.weight_decay or not decay_in_loss:
            return loss, loss
        squares = [
            ops.sum(ops.square(ops.cast(trainable_values[i], "float32")))
            for i in self.decayed_variable_indices
        ]
        return loss + 0.5 * self.weight_decay * ops.sum(ops.stack(squares)), loss

    def update_metrics(self, loss, labels, logits):
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(labels, ops.cast(logits, "float32"))
        return {metric.name: metric.result() for metric in self.metrics}

    def stateful_test_step(self, data):
        """test_step for the stateful backends (TensorFlow, torch)."""
        images, labels = self.unpack_batch(data)
        logits = self(images, training=False)
        loss = cross_entropy(labels, logits, self.label_smoothing)
        return self.update_metrics(loss, labels, logits)


def _is_array(value):
    """A whole data set in memory (numpy, or a framework tensor), not a loader."""
    return isinstance(value, np.ndarray) or ops.is_tensor(value)
