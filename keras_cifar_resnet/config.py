"""Every default of a training run, in one frozen dataclass, and the recipes.

`TrainConfig()` is the default recipe; `RECIPES[name]` is a whole config per
recipe. The command-line flags of `keras_cifar_resnet.train` are built from
the dataclass fields and their `help` metadata (`build_parser`), so the flags,
their defaults and the documentation cannot drift apart.

Example:

>>> config = resolve_config(["--recipe", "seed", "--epochs", "3"])
>>> config.optimizer, config.learning_rate, config.epochs
('adam', 0.0001, 3)
"""

from __future__ import annotations

import argparse
import dataclasses
import math

MODEL_NAMES = ("resnet18", "resnet34", "tiny")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant")
MIXED_PRECISION = ("off", "mixed_bfloat16", "mixed_float16")
JIT_COMPILE = ("auto", "on", "off")
# How conv and dense weights start (`keras_cifar_resnet.initializers`).
INITIALIZERS = ("torch", "he_normal", "glorot_uniform")
# The home of the modes; `keras_cifar_resnet.distribute.MODES` is this tuple
# (config stays keras-free, so distribute imports it from here).
DISTRIBUTE = ("none", "data-parallel")
# How long a data-parallel process waits on one that stopped answering (its
# heartbeats, its collectives) before it stops too, in seconds.
LOST_PROCESS_TIMEOUT_SECONDS = 30
# How long finished JAX processes wait at exit for the chief, which still
# evaluates the test set and writes the run's last files, in seconds.
FINISH_TIMEOUT_SECONDS = 3600


class UsageError(Exception):
    """A bad command line or setting: the command exits with status 2, one line."""


