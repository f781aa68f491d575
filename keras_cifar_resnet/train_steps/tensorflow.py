"""TensorFlow train step: GradientTape, then `optimizer.apply`.

Keras wraps it in `tf.function` (and XLA with `jit_compile=True`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from keras_cifar_resnet.train_steps.common import TrainStepBase


class TensorFlowTrainStep(TrainStepBase):
    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        # Under tf.distribute each replica holds a consecutive slice of the
        # global batch; its augmentation draws are numbered from that slice's
        # global position (0 on one device).
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        first_index = tf.cast(replica_id, "int32") * tf.shape(images)[0]
        images = self.augment_batch(images, self.optimizer.iterations, first_index)
        with tf.GradientTape() as tape:
            logits = self(images, training=True)
            loss = self.training_loss(labels, logits)
            # Under tf.distribute each replica runs this step on its part of
            # the batch and optimizer.apply sums their gradients; dividing by
            # the replica count makes that sum the global batch's mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Identity unless the optimizer is a LossScaleOptimizer (float16).
            scaled_loss = self.optimizer.scale_loss(loss / replicas)
        gradients = self.with_weight_decay(
            tape.gradient(scaled_loss, self.trainable_variables),
            self.trainable_variables,
            self.optimizer.scale_loss(1.0) / replicas,
        )
        # apply() unscales and, under loss scaling, skips non-finite steps.
        self.optimizer.apply(gradients, self.trainable_variables)
        return self.update_metrics(loss, labels, logits)

    def test_step(self, data):
        return self.stateful_test_step(data)
