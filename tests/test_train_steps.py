"""The custom train steps: the same update on every backend, and they learn.

The cross-backend test runs one optimizer step from identical weights on an
identical batch under this process's backend and, in a subprocess each, under
the other two, then compares the updated weights and BatchNorm statistics.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from keras_cifar_resnet.models import TinyResNet
from tests.backend_subprocess import (
    BACKENDS,
    CROSS_BACKEND_SESSION,
    current_backend,
    run_only_in_session,
    run_under_backend,
)

ROOT = Path(__file__).resolve().parents[1]

# Exaggerated so that each term moves the update measurably: with weight
# decay 0.05 the L2 term is a visible share of each kernel's gradient, so a
# backend that dropped it (or applied it to biases) would fail the comparison.
STEP_SETTINGS = {"learning_rate": 0.1, "label_smoothing": 0.2, "weight_decay": 0.05}
# Relative to each variable's largest update. Float32 (eps 1.2e-7) gradients
# of a conv kernel here sum 16 * 32 * 32 = 16,384 products per entry, in an
# order each backend's kernels choose: the worst-case rounding bound is
# n * eps ~ 2e-3 of the update, the typical one sqrt(n) * eps ~ 2e-5. 2e-3 is
# the bound; a missing or doubled loss term, a frozen BatchNorm statistic or
# an un-zeroed gradient changes updates by 10% or more.
RELATIVE_TOLERANCE = 2e-3
STEPS = (1, 2)


def _initial_state(path):
    """Weights (BatchNorm statistics perturbed from 0/1) and a batch, in `path`."""
    rng = np.random.default_rng(7)
    model = TinyResNet(batch_norm_momentum=0.9)
    arrays = {}
    for index, variable in enumerate(model.weights):
        shape = tuple(variable.shape)
        name = variable.path
        if name.endswith("kernel"):
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif name.endswith("moving_variance"):
            value = 1.0 + 0.2 * rng.random(shape)
        elif name.endswith("gamma"):
            value = 1.0 + 0.1 * rng.normal(size=shape)
        else:  # biases, beta, moving_mean
            value = 0.1 * rng.normal(size=shape)
        arrays[f"weight_{index:03d}"] = value.astype(np.float32)
    arrays["paths"] = np.array([v.path for v in model.weights])
    arrays["images"] = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    arrays["labels"] = rng.integers(0, 10, 16).astype(np.int64)
    np.savez(path, **arrays)


def one_step(input_path, output_path):
    """Two training steps of TinyResNet under the current backend, saved after each.

    Run in-process for this backend and in a subprocess for the others. The
    second step on the same batch checks what the first cannot: the momentum
    buffers, and that gradients do not accumulate across steps (torch's
    `zero_grad`).
    """
    inputs = np.load(input_path)
    model = TinyResNet(batch_norm_momentum=0.9)
    assert [v.path for v in model.weights] == list(inputs["paths"])
    model.set_weights([inputs[f"weight_{i:03d}"] for i in range(len(model.weights))])
    model.compile(
        keras.optimizers.SGD(
            STEP_SETTINGS["learning_rate"], momentum=0.9, nesterov=True
        ),
        label_smoothing=STEP_SETTINGS["label_smoothing"],
        weight_decay=STEP_SETTINGS["weight_decay"],
        augmentation=None,
    )
    arrays = {}
    for step in STEPS:
        logs = model.train_on_batch(
            inputs["images"], inputs["labels"], return_dict=True
        )
        arrays[f"step{step}_loss"] = np.float32(logs["loss"])
        for index, variable in enumerate(model.weights):
            arrays[f"step{step}_weight_{index:03d}"] = keras.ops.convert_to_numpy(
                variable
            )
    np.savez(output_path, **arrays)


@pytest.fixture(scope="module")
def step_results(tmp_path_factory):
    """{backend: updated arrays} for all three backends, and the initial arrays."""
    run_only_in_session(CROSS_BACKEND_SESSION, "steps every backend itself")
    folder = tmp_path_factory.mktemp("one_step")
    initial = folder / "initial.npz"
    _initial_state(initial)
    results = {}
    here = current_backend()
    for backend in BACKENDS:
        output = folder / f"{backend}.npz"
        if backend == here:
            one_step(initial, output)
        else:
            run_under_backend(
                backend,
                f"""
                import sys
                sys.path.insert(0, {str(ROOT)!r})
                from tests.test_train_steps import one_step
                one_step({str(initial)!r}, {str(output)!r})
                """,
                cwd=ROOT,
            )
        results[backend] = dict(np.load(output))
    return dict(np.load(initial)), results


def _feeds_batch_norm(path):
    layer, name = path.rsplit("/", 1)
    return name == "bias" and layer.endswith(("stem_conv", "_conv1", "_conv2"))


@pytest.mark.slow
@pytest.mark.parametrize("step", STEPS)
def test_a_step_gives_the_same_weights_and_batchnorm_statistics(step_results, step):
    initial, results = step_results
    here = current_backend()
    paths = list(initial["paths"])
    losses = {backend: float(r[f"step{step}_loss"]) for backend, r in results.items()}
    assert max(losses.values()) - min(losses.values()) < 1e-4, losses
    moving_checked = 0
    for index, path in enumerate(paths):
        start = initial[f"weight_{index:03d}"]
        key = f"step{step}_weight_{index:03d}"
        update_here = results[here][key] - start
        scale = float(np.abs(update_here).max())
        if _feeds_batch_norm(path):
            # BatchNorm subtracts the batch mean, so these biases get no
            # gradient (only float noise) and only weight decay could move
            # them, which is for kernels only.
            for backend in BACKENDS:
                assert np.abs(results[backend][key] - start).max() < 1e-6, path
            continue
        # Every other variable moves: trainable ones by the step, the moving
        # statistics by the momentum update (a frozen one would not).
        assert scale > 1e-6, f"{path} did not change under {here}"
        moving_checked += "moving" in path
        for backend in BACKENDS:
            if backend == here:
                continue
            update = results[backend][key] - start
            difference = float(np.abs(update - update_here).max())
            assert difference <= RELATIVE_TOLERANCE * scale, (
                f"{path} after step {step}: {here} and {backend} updates differ by "
                f"{difference:.3g} (largest update {scale:.3g})"
            )
    assert moving_checked == 2 * 5  # moving mean and variance of 5 BatchNorms


def _batch(count=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
    return images, rng.integers(0, 10, count).astype(np.int64)


@pytest.mark.slow
def test_a_small_batch_is_overfitted():
    keras.utils.clear_session()
    images, labels = _batch()
    model = TinyResNet(batch_norm_momentum=0.9)
    model.compile(keras.optimizers.Adam(1e-2))
    first = model.train_on_batch(images, labels, return_dict=True)
    for _ in range(80):
        logs = model.train_on_batch(images, labels, return_dict=True)
    assert logs["loss"] < 0.2 * first["loss"], (first, logs)
    # Training mode fits; so must inference (moving statistics are used).
    predictions = np.argmax(model.predict(images, verbose=0), axis=1)
    assert (predictions == labels).mean() >= 0.9


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_steps_run(policy):
    from keras_cifar_resnet.data.augment import Augmentation

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        images, labels = _batch(8)
        model = TinyResNet()
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True)
        if policy == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(
            optimizer,
            label_smoothing=0.1,
            weight_decay=5e-4,
            augmentation=Augmentation(cutout_size=8),
        )
        before = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
        for _ in range(3):
            logs = model.train_on_batch(images, labels, return_dict=True)
        assert np.isfinite(logs["loss"])
        # Variables stay float32; the compute dtype is the policy's.
        assert all(v.dtype == "float32" for v in model.weights)
        assert model.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
        after = [keras.ops.convert_to_numpy(v) for v in model.trainable_weights]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        assert model.optimizer.iterations.numpy() == 3
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("loss_scaled", [False, True], ids=["plain", "loss-scaled"])
def test_weight_decay_is_the_coupled_l2_gradient(loss_scaled):
    """One SGD step with decay `wd` moves each kernel by `-lr * wd * w` more.

    The coupled L2 term `0.5 * wd * sum(w ** 2)`, checked against its
    formula rather than against another backend, which shares the code.
    Biases and BatchNorm must not move differently. Under a loss scale (the
    float16 path) the decay must be unscaled with the gradients.
    """
    learning_rate, weight_decay = 0.1, 0.05
    images, labels = _batch(8)
    start = TinyResNet().get_weights()
    updated = {}
    for decay in (0.0, weight_decay):
        model = TinyResNet()
        model.set_weights(start)
        optimizer = keras.optimizers.SGD(learning_rate)
        if loss_scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        model.compile(optimizer, weight_decay=decay)
        model.train_on_batch(images, labels)
        updated[decay] = model.get_weights()
    paths = [v.path for v in TinyResNet().weights]
    kernels = 0
    for path, w, without, with_decay in zip(
        paths, start, updated[0.0], updated[weight_decay], strict=True
    ):
        expected = -learning_rate * weight_decay * w if path.endswith("kernel") else 0
        kernels += path.endswith("kernel")
        np.testing.assert_allclose(
            with_decay - without, expected, atol=1e-6, err_msg=path
        )
    assert kernels == 7  # stem, 2 + 2 block convs, 1 shortcut, the dense head
