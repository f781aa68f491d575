"""One call to make a model ready for `fit` with a recipe's training settings.

The training command builds its optimizer, schedule, loss settings and
augmentation from a `TrainConfig`; `compile_for_training` gives a library
user the same in one call, for a new model or one loaded from a `.keras`
file (a loaded model comes back uncompiled: its training options are not
Keras's own).
"""

from __future__ import annotations

import dataclasses


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
        model: a `ResNet` (new, or loaded with `keras.saving.load_model`).
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
    from keras_cifar_resnet.build import compile_model
    from keras_cifar_resnet.config import TrainConfig, config_from_flags
    from keras_cifar_resnet.input_checks import check_model

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
