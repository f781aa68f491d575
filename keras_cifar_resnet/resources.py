"""What a ResNet costs before it is built: parameters, activations, memory.

A model is refused with the figure, in one line, when its estimated memory
exceeds what the machine has available (`MemAvailable` in `/proc/meminfo`),
instead of being killed by the kernel with nothing printed. The estimates
count float32 values from the model's config alone, so nothing is
allocated to make them:

- training: the weights, their gradients, the optimizer's slot and the copy
  saved as the best model (4 values per parameter), plus each layer's
  output kept for the backward pass and its gradient (2 values per
  activation per image of the batch);
- inference: the weights while they load (2 per parameter) and the two
  largest activations of a batch.

They approximate the peak the leanest framework reaches (others add
workspace and caches on top), so a refused run would not fit.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path

from keras_cifar_resnet.errors import UsageError

MEMINFO = Path("/proc/meminfo")
BYTES_PER_VALUE = 4  # float32
# Values per parameter when training: weight, gradient, momentum, export copy.
TRAINING_VALUES_PER_PARAMETER = 4
# Values per activation when training: the output kept for the backward pass
# and its gradient.
TRAINING_VALUES_PER_ACTIVATION = 2
# CIFAR-10: 50,000 training and 10,000 test images of 32x32x3 bytes.
CIFAR10_TRAIN_IMAGES = 50_000
CIFAR10_TEST_IMAGES = 10_000
CIFAR10_IMAGE_BYTES = 32 * 32 * 3


class ResourceError(UsageError):
    """A model that cannot fit in this machine's memory (message: one line).

    A usage error: the settings ask for more than the machine has (exit 2).
    """


@functools.lru_cache(maxsize=1)
def _resnet_defaults():
    from keras_cifar_resnet.models import ResNet

    return {
        name: parameter.default
        for name, parameter in inspect.signature(ResNet).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def named_model_config(model, **options):
    """The config `models.MODELS[model](**options)` would build, without building.

    Args:
        model: str, a key of `models.MODELS` (`"resnet18"`, `"tiny"`...).
        **options: keyword arguments given to the builder.

    Returns:
        dict of `ResNet` constructor arguments.
    """
    from keras_cifar_resnet.models import architecture

    return _resnet_defaults() | architecture(model) | options


def resnet_size(config):
    """(parameters, activations per image, largest activation) of a ResNet config.

    Args:
        config: dict of `ResNet` constructor arguments (as in a `.keras`
            file's `config.json`); missing ones take `ResNet`'s defaults.

    Returns:
        (int, int, int): trainable and non-trainable parameters; values of
        every layer's output for one image; values of the largest output.
    """
    config = _resnet_defaults() | dict(config)
    multiplier = float(config["width_multiplier"])

    def scaled(filters):
        return max(1, round(filters * multiplier))

    height, width, channels = (int(n) for n in config["input_shape"])
    # The images and their rescaled copy.
    activations = largest = 2 * height * width * channels
    # Stem: a 3x3 valid conv with bias, BN (4 values per channel), ReLU, pool.
    height, width = height - 2, width - 2
    filters = scaled(int(config["stem_filters"]))
    parameters = 9 * channels * filters + filters + 4 * filters
    activations += 4 * height * width * filters
    largest = max(largest, height * width * filters)
    channels = filters
    for blocks, stage_filters, stride in zip(
        config["stackwise_num_blocks"],
        config["stackwise_num_filters"],
        config["stackwise_strides"],
        strict=True,
    ):
        filters = scaled(int(stage_filters))
        for index in range(int(blocks)):
            step = int(stride) if index == 0 else 1
            height, width = math.ceil(height / step), math.ceil(width / step)
            if step != 1:  # a 1x1 conv with bias on the shortcut
                parameters += channels * filters + filters
                activations += height * width * filters
            # conv3x3 + BN, conv3x3 + BN, each conv with bias.
            parameters += 9 * channels * filters + 9 * filters * filters
            parameters += 2 * filters + 8 * filters
            # conv1, bn1, relu1, conv2, bn2, add, relu.
            activations += 7 * height * width * filters
            largest = max(largest, height * width * filters)
            channels = filters
    classes = int(config["num_classes"])
    parameters += channels * classes + classes
    activations += channels + classes
    return parameters, activations, largest


def training_bytes(config, batch_size):
    """Estimated least memory to train the ResNet `config` at `batch_size`."""
    parameters, activations, _ = resnet_size(config)
    values = TRAINING_VALUES_PER_PARAMETER * parameters
    values += TRAINING_VALUES_PER_ACTIVATION * batch_size * activations
    return BYTES_PER_VALUE * values


def inference_bytes(config, batch_size):
    """Estimated least memory to load the ResNet `config` and run a batch."""
    parameters, _, largest = resnet_size(config)
    return BYTES_PER_VALUE * (2 * parameters + 2 * batch_size * largest)


def available_memory_bytes(meminfo=MEMINFO):
    """`MemAvailable` in bytes, or None where `/proc/meminfo` does not say."""
    try:
        text = Path(meminfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def format_bytes(count):
    """`1.5 GB`, `730 MB`: decimal units, three significant digits."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}" if unit != "bytes" else f"{count} bytes"
        count /= 1000
    raise AssertionError("unreachable")


def check_memory(needed, what, meminfo=MEMINFO):
    """Raises `ResourceError` when `needed` bytes exceed the memory available.

    Args:
        needed: int, the estimate in bytes.
        what: str, what needs it, to start the message ("training resnet18
            at width 64, batch 512").
        meminfo: the file to read `MemAvailable` from. Defaults to
            `/proc/meminfo`; where it is missing nothing is checked.
    """
    available = available_memory_bytes(meminfo)
    if available is not None and needed > available:
        raise ResourceError(
            f"{what} needs at least {format_bytes(needed)} of memory (estimate), "
            f"more than the {format_bytes(available)} this machine has available"
        )


def data_bytes(config):
    """The CIFAR-10 arrays a run holds in memory: uint8 pixels, int64 labels.

    Real data is always 60,000 images; synthetic data grows with
    `--validation-size` (the held-out images are made on top of the
    training ones).
    """
    if config.synthetic:
        kept = config.max_train_examples or (
            CIFAR10_TRAIN_IMAGES - config.validation_size
        )
        images = max(kept, 1) + config.validation_size + CIFAR10_TEST_IMAGES
    else:
        images = CIFAR10_TRAIN_IMAGES + CIFAR10_TEST_IMAGES
    return images * (CIFAR10_IMAGE_BYTES + 8)


def augmentation_bytes(model_config, config):
    """The padded copy of a batch that the random crop cuts from (float32)."""
    if not config.crop_padding:
        return 0
    height, width, channels = (int(n) for n in model_config["input_shape"])
    pad = 2 * int(config.crop_padding)
    # The padded batch and the crop's gather over it.
    return 2 * BYTES_PER_VALUE * config.batch_size * (height + pad) * (width + pad) * (
        channels
    )


def evaluation_bytes(model_config, eval_batch_size):
    """The final test evaluation, with the training state still held."""
    parameters, _, largest = resnet_size(model_config)
    values = TRAINING_VALUES_PER_PARAMETER * parameters
    return BYTES_PER_VALUE * (values + 2 * eval_batch_size * largest)


def check_training_memory(config, device="cpu", meminfo=MEMINFO):
    """Refuses a training run whose estimated memory exceeds what is available.

    Checked before the data is read or the model built. Counts every
    setting that scales memory: the model and batch, `--crop-padding`,
    `--eval-batch-size` and the data (`--validation-size` for synthetic
    data). The data lives in the machine's memory on every device; the
    rest only where the tensors do too (`device` names a CPU): an
    accelerator's own memory is not in `/proc/meminfo`.

    Args:
        config: a `TrainConfig`.
        device: str, where the backend puts tensors (`run_folder.environment`).
            Defaults to `"cpu"`.
        meminfo: see `check_memory`.

    Raises:
        ResourceError: one line with the estimate and the memory available,
            naming the setting that needs the most when it is not the model.
    """
    model = named_model_config(config.model, width_multiplier=config.width_multiplier)
    what = (
        f"training {config.model} at width multiplier {config.width_multiplier:g} "
        f"with batch {config.batch_size}"
    )
    data = data_bytes(config)
    # Real data is a fixed size: only synthetic data grows with a setting.
    extras = [(data, f"--validation-size {config.validation_size:,}")]
    extras = extras if config.synthetic else []
    if "cpu" in str(device).lower():
        training = training_bytes(model, config.batch_size)
        crop = augmentation_bytes(model, config)
        evaluation = evaluation_bytes(model, config.eval_batch_size)
        extras += [
            (crop, f"--crop-padding {config.crop_padding:,}"),
            (evaluation, f"--eval-batch-size {config.eval_batch_size:,}"),
        ]
        needed = data + max(training + crop, evaluation)
    else:
        training, needed = 0, data
    largest, setting = max(extras, default=(0, ""))
    if largest > training:
        what += f" and {setting}"
    check_memory(needed, what, meminfo)
