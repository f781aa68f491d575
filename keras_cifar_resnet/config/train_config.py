"""Every default of a training run, in one frozen dataclass, and the recipes.

`TrainConfig()` is the default recipe; `RECIPES[name]` is a whole config per
recipe. The command-line flags of `keras_cifar_resnet.train` are built from
the dataclass fields and their `help` metadata (`flags.build_parser`), so the
flags, their defaults and the documentation cannot drift apart.

Example:

>>> from keras_cifar_resnet.config import resolve_config
>>> config = resolve_config(["--recipe", "paper", "--epochs", "3"])
>>> config.optimizer, config.learning_rate, config.epochs
('adam', 0.0001, 3)
"""

from __future__ import annotations

import dataclasses
import math

MODEL_NAMES = ("resnet18", "resnet34", "tiny")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
MIXED_PRECISION = ("off", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "on", "off")
# How conv and dense weights start (`keras_cifar_resnet.network.initializers`).
INITIALIZERS = ("torch", "he_normal", "glorot_uniform")
# The home of the modes; `keras_cifar_resnet.training.distribute.MODES` is this tuple
# (config stays keras-free, so distribute imports it from here).
DISTRIBUTE = ("none", "data-parallel")
RECIPE_NAMES = ("default", "paper")
# Former recipe names, still accepted (and found in older runs' config.json).
RECIPE_ALIASES = {"seed": "paper"}


@dataclasses.dataclass(frozen=True)
class Bound:
    """The values a field takes: `allows(value)`, and `expected` in words."""

    allows: object  # callable: value -> bool
    expected: str

    def or_none(self):
        """The same bound, with None also allowed (a value left unset)."""
        return Bound(lambda v: v is None or self.allows(v), self.expected)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def whole(low):
    """An int >= `low`."""
    return Bound(lambda v: _is_int(v) and v >= low, f"an int >= {low}")


POSITIVE = Bound(lambda v: _is_number(v) and v > 0, "a finite number > 0")
NON_NEGATIVE = Bound(lambda v: _is_number(v) and v >= 0, "a number >= 0")
FRACTION = Bound(lambda v: _is_number(v) and 0 <= v < 1, "in [0, 1)")
_SCALED_FROM = Bound(whole(1).allows, "an int >= 1, given with base_learning_rate")


