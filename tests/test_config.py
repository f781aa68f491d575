"""The settings: TrainConfig, the recipes, the flags built from them."""

from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from keras_cifar_resnet import models
from keras_cifar_resnet.config import (
    DISTRIBUTE,
    MODEL_NAMES,
    RECIPES,
    RESUME_OVERRIDABLE,
    TrainConfig,
    build_parser,
    config_from_flags,
    explicit_flags,
    flag_name,
    positive_int,
    resolve_config,
    saved_config,
)
from keras_cifar_resnet.training import distribute


def test_the_default_config_is_the_default_recipe():
    assert TrainConfig() == RECIPES["default"]
    assert {name: config.recipe for name, config in RECIPES.items()} == {
        "default": "default",
        "paper": "paper",
    }


def test_the_former_recipe_name_is_the_paper_recipe():
    # Runs started under the former name resume: config.json says "seed".
    assert (
        TrainConfig(**RECIPES["paper"].to_dict() | {"recipe": "seed"})
        == (RECIPES["paper"])
    )
    assert resolve_config(["--recipe", "seed"]) == RECIPES["paper"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_recipe_round_trips_through_its_dict(name):
    config = RECIPES[name]
    assert TrainConfig(**config.to_dict()) == config


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def test_every_field_has_a_flag_and_every_flag_a_field():
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    destinations = {
        action.dest
        for action in build_parser()._actions
        if not isinstance(action, argparse._HelpAction)
    }
    derived = {"base_learning_rate", "base_batch_size"}
    assert destinations == fields - derived | {"resume", "from_previous_checkpoint"}
    assert set(RESUME_OVERRIDABLE) <= fields


def test_flag_names_spell_the_field():
    assert flag_name("batch_size") == "--batch-size"
    assert flag_name("epochs") == "--epochs"


def test_explicit_flags_are_only_those_given():
    args = build_parser().parse_args(["--epochs", "3", "--no-flip"])
    assert explicit_flags(args) == {"epochs": 3, "flip": False}


def test_the_names_config_lists_are_the_ones_the_modules_accept():
    assert DISTRIBUTE == distribute.MODES
    assert MODEL_NAMES == tuple(models.MODELS)


def test_a_recipe_then_the_flags():
    config = resolve_config(["--recipe", "paper", "--epochs", "3"])
    assert (config.optimizer, config.learning_rate, config.epochs) == ("adam", 1e-4, 3)


def test_the_learning_rate_follows_a_batch_size_given_alone():
    config = config_from_flags({"batch_size": 128})
    assert config.learning_rate == pytest.approx(0.05)
    assert (config.base_learning_rate, config.base_batch_size) == (0.2, 512)


@pytest.mark.parametrize(
    "flags",
    [{}, {"batch_size": 512}, {"batch_size": 128, "learning_rate": 0.3}],
)
def test_the_learning_rate_is_kept_otherwise(flags):
    config = config_from_flags(flags)
    assert config.base_learning_rate is None and config.base_batch_size is None
    expected = flags.get("learning_rate", RECIPES["default"].learning_rate)
    assert config.learning_rate == expected


def test_an_older_config_json_keeps_its_learning_rate_scaling():
    config = config_from_flags({"batch_size": 128})
    values = config.to_dict()
    del values["base_learning_rate"], values["base_batch_size"]
    scaling = {
        "base_learning_rate": 0.2,
        "base_batch_size": 512,
        "batch_size": 128,
        "learning_rate": 0.05,
    }
    record = {"config": values, "learning_rate_scaling": scaling}
    assert saved_config(record) == config
    assert saved_config({"config": values}).base_learning_rate is None


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epochs": 0}, "--epochs must be an int >= 1"),
        ({"model": "resnet50"}, "--model must be one of"),
        ({"distribute": "model-parallel"}, "--distribute must be one of"),
        ({"base_learning_rate": 0.2}, "base_batch_size must be an int >= 1"),
    ],
)
def test_a_bad_value_names_its_flag(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_positive_int_refuses_zero_and_words():
    assert positive_int("3") == 3
    for text in ("0", "-1", "three"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_int(text)


def test_every_field_declares_the_values_it_takes():
    # The bounds live with the fields: a new field without one is caught here.
    unchecked = {"flip", "synthetic", "tensorboard", "data_dir", "output_dir"}
    for field in dataclasses.fields(TrainConfig):
        declared = field.metadata["choices"] or field.metadata["bound"]
        assert bool(declared) != (field.name in unchecked), field.name


@pytest.mark.parametrize(
    "values, expected",
    [
        ({"epochs": 0}, "--epochs must be an int >= 1, got 0"),
        ({"momentum": 1.0}, "--momentum must be in [0, 1), got 1.0"),
        ({"max_train_examples": None}, None),
        ({"base_learning_rate": 0.1}, "base_batch_size must be an int >= 1, given"),
        ({"width_multiplier": float("nan")}, "--width-multiplier must be a finite"),
    ],
)
def test_a_field_is_checked_against_its_declared_bound(values, expected):
    if expected is None:
        TrainConfig(**values)
        return
    with pytest.raises(ValueError, match=re.escape(expected)):
        TrainConfig(**values)
