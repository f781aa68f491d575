"""From a recipe to a compiled model: one `TrainConfig` in, Keras objects out.

The network (`build_model`), the learning-rate schedule, the optimizer, the
augmentation and the compiled model (`compile_model`), built the same way for
the training command and for the benchmarks.

Example:

>>> from keras_cifar_resnet.config import TrainConfig
>>> config = TrainConfig()
>>> model = compile_model(build_model(config), config, steps_per_epoch=97)
"""

from __future__ import annotations

import keras

from keras_cifar_resnet.augment import Augmentation
from keras_cifar_resnet.config import warmup_steps
from keras_cifar_resnet.models import MODELS


def build_model(config, **model_options):
    """The untrained network named by `config.model`, at its width.

    `model_options` go to the model beside the config's values (for
    example `fused_batch_norm=False` for the benchmarks' comparison).
    """
    return MODELS[config.model](
        batch_norm_momentum=config.batch_norm_momentum,
        width_multiplier=config.width_multiplier,
        initializer=config.initializer,
        **model_options,
    )


def learning_rate_schedule(config, steps_per_epoch):
    """The learning rate (a float or a schedule of the optimizer's step).

    Cosine: a linear warm-up over `warmup_epochs` (capped at half the run,
    so short runs still decay), then cosine decay to 0 at the last step.
    Warm-up step `s` of `w` uses `(s + 1) / (w + 1)` of the peak: starting
    from exactly 0 would make the first step a no-op.
    """
    if config.schedule == "constant":
        return config.learning_rate
    total_steps = config.epochs * steps_per_epoch
    warmup = warmup_steps(config, steps_per_epoch)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, total_steps)
    # Keras's warm-up is initial + (target - initial) * s / w.
    return keras.optimizers.schedules.CosineDecay(
        config.learning_rate / (warmup + 1),
        total_steps - warmup,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def build_optimizer(config, steps_per_epoch):
    """The recipe's optimizer; wrapped for loss scaling under mixed_float16.

    Weight decay is not the optimizer's: it is the model's coupled L2 term
    (see `ResNet.compile`), as in `torch.optim.SGD(weight_decay=...)`.
    """
    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=config.momentum, nesterov=True
        )
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    if config.mixed_precision == "mixed_float16":
        # float16 gradients underflow without it; bfloat16 has float32's range.
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def build_augmentation(config):
    """The recipe's batch augmentation, applied in the model's train step."""
    return Augmentation(
        crop_padding=config.crop_padding,
        flip=config.flip,
        cutout_size=config.cutout_size,
        seed=config.seed,
    )


def compile_model(model, config, steps_per_epoch):
    """Compiles `model` with the recipe's optimizer, loss and augmentation."""
    model.compile(
        build_optimizer(config, steps_per_epoch),
        label_smoothing=config.label_smoothing,
        weight_decay=config.weight_decay,
        augmentation=build_augmentation(config),
        jit_compile={"auto": "auto", "on": True, "off": False}[config.jit_compile],
    )
    return model
