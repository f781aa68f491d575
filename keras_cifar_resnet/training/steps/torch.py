"""PyTorch train step: autograd on the Keras variables, then `optimizer.apply`."""

from __future__ import annotations

import keras
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
        # Under float16's loss scaling the gradients are scaled: there the
        # L2 term stays in the loss, which the scale then covers.
        decay_in_loss = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        objective, loss = self.training_loss(
            labels, logits, trainable_weights, decay_in_loss=decay_in_loss
        )
        # Identity unless the optimizer is a LossScaleOptimizer (float16).
        self.optimizer.scale_loss(objective).backward()
        gradients = [v.value.grad for v in trainable_weights]
        # The update itself must not be recorded by autograd.
        with torch.no_grad():
            if not decay_in_loss:
                self.add_weight_decay(gradients, trainable_weights)
            self.optimizer.apply(gradients, trainable_weights)
        return self.update_metrics(loss.detach(), labels, logits.detach())

    def add_weight_decay(self, gradients, trainable_weights):
        """Adds `weight_decay * w`, the L2 term's gradient, to the decayed kernels'.

        The same update as differentiating `0.5 * wd * sum(w ** 2)` in the
        loss, in one pass over the kernels instead of a square, a sum and two
        products through autograd: about 2% of a bf16 ResNet18 step on the
        CPU.
        """
        if not self.weight_decay:
            return
        kernels = [trainable_weights[i].value for i in self.decayed_variable_indices]
        for i, kernel in zip(self.decayed_variable_indices, kernels, strict=True):
            if gradients[i] is None:  # a kernel the loss does not reach
                gradients[i] = torch.zeros_like(kernel)
        decayed = [gradients[i] for i in self.decayed_variable_indices]
        torch._foreach_add_(decayed, kernels, alpha=self.weight_decay)

    def _first_global_index(self, images):
        # Under DDP rank r feeds images [r * n, (r + 1) * n) of each global
        # batch (input_pipeline.ProcessShard); its augmentation draws are
        # numbered from there, as one device would number them.
        if self.distributed_module is None:
            return 0
        return torch.distributed.get_rank() * images.shape[0]

    def test_step(self, data):
        return self.stateful_test_step(data)
