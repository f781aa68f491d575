"""A full-size run without a GPU says so on its start line and names the quick run."""

from __future__ import annotations

import pytest

from keras_cifar_resnet.config import resolve_config
from keras_cifar_resnet.training import first_run


def test_the_quick_run_flags_are_valid_training_flags():
    config = resolve_config(first_run.QUICK_RUN_FLAGS.split())
    assert config.width_multiplier < first_run.FULL_SIZE_WIDTH


@pytest.mark.parametrize(
    "model, width, accelerator, noted",
    [
        ("resnet18", 1.0, False, True),
        ("resnet34", 1.0, False, True),
        ("resnet18", 1.0, True, False),
        ("resnet18", 0.125, False, False),
        ("tiny", 1.0, False, False),
    ],
)
def test_the_note_only_for_a_full_size_network_on_a_cpu(
    monkeypatch, model, width, accelerator, noted
):
    monkeypatch.setattr(first_run, "accelerator_visible", lambda: accelerator)
    note = first_run.no_accelerator_note(model, width)
    assert bool(note) == noted
    if noted:
        assert note.startswith(f"; no GPU found: full-size {model}")
        assert note.endswith(first_run.QUICK_RUN_FLAGS) and "\n" not in note
