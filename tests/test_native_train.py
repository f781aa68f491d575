"""The plain-PyTorch trainer follows the training command's recipe."""

from __future__ import annotations

import keras
import pytest

from keras_cifar_resnet.build import learning_rate_schedule
from keras_cifar_resnet.config import TrainConfig

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
    warmup = native.warmup_steps(epochs, steps_per_epoch, warmup_epochs)
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
