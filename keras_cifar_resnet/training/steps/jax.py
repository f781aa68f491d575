"""JAX train step: pure `train_step(state, data) -> (logs, state)`.

Keras jits it (`jit_compile=True` by default) and threads the state, a tuple
of value lists (trainable, non_trainable, optimizer, metrics variables),
between steps.
"""

from __future__ import annotations

import jax
import keras

from keras_cifar_resnet.training.steps.common import TrainStepBase, cross_entropy


class JAXTrainStep(TrainStepBase):
    def _objective(
        self, trainable_values, non_trainable_values, optimizer_values, images, labels
    ):
        logits, non_trainable_values = self.stateless_call(
            trainable_values, non_trainable_values, images, training=True
        )
        objective, loss = self.training_loss(labels, logits, trainable_values)
        # scale_loss reads the loss scale (float16 only) from the optimizer's
        # variables, so it must see this step's values, not the stale ones.
        mapping = list(zip(self.optimizer.variables, optimizer_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            scaled_objective = self.optimizer.scale_loss(objective)
        return scaled_objective, (loss, logits, non_trainable_values)

    def train_step(self, state, data):
        trainable, non_trainable, optimizer_values, metrics_values = state
        images, labels = self.unpack_batch(data)
        images = self.augment_batch(images, optimizer_values[self._iterations_index()])
        gradient_fn = jax.value_and_grad(self._objective, has_aux=True)
        (_, (loss, logits, non_trainable)), gradients = gradient_fn(
            trainable, non_trainable, optimizer_values, images, labels
        )
        # BatchNorm's moving statistics come back from stateless_call; passing
        # on the old `non_trainable` instead would silently freeze them.
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        logs, metrics_values = self._stateless_update_metrics(
            metrics_values, loss, labels, logits
        )
        return logs, (trainable, non_trainable, optimizer_values, metrics_values)

    def test_step(self, state, data):
        trainable, non_trainable, metrics_values = state
        images, labels = self.unpack_batch(data)
        logits, non_trainable = self.stateless_call(
            trainable, non_trainable, images, training=False
        )
        loss = cross_entropy(labels, logits, self.label_smoothing)
        logs, metrics_values = self._stateless_update_metrics(
            metrics_values, loss, labels, logits
        )
        return logs, (trainable, non_trainable, metrics_values)

    def sync_training_state(self):
        # Keras's JAX trainer threads the state between steps and writes it
        # into the variables only at the end of an epoch.
        self.jax_state_sync()

    def _iterations_index(self):
        variables = self.optimizer.variables
        return next(
            i for i, v in enumerate(variables) if v is self.optimizer.iterations
        )

    def _stateless_update_metrics(self, metrics_values, loss, labels, logits):
        # The metrics' variables are state too: update each metric from its
        # own slice of the flat list and return the new values.
        mapping = list(zip(self.metrics_variables, metrics_values, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = self.update_metrics(loss, labels, logits)
        new_values = [
            scope.get_current_value(v)
            if scope.get_current_value(v) is not None
            else value
            for v, value in mapping
        ]
        return logs, new_values