def _field(default, help, *, choices=None, recipe=False, metavar=None):
    """A dataclass field carrying its command-line help.

    `recipe=True` marks a value that the recipe sets (its default differs
    per recipe); an explicit flag overrides it.
    """
    metadata = {"help": help, "choices": choices, "recipe": recipe, "metavar": metavar}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; the defaults are the `default` recipe.

    Args:
        model: str, one of `MODEL_NAMES`. `tiny` is a two-stage, 8/16-filter
            network for tests and smoke runs only.
        width_multiplier: float, scales every layer's filters (1.0: the
            published network; 0.25: a quarter of the filters, ~1/16 of the
            compute, trainable on a CPU).
        recipe: str, the recipe these values started from.
        epochs: int, passes over the training set.
        batch_size: int, images per optimizer step.
        optimizer: str, `sgd` (Nesterov momentum) or `adam`.
        learning_rate: float, the peak learning rate. A recipe's rate is
            for its own `batch_size`; `config_from_flags` scales it linearly
            when only the batch size is given.
        momentum: float, SGD momentum (unused by Adam).
        schedule: str, `cosine` (linear warm-up, then cosine decay to 0 at
            the last step) or `constant`.
        warmup_epochs: float, length of the linear warm-up (cosine schedule
            only; capped at half the run). Step `s` of `w` warm-up steps
            uses `(s + 1) / (w + 1)` of the peak, so the first step learns.
        weight_decay: float, coupled L2 coefficient on conv/dense kernels.
        label_smoothing: float, for the training loss.
        crop_padding: int, random-crop padding in pixels (0: no crop).
        flip: bool, random horizontal flips.
        cutout_size: int, side of the cutout square (0: no cutout).
        batch_norm_momentum: float, BatchNorm moving-average momentum.
        initializer: str, one of `INITIALIZERS`: how weights start.
        validation_size: int, training images held out to pick the best model.
        max_train_examples: int or None, train on the first N images only.
        synthetic: bool, random images instead of CIFAR-10.
        data_dir: str or None, folder holding CIFAR-10.
        output_dir: str or None, where the run writes; None picks
            `runs/<model>-<recipe>-<time>`.
        seed: int, seeds initial weights, data order and augmentation.
        mixed_precision: str, one of `MIXED_PRECISION`.
        jit_compile: str, one of `JIT_COMPILE`.
        distribute: str, one of `DISTRIBUTE`: one device, or data-parallel
            over every device (see `keras_cifar_resnet.distribute`).
    """

    model: str = _field(
        "resnet18",
        "Network to train. 'tiny' is a small network for tests and smoke runs only.",
        choices=MODEL_NAMES,
    )
    width_multiplier: float = _field(
        1.0,
        "Scales the filters of every layer (rounded, at least 1), keeping the "
        "depth: 0.25 gives ResNet18 with 16/16/32/64/128 filters, about 1/16 "
        "of the compute, which trains on full CIFAR-10 on a CPU.",
        metavar="W",
    )
    recipe: str = _field(
        "default",
        "Set of training defaults: 'default' (Nesterov SGD, cosine schedule, "
        "crop+flip+cutout, label smoothing; aims at >=95%% for ResNet18) or "
        "'seed' (the original write-up: Adam 1e-4, no augmentation). Flags "
        "given explicitly override the recipe's values.",
        choices=("default", "seed"),
    )
    epochs: int = _field(100, "Passes over the training set.", recipe=True)
    batch_size: int = _field(512, "Images per optimizer step.", recipe=True)
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
    )
    momentum: float = _field(0.9, "SGD momentum (ignored by Adam).", recipe=True)
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
    )
    weight_decay: float = _field(
        5e-4,
        "L2 coefficient on conv and dense kernels, added to the loss (coupled, "
        "like torch.optim.SGD's weight_decay).",
        recipe=True,
    )
    label_smoothing: float = _field(
        0.1, "Label smoothing of the training loss, in [0, 1).", recipe=True
    )
    crop_padding: int = _field(
        4, "Random crop after padding by this many pixels (0: off).", recipe=True
    )
    flip: bool = _field(True, "Random horizontal flips.", recipe=True)
    cutout_size: int = _field(
        16, "Side of the random cutout square in pixels (0: off).", recipe=True
    )
    batch_norm_momentum: float = _field(
        0.9, "BatchNorm moving-average momentum.", recipe=True
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
    )
    max_train_examples: int | None = _field(
        None,
        "Train on the first N training images only (after the validation "
        "split), for quick runs. Default: all.",
        metavar="N",
    )
    synthetic: bool = _field(
        False,
        "Train and test on random images (no download): for smoke tests and "
        "throughput, not accuracy.",
    )
    data_dir: str | None = _field(
        None,
        "Folder holding CIFAR-10 (see the README). Default: the data module's "
        "default location.",
        metavar="DIR",
    )
    output_dir: str | None = _field(
        None,
        "Folder the run writes to; must not already hold a run. Default: "
        "runs/<model>-<recipe>-<date-time>.",
        metavar="DIR",
    )
    seed: int = _field(0, "Seeds the initial weights, data order and augmentation.")
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
        "The learning rate needs no change. See the README.",
        choices=DISTRIBUTE,
    )

    def __post_init__(self):
        problems = []

        def require(ok, name, expected):
            if not ok:
                problems.append(
                    f"{flag_name(name)} must be {expected}, got {getattr(self, name)!r}"
                )

        for field in dataclasses.fields(self):
            choices = field.metadata.get("choices")
            if choices:
                require(
                    getattr(self, field.name) in choices,
                    field.name,
                    f"one of {', '.join(choices)}",
                )
        require(_is_int(self.epochs) and self.epochs >= 1, "epochs", "an int >= 1")
        require(
            _is_number(self.width_multiplier) and self.width_multiplier > 0,
            "width_multiplier",
            "a finite number > 0",
        )
        require(
            _is_int(self.batch_size) and self.batch_size >= 1,
            "batch_size",
            "an int >= 1",
        )
        require(
            _is_number(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            "a finite number > 0",
        )
        require(
            _is_number(self.momentum) and 0 <= self.momentum < 1,
            "momentum",
            "in [0, 1)",
        )
        require(
            _is_number(self.warmup_epochs) and self.warmup_epochs >= 0,
            "warmup_epochs",
            "a number >= 0",
        )
        require(
            _is_number(self.weight_decay) and self.weight_decay >= 0,
            "weight_decay",
            "a number >= 0",
        )
        require(
            _is_number(self.label_smoothing) and 0 <= self.label_smoothing < 1,
            "label_smoothing",
            "in [0, 1)",
        )
        for name in ("crop_padding", "cutout_size", "validation_size", "seed"):
            require(
                _is_int(getattr(self, name)) and getattr(self, name) >= 0,
                name,
                "an int >= 0",
            )
        require(
            _is_number(self.batch_norm_momentum) and 0 <= self.batch_norm_momentum < 1,
            "batch_norm_momentum",
            "in [0, 1)",
        )
        require(
            self.max_train_examples is None
            or (_is_int(self.max_train_examples) and self.max_train_examples >= 1),
            "max_train_examples",
            "an int >= 1",
        )
        if problems:
            raise ValueError("; ".join(problems))

    def to_dict(self):
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


RECIPES = {
    # Aims at >= 95% ResNet18 test accuracy (see the README for the
    # literature this rests on, and which figures were measured).
    "default": TrainConfig(),
    # The original write-up: Adam 1e-4, batch 512, no augmentation,
    # Keras's default BatchNorm momentum, 100 epochs.
    "seed": TrainConfig(
        recipe="seed",
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
RESUME_OVERRIDABLE = ("data_dir", "jit_compile", "distribute")


def recipe_fields():
    """Names of the fields whose defaults come from the recipe."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["recipe"]]


