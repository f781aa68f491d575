"""The quick first run, and the start line's note when a full-size run has no GPU.

Full-size ResNet18 takes hours per epoch on a CPU; its width-0.125 version
learns on full CIFAR-10 in minutes. The training command does not refuse a
slow run: it says on its start line that no accelerator was found and names
the quick one.
"""

from __future__ import annotations

# The README's first command: ResNet18 at 1/8 width, 6 epochs, full CIFAR-10.
QUICK_RUN_FLAGS = (
    "--width-multiplier 0.125 --epochs 6 --batch-size 256 --warmup-epochs 0.3"
)
# Narrower than this, a network is quick enough on a CPU not to need the note.
FULL_SIZE_WIDTH = 0.5


def accelerator_visible():
    """Whether the Keras backend puts tensors on a GPU or another accelerator."""
    import keras

    device = getattr(keras.ops.zeros(()), "device", None)
    if callable(device):  # TensorFlow's is an attribute, JAX's a method
        device = device()
    return "cpu" not in str(device).lower()


def no_accelerator_note(model, width_multiplier):
    """`"; ..."` for the start line of a full-size run on a CPU, else `""`."""
    if model == "tiny" or width_multiplier < FULL_SIZE_WIDTH or accelerator_visible():
        return ""
    return (
        f"; no GPU found: full-size {model} takes hours per epoch on a CPU, "
        f"for a run of minutes per epoch try {QUICK_RUN_FLAGS}"
    )
