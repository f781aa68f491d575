"""The training flags, one per `TrainConfig` field, built from its metadata.

`build_parser` makes the `keras-cifar-resnet-train` command line from the
fields' `help`, `choices` and `metavar`; `explicit_flags` and
`config_from_flags` turn what was given into a config.
"""

from __future__ import annotations

import argparse
import dataclasses

from keras_cifar_resnet.config.train_config import (
    RECIPE_ALIASES,
    RECIPES,
    RESUME_OVERRIDABLE,
    TrainConfig,
    config_from_flags,
    flag_name,
)
from keras_cifar_resnet.messages import PROGRAMS


def flag_fields():
    """The `TrainConfig` fields that are command-line flags."""
    return [f for f in dataclasses.fields(TrainConfig) if f.metadata["flag"]]


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


def add_flags(parser, names=None):
    """Adds the flags of the `TrainConfig` fields `names` (default: all).

    Every flag defaults to None, so that `explicit_flags` can tell the flags
    given on the command line from the rest.
    """
    for field in flag_fields():
        if names is not None and field.name not in names:
            continue
        flag = flag_name(field.name)
        if field.type == "bool":
            parser.add_argument(
                flag,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(field),
            )
            continue
        choices = field.metadata["choices"]
        if field.name == "recipe":
            choices = (*choices, *RECIPE_ALIASES)
        parser.add_argument(
            flag,
            type=_TYPES[field.type],
            choices=choices,
            default=None,
            metavar=field.metadata["metavar"],
            help=_help(field),
        )


def build_parser(prog=None):
    """The command-line parser, one flag per `TrainConfig` field, plus `--resume`.

    Every flag defaults to None, so that `resolve_config` can tell the flags
    given on the command line (which override the recipe) from the rest.
    """
    parser = _Parser(
        prog=prog or PROGRAMS["train"],
        description=(
            "Train a ResNet on CIFAR-10 with a Keras backend: KERAS_BACKEND "
            "(jax, tensorflow or torch) if set, else the one keras.json names "
            "if installed, else the first installed of tensorflow, jax, torch; "
            "the start line says which. The run writes "
            "its config, a per-epoch CSV log, a checkpoint per epoch, the best "
            "model, a test-set summary and a plot of the curves to --output-dir."
        ),
    )
    add_flags(parser)
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
    names = {f.name for f in flag_fields()}
    return {
        name: value
        for name, value in vars(namespace).items()
        if name in names and value is not None
    }


def resolve_config(argv=None):
    """Parses `argv` into a `TrainConfig` (no `--resume`); for tests and notebooks."""
    return config_from_flags(explicit_flags(build_parser().parse_args(argv)))
