"""PyTorch train step: autograd on the Keras variables, then `optimizer.apply`."""

from __future__ import annotations

import torch

from keras_cifar_resnet.training.steps.common import TrainStepBase


class TorchTrainStep(TrainStepBase):
    # The DistributedDataParallel wrapper of this model under --distribute
    # data-parallel (`use_distributed_module`), else None.
    distributed_module = None

    def use_distributed_module(self, module):
        """Runs the forward pass of every train step through `module` (DDP)."""
        # Stored past nn.Module.__setattr__ (and Keras's tracking): as a
        # registered submodule of the model it wraps, the module tree would
        # be a cycle.
        self.__dict__["distributed_module"] = module

    def train_step(self, data):
        images, labels = self.unpack_batch(data)
        images = self.augment_batch(
            images, self.optimizer.iterations, self._first_global_index(images)
        )
        # Gradients accumulate in .grad across backward() calls; without this
        # every step would add the previous steps' gradients (no error, just
        # worse training). Set to None over the trainable variables directly:
        # nn.Module.zero_grad walks every submodule, milliseconds a step.
        trainable_weights = self.trainable_weights
        for variable in trainable_weights:
            variable.value.grad = None
        # Under --distribute data-parallel the forward pass goes through the
        # DistributedDataParallel wrapper, whose hooks average the gradients
        # over the ranks during backward(); bypassing it would skip them.
        forward = self if self.distributed_module is None else self.distributed_module
        logits = forward(images, training=True)
        objective, loss = self.training_loss(labels, logits, self.trainable_variables)
        # Identity unless the optimizer is a LossScaleOptimizer (float16).
        self.optimizer.scale_loss(objective).backward()
        gradients = [v.value.grad for v in trainable_weights]
        # The update itself must not be recorded by autograd.
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        return self.update_metrics(loss.detach(), labels, logits.detach())

    def _first_global_index(self, images):
        # Under DDP rank r feeds images [r * n, (r + 1) * n) of each global
        # batch (input_pipeline.ProcessShard); its augmentation draws are
        # numbered from there, as one device would number them.
        if self.distributed_module is None:
            return 0
        return torch.distributed.get_rank() * images.shape[0]

    def test_step(self, data):
        return self.stateful_test_step(data)
