"""The plain-PyTorch trainer follows the training command's recipe."""

from __future__ import annotations

import keras
import pytest

from keras_cifar_resnet.config import RECIPES, TrainConfig, warmup_steps
from keras_cifar_resnet.training.build import learning_rate_schedule

pytest.importorskip("torch", reason="the native trainer needs PyTorch")


def _native_train():
    from benchmarks import native_train

    return native_train


@pytest.mark.parametrize(
    "epochs, warmup_epochs, steps_per_epoch", [(6, 0.3, 175), (10, 5.0, 7), (3, 0, 4)]
)
def test_the_schedule_is_the_training_commands(epochs, warmup_epochs, steps_per_epoch):
    native = _native_train()
    config = TrainConfig(epochs=epochs, warmup_epochs=warmup_epochs)
    schedule = learning_rate_schedule(config, steps_per_epoch)
    total = epochs * steps_per_epoch
    warmup = warmup_steps(config, steps_per_epoch)
    for step in range(0, total + 1, max(1, total // 40)):
        expected = float(keras.ops.convert_to_numpy(schedule(step)))
        factor = native.learning_rate_factor(step, total, warmup)
        assert config.learning_rate * factor == pytest.approx(
            expected, rel=1e-5, abs=1e-7
        ), step


def test_bad_flags_exit_2_with_one_line(tmp_path, capsys):
    native = _native_train()
    with pytest.raises(SystemExit) as exit_:
        native.main(["--width-multiplier", "0", "--output-dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--width-multiplier must be a finite number > 0" in capsys.readouterr().err


def test_flags_and_learning_rate_scaling_are_the_training_commands(tmp_path):
    native = _native_train()
    _, config = native.parse(["--batch-size", "128", "--output-dir", str(tmp_path)])
    recipe = RECIPES["default"]
    assert config.learning_rate == recipe.learning_rate * 128 / recipe.batch_size
    assert config.epochs == recipe.epochs and config.validation_size == 5000
    _, explicit = native.parse(
        ["--batch-size", "128", "--learning-rate", "0.3", "--output-dir", "x"]
    )
    assert explicit.learning_rate == 0.3
