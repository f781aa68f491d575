"""The rules a `ResNet`'s constructor arguments follow, checked up front.

Each argument's check and what its error says, as keras-hub's models do:
one `ValueError` naming the argument, ending `Received: name=value`.
"""

from __future__ import annotations

from keras_cifar_resnet.config import INITIALIZERS

BLOCK_TYPES = ("basic_block",)
# A backbone's last layer (`include_top=False`): none (the last stage's
# feature map) or a global pooling, `models.POOLINGS`.
POOLING_NAMES = (None, "avg", "max")


# How each constructor argument must look: (check, what the error says).
# `stages` is the number of entries of `stackwise_num_blocks`.
def _positive_ints(value):
    return all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)


_ARGUMENT_RULES = {
    "stackwise_num_blocks": (
        lambda v, stages: len(v) > 0 and _positive_ints(v),
        "a non-empty sequence of positive ints",
    ),
    "stackwise_num_filters": (
        lambda v, stages: len(v) == stages and _positive_ints(v),
        "{stages} positive ints, one per stage",
    ),
    "stackwise_strides": (
        lambda v, stages: len(v) == stages and _positive_ints(v),
        "{stages} positive ints, one per stage",
    ),
    "block_type": (lambda v, stages: v in BLOCK_TYPES, f"one of {BLOCK_TYPES}"),
    "stem_filters": (lambda v, stages: _positive_ints([v]), "a positive int"),
    "num_classes": (
        lambda v, stages: isinstance(v, int) and not isinstance(v, bool) and v >= 2,
        "an int >= 2",
    ),
    "input_shape": (
        lambda v, stages: len(v) == 3 and _positive_ints(v) and min(v[:2]) >= 3,
        "(height, width, channels) with height and width >= 3",
    ),
    "batch_norm_momentum": (
        lambda v, stages: isinstance(v, float) and 0.0 <= v < 1.0,
        "a float in [0, 1)",
    ),
    "width_multiplier": (
        lambda v, stages: (
            isinstance(v, (int, float))
            and not isinstance(v, bool)
            and 0.0 < v < float("inf")
        ),
        "a finite number > 0",
    ),
    "fused_batch_norm": (lambda v, stages: isinstance(v, bool), "True or False"),
    "fused_conv": (lambda v, stages: isinstance(v, bool), "True or False"),
    "initializer": (lambda v, stages: v in INITIALIZERS, f"one of {INITIALIZERS}"),
    "include_top": (lambda v, stages: isinstance(v, bool), "True or False"),
    "pooling": (lambda v, stages: v in POOLING_NAMES, f"one of {POOLING_NAMES}"),
}
ARGUMENTS = tuple(_ARGUMENT_RULES)
_SEQUENCES = ("stackwise_num_blocks", "stackwise_num_filters", "stackwise_strides")
# What `keras.Model` itself takes beside the network's arguments.
_MODEL_KEYWORDS = ("trainable", "dtype")


def checked_arguments(arguments):
    """`arguments` with sequences as tuples, or ValueError naming the bad one."""
    arguments = dict(arguments)
    for name in (*_SEQUENCES, "input_shape"):
        try:
            arguments[name] = tuple(arguments[name])
        except TypeError:
            pass  # not a sequence: the rule below says what it must be
    stages = len(arguments["stackwise_num_blocks"])
    for name, (ok, expected) in _ARGUMENT_RULES.items():
        value = arguments[name]
        try:
            valid = ok(value, stages)
        except TypeError:
            valid = False
        if not valid:
            raise ValueError(
                f"`{name}` must be {expected.format(stages=stages)}. "
                f"Received: {name}={value!r}"
            )
    if arguments["include_top"] and arguments["pooling"] is not None:
        raise ValueError(
            "`pooling` applies to a backbone only (`include_top=False`); with the "
            "classifier on top the network always averages. Received: "
            f"include_top=True, pooling={arguments['pooling']!r}"
        )
    arguments["width_multiplier"] = float(arguments["width_multiplier"])
    return arguments


def check_model_keywords(kwargs):
    unknown = sorted(set(kwargs) - set(_MODEL_KEYWORDS))
    if unknown:
        raise TypeError(
            f"ResNet got unexpected keyword arguments {unknown}; it takes the "
            "arguments its docstring lists and keras.Model's "
            f"{list(_MODEL_KEYWORDS)}. Received: "
            + ", ".join(f"{key}={kwargs[key]!r}" for key in unknown)
        )
