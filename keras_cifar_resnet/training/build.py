"""From a recipe to a compiled model: one `TrainConfig` in, Keras objects out.

The network (`build_model`), the learning-rate schedule, the optimizer, the
augmentation and the compiled model (`compile_model`), built the same way for
the training command and for the benchmarks. `compile_for_training` gives a
library user the same in one call, for a new model or one loaded from a
`.keras` file (a loaded model comes back uncompiled: its training options
are not Keras's own).

Example:

>>> from keras_cifar_resnet.config import TrainConfig
>>> config = TrainConfig()
>>> model = compile_model(build_model(config), config, steps_per_epoch=97)
"""

from __future__ import annotations

import dataclasses

import keras
from keras import ops

from keras_cifar_resnet.config import TrainConfig, config_from_flags, warmup_steps
from keras_cifar_resnet.data.augment import Augmentation
from keras_cifar_resnet.data.input_checks import InputError, short_repr
from keras_cifar_resnet.models import MODELS, ResNet


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


@keras.saving.register_keras_serializable(package="keras_cifar_resnet")
class WarmupCosineDecay(keras.optimizers.schedules.CosineDecay):
    """Keras's `CosineDecay` with a warm-up: the same values, chosen by `where`.

    Keras picks the warm-up or the decay with `ops.cond`, which builds a new
    Keras operation at every step; under torch.compile (`--jit-compile on`)
    that is a new graph at every step. Both branches are a few scalar ops.
    """

    def __call__(self, step):
        if self.warmup_target is None:
            return super().__call__(step)
        initial_learning_rate = ops.convert_to_tensor(self.initial_learning_rate)
        dtype = initial_learning_rate.dtype
        decay_steps = ops.cast(self.decay_steps, dtype)
        warmup_steps = ops.cast(self.warmup_steps, dtype)
        warmup_target = ops.cast(self.warmup_target, dtype)
        step = ops.minimum(ops.cast(step, dtype), decay_steps + warmup_steps)
        warming_up = self._warmup_function(
            step, warmup_steps, warmup_target, initial_learning_rate
        )
        decaying = self._decay_function(
            ops.maximum(step - warmup_steps, 0.0), decay_steps, warmup_target, dtype
        )
        return ops.where(step < warmup_steps, warming_up, decaying)


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
    return WarmupCosineDecay(
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


def check_model(model, *, argument="model"):
    """Raises `InputError` unless `model` is this package's `ResNet`."""
    if isinstance(model, keras.Model) and not isinstance(model, ResNet):
        raise InputError(
            f"`{argument}` must be a keras_cifar_resnet ResNet; a Keras model built "
            "from layers (a backbone with a new head) trains with the package's "
            "step as keras_cifar_resnet.ResNet(model.inputs, model.outputs). "
            f"Received: {argument}={model.name!r} ({type(model).__name__})"
        )
    if not isinstance(model, ResNet):
        raise InputError(
            f"`{argument}` must be a keras_cifar_resnet ResNet (e.g. ResNet18(), or "
            "one loaded with keras.saving.load_model); Received: "
            f"{argument}={short_repr(model)}"
        )


def compile_for_training(
    model,
    recipe="default",
    *,
    steps_per_epoch,
    epochs=None,
    batch_size=None,
    **settings,
):
    """Compiles `model` with a recipe's optimizer, schedule, loss and augmentation.

    The schedule (warm-up, then cosine decay to 0) is laid out over
    `epochs * steps_per_epoch` optimizer steps, and the recipe's learning
    rate is scaled linearly to `batch_size`, as the training command does.

    Args:
        model: a `ResNet` (new, or loaded with `keras.saving.load_model`),
            or a Keras graph made one with `ResNet(inputs, outputs)` (a
            backbone with a new head: see `keras_cifar_resnet.fine_tune`).
        recipe: str, a recipe name (`keras_cifar_resnet.config.RECIPES`).
            Defaults to `"default"`.
        steps_per_epoch: int, optimizer steps per epoch, e.g.
            `math.ceil(len(images) / batch_size)`.
        epochs: int or None, the length of the schedule. Defaults to the
            recipe's.
        batch_size: int or None, the batch `fit` will use, for the learning
            rate. Defaults to the recipe's.
        **settings: other `TrainConfig` fields to override, e.g.
            `learning_rate=0.05`, `cutout_size=0`, `weight_decay=0.0`.

    Returns:
        The model, compiled; `fit` it with `batch_size`.

    Raises:
        ValueError: not a `ResNet`, an unknown recipe or setting, or a value
            out of range.

    Example:

    >>> model = compile_for_training(ResNet18(), steps_per_epoch=98, epochs=30,
    ...                              batch_size=512)
    >>> model.fit(images, labels, batch_size=512, epochs=30)
    """
    check_model(model)
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(
            f"unknown training settings {unknown}; the settings are the fields "
            f"of keras_cifar_resnet.config.TrainConfig. Received: {unknown}"
        )
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(
            f"`steps_per_epoch` must be an int >= 1. Received: {steps_per_epoch=!r}"
        )
    flags = {"recipe": recipe, **settings}
    if epochs is not None:
        flags["epochs"] = epochs
    if batch_size is not None:
        flags["batch_size"] = batch_size
    return compile_model(model, config_from_flags(flags), steps_per_epoch)
