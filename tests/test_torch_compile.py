"""torch.compile (`jit_compile=True`, `--jit-compile on`) on the default layers.

The torch backend's `jit_compile` compiles each step with torch.compile. A
compiled step must give eager's loss, at float32 and mixed_bfloat16, and
stop compiling once every batch size has been seen: a step that builds a
new Keras operation every call (`ops.pad`, `ops.cond`) would be compiled
again at every step. Training batches all have one size, as the training
command makes them (`TrainingBatches` drops the remainder); evaluation
batches end with one of another size.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_cifar_resnet import compile_for_training
from keras_cifar_resnet.models import TinyResNet
from tests.backend_subprocess import current_backend, run_command_under_backend

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        current_backend() != "torch",
        reason="torch.compile is the torch backend's jit_compile; runs in the "
        "torch test session",
    ),
]

TRAIN_BATCH_SIZES = (8, 8)
# Evaluation's batches: full ones, then the last one of another size.
EVAL_BATCH_SIZES = (8, 5)
# |compiled - eager| / |eager| of a loss: float32 reorders sums only; bf16
# rounds every activation.
TOLERANCE = {"float32": 1e-4, "mixed_bfloat16": 3e-2}


def _batches(sizes, seed):
    rng = np.random.default_rng(seed)
    for size in sizes:
        images = rng.integers(0, 256, (size, 32, 32, 3), dtype=np.uint8)
        yield images, rng.integers(0, 10, size).astype(np.int64)


def _compiled_graphs():
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"], indirect=True)
def test_compiled_steps_give_eager_losses_and_compile_once_per_shape(policy):
    import torch

    torch._dynamo.reset()
    keras.utils.clear_session()
    eager = TinyResNet()
    compiled = TinyResNet()
    compiled.set_weights(eager.get_weights())
    for model in (eager, compiled):
        compile_for_training(model, steps_per_epoch=2, epochs=4, batch_size=8)
    compiled.jit_compile = True

    for images, labels in _batches(TRAIN_BATCH_SIZES, seed=0):
        expected = eager.train_on_batch(images, labels, return_dict=True)["loss"]
        got = compiled.train_on_batch(images, labels, return_dict=True)["loss"]
        assert abs(got - expected) <= TOLERANCE[policy] * abs(expected), (
            f"training loss at batch {len(images)}: compiled {got}, eager {expected}"
        )
    for images, labels in _batches(EVAL_BATCH_SIZES, seed=1):
        expected = eager.test_on_batch(images, labels, return_dict=True)["loss"]
        got = compiled.test_on_batch(images, labels, return_dict=True)["loss"]
        assert abs(got - expected) <= TOLERANCE[policy] * abs(expected), (
            f"evaluation loss at batch {len(images)}: compiled {got}, eager {expected}"
        )
    assert _compiled_graphs() > 0, "jit_compile=True compiled nothing"

    # One more step of each size: the schedule, the augmentation draws and
    # the optimizer's counter advance, and nothing is compiled again.
    graphs = _compiled_graphs()
    for images, labels in _batches(TRAIN_BATCH_SIZES, seed=2):
        compiled.train_on_batch(images, labels)
    for images, labels in _batches(EVAL_BATCH_SIZES, seed=3):
        compiled.test_on_batch(images, labels)
    assert _compiled_graphs() == graphs, "a later step was compiled again"


def test_the_training_command_compiles_resnet18_to_the_end(tmp_path):
    """ResNet18 with the default layers (the channels-last Conv2D, the fused
    BatchNorm) through `--jit-compile on`; 40 images in batches of 16 (the
    remainder dropped), evaluation ending with a smaller batch. At
    mixed_bfloat16, the GPU's precision; float32 compiles the same layers in
    the step test above."""
    output = run_command_under_backend(
        "torch",
        [
            "-m", "keras_cifar_resnet.train", "--synthetic", "--model", "resnet18",
            "--width-multiplier", "0.0625", "--max-train-examples", "40",
            "--validation-size", "16", "--batch-size", "16", "--epochs", "1",
            "--mixed-precision", "mixed_bfloat16", "--jit-compile", "on",
            "--output-dir", str(tmp_path / "run"),
        ],  # fmt: skip
        timeout=900,
    )
    assert "test accuracy" in output
    assert (tmp_path / "run" / "best.keras").is_file()
