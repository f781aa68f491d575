"""How the package's layers pick a backend's kernel.

Each fused layer (`batch_norm`, `conv`, `pooling`) names, per backend, the
module that holds its kernel; only the current backend's is imported. Keras
is imported only when a kernel is picked: importing this module first must
not start Keras's import, whose class registration imports the layers that
subclass `ChannelsLastKernelLayer` (registration.py).
"""

from __future__ import annotations

import importlib


def backend_kernel(modules, function_name, backend=None):
    """`function_name` from `modules[backend]` (default: Keras's backend), or None."""
    import keras

    module_name = modules.get(backend or keras.backend.backend())
    if module_name is None:
        return None
    return getattr(importlib.import_module(module_name), function_name)


class ChannelsLastKernelLayer:
    """Mixin of a Keras layer whose kernel works on channels-last memory as it is.

    Put before the Keras layer class. The subclass defines `fused_kernel()`
    (its backend's kernel, or None). Its `call` runs the kernel only where
    `_kernel_applies` holds: a kernel is set, no compiler it steps aside for
    (its `steps_aside()`: torch.compile) is tracing, and the input is 4-D
    channels-last.

    Args:
        kernel_function: the kernel, None for Keras's own computation, or
            "auto" (the default) for the current backend's.
        **kwargs: the Keras layer's arguments.
    """

    def __init__(self, *args, kernel_function="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.kernel_function = (
            self.fused_kernel() if kernel_function == "auto" else kernel_function
        )

    def _kernel_applies(self, inputs):
        return (
            self.kernel_function is not None
            and not getattr(self.kernel_function, "steps_aside", bool)()
            and len(inputs.shape) == 4
            and self.data_format == "channels_last"
        )
