"""Every default of a training run (`TrainConfig`, the recipes) and its flags.

`train_config` holds the frozen dataclass and the recipes; `flags` builds
the command line from its fields. Both are importable from here.
"""

from keras_cifar_resnet.config.flags import (
    add_flags,
    build_parser,
    explicit_flags,
    flag_fields,
    positive_int,
    resolve_config,
)
from keras_cifar_resnet.config.train_config import (
    DISTRIBUTE,
    INITIALIZERS,
    JIT_COMPILE,
    MIXED_PRECISION,
    MODEL_NAMES,
    OPTIMIZERS,
    RECIPE_ALIASES,
    RECIPE_NAMES,
    RECIPES,
    RESUME_OVERRIDABLE,
    SCHEDULES,
    TrainConfig,
    config_from_flags,
    flag_name,
    saved_config,
    warmup_steps,
)
from keras_cifar_resnet.errors import UsageError

__all__ = [
    "add_flags",
    "warmup_steps",
    "DISTRIBUTE",
    "INITIALIZERS",
    "JIT_COMPILE",
    "MIXED_PRECISION",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "RECIPE_ALIASES",
    "RECIPE_NAMES",
    "RECIPES",
    "RESUME_OVERRIDABLE",
    "SCHEDULES",
    "TrainConfig",
    "UsageError",
    "build_parser",
    "config_from_flags",
    "explicit_flags",
    "flag_fields",
    "flag_name",
    "positive_int",
    "resolve_config",
    "saved_config",
]