def flag_name(field):
    """The flag of a `TrainConfig` field: `batch_size` -> `--batch-size`."""
    return "--" + field.replace("_", "-")


def positive_int(text):
    """An argparse `type` for integers >= 1 (the commands' counts and sizes)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _help(field):
    text = field.metadata["help"]
    if field.metadata["recipe"]:
        values = ", ".join(
            f"{getattr(config, field.name)!r} ({name})"
            for name, config in RECIPES.items()
        )
        return f"{text} Default from the recipe: {values}."
    if field.type == "bool":
        return text
    return f"{text} Default: {field.default!r}." if field.default is not None else text


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not the usage block: the flag and what was wrong with it.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


_TYPES = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str}


def build_parser(prog="keras-cifar-resnet-train"):
    """The command-line parser, one flag per `TrainConfig` field, plus `--resume`.

    Every flag defaults to None, so that `resolve_config` can tell the flags
    given on the command line (which override the recipe) from the rest.
    """
    parser = _Parser(
        prog=prog,
        description=(
            "Train a ResNet on CIFAR-10 with a Keras backend: KERAS_BACKEND "
            "(jax, tensorflow or torch) if set, else the one keras.json names "
            "if installed, else the first installed of tensorflow, jax, torch; "
            "the start line says which. The run writes "
            "its config, a per-epoch CSV log, a checkpoint per epoch, the best "
            "model, a test-set summary and a plot of the curves to --output-dir."
        ),
    )
    for field in dataclasses.fields(TrainConfig):
        flag = flag_name(field.name)
        if field.type == "bool":
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(field),
            )
            continue
        parser.add_argument(
            flag,
            type=_TYPES[field.type],
            choices=field.metadata["choices"],
            default=None,
            metavar=field.metadata["metavar"],
            help=_help(field),
        )
    parser.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help=(
            "Continue the run in DIR from its last checkpoint, with its saved "
            "settings, schedule position and optimizer state: the command that "
            "started it, with --resume DIR added. Flags equal to the saved "
            "values are accepted; only "
            + ", ".join(flag_name(name) for name in RESUME_OVERRIDABLE)
            + " may change. A run stopped before its first checkpoint starts "
            "again from the beginning."
        ),
    )
    parser.add_argument(
        "--from-previous-checkpoint",
        action="store_true",
        help=(
            "With --resume: continue from the checkpoint before the last "
            "(checkpoint.previous.npz), for when the last one is damaged."
        ),
    )
    return parser


def explicit_flags(namespace):
    """The config fields given on the command line, as a dict."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return {
        name: value
        for name, value in vars(namespace).items()
        if name in names and value is not None
    }


def config_from_flags(flags):
    """The config for explicit `flags`: the recipe's values, then the flags.

    A recipe's learning rate belongs to its batch size: given `batch_size`
    without `learning_rate`, the rate is scaled linearly from the recipe's
    (timm's `lr_base`/`lr_base_size` rule). An explicit `learning_rate` is
    used as given.

    Raises:
        ValueError: a value is out of range (the message names the flag).
    """
    recipe = _recipe(flags)
    scaling = learning_rate_scaling(flags)
    if scaling is not None:
        flags = flags | {"learning_rate": scaling["learning_rate"]}
    return dataclasses.replace(recipe, **flags)


def _recipe(flags):
    name = flags.get("recipe", TrainConfig.recipe)
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {', '.join(RECIPES)}, got {name!r}")
    return RECIPES[name]


def learning_rate_scaling(flags):
    """How `config_from_flags` scales the learning rate for `flags`, or None.

    Returns:
        None when the recipe's rate is used as it is (no `batch_size`, the
        recipe's own, or an explicit `learning_rate`); else a dict with the
        recipe's `base_learning_rate` and `base_batch_size` and the scaled
        `learning_rate` for `batch_size`.
    """
    recipe = _recipe(flags)
    batch_size = flags.get("batch_size")
    if (
        "learning_rate" in flags
        or batch_size is None
        or batch_size == recipe.batch_size
        or not _is_int(batch_size)
        or batch_size < 1
    ):
        return None
    return {
        "base_learning_rate": recipe.learning_rate,
        "base_batch_size": recipe.batch_size,
        "batch_size": batch_size,
        "learning_rate": recipe.learning_rate * batch_size / recipe.batch_size,
    }


def resolve_config(argv=None):
    """Parses `argv` into a `TrainConfig` (no `--resume`); for tests and notebooks."""
    return config_from_flags(explicit_flags(build_parser().parse_args(argv)))
