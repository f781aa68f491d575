"""TensorFlow train step: GradientTape, then `optimizer.apply`.

Keras wraps it in `tf.function` (and XLA with `jit_compile=True`).
"""

from __future__ import annotations

import tensorflow as tf

from keras_cifar_resnet.training.steps.common import TrainStepBase


class TensorFlowTrainStep(TrainStepBase):
    def train_step(self, data):
        images, labels = self.unpack_batch(data)
        # Under tf.distribute each replica holds a consecutive slice of the
        # global batch; its augmentation draws are numbered from that slice's
        # global position (0 on one device).
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        first_index = tf.cast(replica_id, "int32") * tf.shape(images)[0]
        images = self.augment_batch(images, self.optimizer.iterations, first_index)
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            objective, loss = self.training_loss(
                labels, logits, self.trainable_variables
            )
            # Under tf.distribute each replica runs this step on its part of
            # the batch and optimizer.apply sums their gradients; dividing by
            # the replica count makes that sum the global batch's mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Identity unless the optimizer is a LossScaleOptimizer (float16).
            scaled_objective = self.optimizer.scale_loss(objective / replicas)
        gradients = tape.gradient(scaled_objective, self.trainable_variables)
        # apply() unscales and, under loss scaling, skips non-finite steps.
        self.optimizer.apply(gradients, self.trainable_variables)
        return _reducible_logs(self.update_metrics(loss, labels, logits))

    def test_step(self, data):
        return _reducible_logs(self.stateful_test_step(data))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3.15's fit/evaluate first draw one batch to
        # build the model symbolically, averaging it over the replicas with
        # `strategy.reduce`, which takes no (images, labels) pair across
        # MultiWorkerMirroredStrategy's workers (it fails with "Attempt to
        # convert a value (PerReplica...)"), and which restarts the batches'
        # epoch. This package builds the model and its optimizer before
        # training, so the pass has nothing to build.
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)


def _reducible_logs(logs):
    """`logs` in a shape Keras can average over MultiWorkerMirroredStrategy.

    Keras 3.15 averages a step's logs over several workers with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalars that
    metrics return ("Invalid reduction dimension 0 for input with 0
    dimensions"); one-element vectors reduce to the same mean, as a scalar.
    """
    if not isinstance(
        tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy
    ):
        return logs
    return {name: tf.reshape(value, [1]) for name, value in logs.items()}
