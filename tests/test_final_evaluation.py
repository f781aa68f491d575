"""The final test evaluation runs at its own batch size, not the training one."""

from __future__ import annotations

from keras_cifar_resnet.config import (
    TrainConfig,
    build_parser,
    config_from_flags,
    explicit_flags,
)
from keras_cifar_resnet.train import main
from keras_cifar_resnet.training import summary


def test_the_evaluation_batch_is_large_by_default_and_its_own_flag():
    assert TrainConfig().eval_batch_size == 1000
    args = build_parser().parse_args(["--batch-size", "1", "--eval-batch-size", "250"])
    config = config_from_flags(explicit_flags(args))
    assert (config.batch_size, config.eval_batch_size) == (1, 250)


def test_the_final_evaluation_ignores_the_training_batch(tmp_path, monkeypatch):
    batch_sizes = []
    evaluate_model = summary.evaluate_model

    def recording(*args, batch_size, **kwargs):
        batch_sizes.append(batch_size)
        return evaluate_model(*args, batch_size=batch_size, **kwargs)

    monkeypatch.setattr(summary, "evaluate_model", recording)
    flags = ["--synthetic", "--model", "tiny", "--max-train-examples", "16"]
    flags += ["--batch-size", "8", "--validation-size", "0", "--epochs", "1"]
    assert main([*flags, "--output-dir", str(tmp_path / "run")]) == 0
    assert batch_sizes == [1000]