def _field(
    default, help, *, choices=None, bound=None, recipe=False, metavar=None, flag=True
):
    """A dataclass field carrying its command-line help and the values it takes.

    `choices` or `bound` (a `Bound`) say which values are valid; `TrainConfig`
    checks every field against them. `recipe=True` marks a value that the
    recipe sets (its default differs per recipe); an explicit flag overrides
    it. `flag=False` marks a value the command derives, which has no flag of
    its own.
    """
    metadata = {
        "help": help,
        "choices": choices,
        "bound": bound,
        "recipe": recipe,
        "metavar": metavar,
        "flag": flag,
    }
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; the defaults are the `default` recipe.

    Each field's meaning is its `help` metadata, which is also its flag's
    help (`keras-cifar-resnet-train --help`). Values are checked here, once,
    whether they come from flags, a recipe or a saved `config.json`.

    Example:

    >>> TrainConfig(epochs=3, batch_size=128).epochs
    3
    """

    model: str = _field(
        "resnet18",
        "Network to train. 'tiny' is a small network for tests and smoke runs only.",
        choices=MODEL_NAMES,
    )
    width_multiplier: float = _field(
        1.0,
        "Scales the filters of every layer (rounded, at least 1), keeping the "
        "depth: 0.125 gives ResNet18 with 8/8/16/32/64 filters, about 1/64 of "
        "the compute, which trains on full CIFAR-10 on a CPU in minutes (the "
        "README's first run).",
        metavar="W",
        bound=POSITIVE,
    )
    recipe: str = _field(
        "default",
        "Set of training defaults: 'default' (Nesterov SGD, cosine schedule, "
        "crop+flip+cutout, label smoothing; aims at >=95%% for ResNet18) or "
        "'paper' (the TensorFlow 2 write-up this project started from: Adam "
        "1e-4, no augmentation; 'seed' is its former name). Flags given "
        "explicitly override the recipe's values.",
        choices=RECIPE_NAMES,
    )
    epochs: int = _field(
        100, "Passes over the training set.", recipe=True, bound=whole(1)
    )
    batch_size: int = _field(
        512, "Images per optimizer step.", recipe=True, bound=whole(1)
    )
    eval_batch_size: int = _field(
        1000,
        "Test images per forward pass in the final evaluation (and their "
        "mirror images), independent of --batch-size.",
        metavar="N",
        bound=whole(1),
    )
    optimizer: str = _field(
        "sgd",
        "'sgd' (Nesterov momentum) or 'adam'.",
        choices=OPTIMIZERS,
        recipe=True,
    )
    learning_rate: float = _field(
        0.2,
        "Peak learning rate (0.2 = 0.1 per 256 images, linearly scaled to batch "
        "512). Given --batch-size without --learning-rate, the recipe's rate is "
        "scaled linearly from the recipe's batch size.",
        recipe=True,
        bound=POSITIVE,
    )
    base_learning_rate: float | None = _field(
        None,
        "The recipe's learning rate, at its batch size `base_batch_size`, that "
        "the learning rate was scaled from; None when it was not scaled.",
        flag=False,
        bound=POSITIVE.or_none(),
    )
    base_batch_size: int | None = _field(
        None,
        "The recipe's batch size that the learning rate was scaled from.",
        flag=False,
        bound=_SCALED_FROM.or_none(),
    )
    momentum: float = _field(
        0.9, "SGD momentum (ignored by Adam).", recipe=True, bound=FRACTION
    )
    schedule: str = _field(
        "cosine",
        "Learning-rate schedule: 'cosine' (linear warm-up, then cosine "
        "decay to 0 at the last step) or 'constant'.",
        choices=SCHEDULES,
        recipe=True,
    )
    warmup_epochs: float = _field(
        5.0,
        "Epochs of linear warm-up (cosine only; capped at half the run).",
        recipe=True,
        bound=NON_NEGATIVE,
    )
    weight_decay: float = _field(
        5e-4,
        "L2 coefficient on conv and dense kernels, added to the loss (coupled, "
        "like torch.optim.SGD's weight_decay).",
        recipe=True,
        bound=NON_NEGATIVE,
    )
    label_smoothing: float = _field(
        0.1,
        "Label smoothing of the training loss, in [0, 1).",
        recipe=True,
        bound=FRACTION,
    )
    crop_padding: int = _field(
        4,
        "Random crop after padding by this many pixels (0: off).",
        recipe=True,
        bound=whole(0),
    )
    flip: bool = _field(True, "Random horizontal flips.", recipe=True)
    cutout_size: int = _field(
        16,
        "Side of the random cutout square in pixels (0: off).",
        recipe=True,
        bound=whole(0),
    )
    batch_norm_momentum: float = _field(
        0.9,
        "BatchNorm moving-average momentum.",
        recipe=True,
        bound=FRACTION,
    )
    initializer: str = _field(
        "torch",
        "How conv and dense weights start: 'torch' (PyTorch's defaults), "
        "'he_normal' (He normal, fan-out) or 'glorot_uniform' (Keras's "
        "defaults); drawn from --seed, the same on every backend.",
        choices=INITIALIZERS,
        recipe=True,
    )
    validation_size: int = _field(
        5000,
        "Training images held out (a seeded split) to pick the best model; 0 "
        "trains on all and keeps the final model instead.",
        bound=whole(0),
    )
    max_train_examples: int | None = _field(
        None,
        "Train on the first N training images only (after the validation "
        "split), for quick runs. Default: all.",
        metavar="N",
        bound=whole(1).or_none(),
    )
    synthetic: bool = _field(
        False,
        "Train and test on random images (no download): for smoke tests and "
        "throughput, not accuracy.",
    )
    data_dir: str | None = _field(
        None,
        "Folder holding CIFAR-10 (see docs/data.md). Default: the data module's "
        "default location.",
        metavar="DIR",
    )
    output_dir: str | None = _field(
        None,
        "Folder the run writes to; must not already hold a run. Default: "
        "runs/<model>-<recipe>-<date-time>.",
        metavar="DIR",
    )
    tensorboard: bool = _field(
        False,
        "Also write TensorBoard event files to the run folder's tensorboard/: "
        "loss, accuracy and learning rate per epoch, train and validation "
        "(needs the tensorboard package: pip install 'tensorboard>=2.16').",
    )
    seed: int = _field(
        0, "Seeds the initial weights, data order and augmentation.", bound=whole(0)
    )
    mixed_precision: str = _field(
        "off",
        "Compute dtype policy: 'off' (float32), 'mixed_bfloat16', or "
        "'mixed_float16' (with dynamic loss scaling).",
        choices=MIXED_PRECISION,
    )
    jit_compile: str = _field(
        "auto",
        "Compile the train step: 'auto' is Keras's choice (JAX: jit; "
        "TensorFlow: XLA on GPU only; torch: eager); 'on' forces XLA on "
        "TensorFlow and torch.compile on torch; 'off' runs eagerly where the "
        "backend allows (JAX is always traced).",
        choices=JIT_COMPILE,
    )
    distribute: str = _field(
        "none",
        "'none': one device. 'data-parallel': split each --batch-size global "
        "batch over every device, on the backend's own engine: JAX "
        "keras.distribution.DataParallel (several hosts with "
        "KERAS_DISTRIBUTION_* set), TensorFlow MirroredStrategy "
        "(MultiWorkerMirroredStrategy under TF_CONFIG), torch "
        "DistributedDataParallel with one process per device under torchrun. "
        "The learning rate needs no change. See docs/multi-device.md.",
        choices=DISTRIBUTE,
    )

    def __post_init__(self):
        if self.recipe in RECIPE_ALIASES:
            object.__setattr__(self, "recipe", RECIPE_ALIASES[self.recipe])
        problems = [
            self._problem(field.name, f"one of {', '.join(field.metadata['choices'])}")
            for field in dataclasses.fields(self)
            if field.metadata["choices"]
            and getattr(self, field.name) not in field.metadata["choices"]
        ]
        problems += [
            self._problem(field.name, field.metadata["bound"].expected)
            for field in dataclasses.fields(self)
            if field.metadata["bound"]
            and not field.metadata["bound"].allows(getattr(self, field.name))
        ]
        # The one rule across fields: the scaling's two values go together.
        if (self.base_learning_rate is None) != (self.base_batch_size is None):
            problems.append(self._problem("base_batch_size", _SCALED_FROM.expected))
        if problems:
            raise ValueError("; ".join(problems))

    def _problem(self, name, expected):
        shown = (
            flag_name(name)
            if self.__dataclass_fields__[name].metadata["flag"]
            else name
        )
        return f"{shown} must be {expected}, got {getattr(self, name)!r}"

    def to_dict(self):
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


RECIPES = {
    # Aims at >= 95% ResNet18 test accuracy (see the README for the
    # literature this rests on, and which figures were measured).
    "default": TrainConfig(),
    # The TensorFlow 2 write-up's recipe: Adam 1e-4, batch 512, no
    # augmentation, Keras's default BatchNorm momentum, 100 epochs.
    "paper": TrainConfig(
        recipe="paper",
        epochs=100,
        batch_size=512,
        optimizer="adam",
        learning_rate=1e-4,
        momentum=0.9,
        schedule="constant",
        warmup_epochs=0.0,
        weight_decay=0.0,
        label_smoothing=0.0,
        crop_padding=0,
        flip=False,
        cutout_size=0,
        batch_norm_momentum=0.99,
        initializer="glorot_uniform",
    ),
}

# Fields that may change when a run is resumed: where the data lives and how
# the step is compiled do not change what is computed (up to float rounding).
# `distribute` too: a checkpoint moves between one device and many (the
# global batch is the same; only per-replica BatchNorm statistics differ).
# `tensorboard` only adds files beside the run's own.
RESUME_OVERRIDABLE = (
    "data_dir",
    "jit_compile",
    "distribute",
    "eval_batch_size",
    "tensorboard",
)


def flag_name(field):
    """The flag of a `TrainConfig` field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def warmup_steps(config, steps_per_epoch):
    """The warm-up's length in steps: `warmup_epochs`, capped at half the run."""
    total_steps = config.epochs * steps_per_epoch
    return min(round(config.warmup_epochs * steps_per_epoch), total_steps // 2)


def config_from_flags(flags):
    """The config for explicit `flags`: the recipe's values, then the flags.

    A recipe's learning rate belongs to its batch size: given `batch_size`
    without `learning_rate`, the rate is scaled linearly from the recipe's
    (timm's `lr_base`/`lr_base_size` rule), and the config records the
    recipe's rate and batch as `base_learning_rate` and `base_batch_size`.
    An explicit `learning_rate` is used as given.

    Raises:
        ValueError: a value is out of range (the message names the flag).
    """
    name = flags.get("recipe", TrainConfig.recipe)
    name = RECIPE_ALIASES.get(name, name)
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    recipe = RECIPES[name]
    config = dataclasses.replace(recipe, **flags)
    if "learning_rate" in flags or config.batch_size == recipe.batch_size:
        return config
    return dataclasses.replace(
        config,
        learning_rate=recipe.learning_rate * config.batch_size / recipe.batch_size,
        base_learning_rate=recipe.learning_rate,
        base_batch_size=recipe.batch_size,
    )


def saved_config(record):
    """The `TrainConfig` of a run's `config.json` (`record`), of any version.

    Runs written before the scaling was part of the config keep it beside
    the config, as `learning_rate_scaling`.

    Raises:
        ValueError, TypeError, KeyError: the record holds no valid config.
    """
    values = dict(record["config"])
    scaling = record.get("learning_rate_scaling")
    if scaling and "base_learning_rate" not in values:
        values["base_learning_rate"] = scaling["base_learning_rate"]
        values["base_batch_size"] = scaling["base_batch_size"]
    return TrainConfig(**values)
