"""Registers the package's saved-model classes with Keras once Keras is imported.

`keras.saving.load_model` finds a custom class only once its module has run
`register_keras_serializable`. The package's public names load lazily (a
command's `--help` and its one-line errors need no Keras), so importing the
package alone would register nothing. Instead the package's `__init__` calls
`register_when_keras_is_imported`: if Keras is already imported, the classes
are registered at once; otherwise a finder on `sys.meta_path` waits for the
`keras` import and registers them right after it. A process that never
imports Keras (`--help`) never pays for it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# Importing these modules registers every class a saved ResNet names:
# `ResNet` and the fused `BatchNormalization` it builds with.
REGISTERING_MODULES = ("keras_cifar_resnet.models",)
# Backends the registering modules import on; `numpy` has no train step.
TRAINABLE_BACKENDS = ("jax", "tensorflow", "torch")


def register_classes():
    """Imports the registering modules, if Keras's backend is one of ours.

    A failure is a warning, not an error: it must not break the user's own
    `import keras`.
    """
    backend = sys.modules["keras"].backend.backend()
    if backend not in TRAINABLE_BACKENDS:
        return
    try:
        for name in REGISTERING_MODULES:
            importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 -- reported, never raised into Keras
        warnings.warn(
            "keras_cifar_resnet could not register its classes with Keras, so "
            f"load_model will not find them: {type(err).__name__}: {err}",
            stacklevel=2,
        )


class _RegisterAfterLoading(importlib.abc.Loader):
    """Runs Keras's own loader, then registers; hands the module back untouched."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # The module keeps Keras's loader: nothing later sees this wrapper.
        module.__loader__ = module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        register_classes()


class _KerasImportWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the first `import keras`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # once; and so find_spec below skips it
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterLoading(spec.loader)
        return spec


def register_when_keras_is_imported():
    """Registers the classes now if Keras is imported, else right after its import."""
    if "keras" in sys.modules:
        register_classes()
    elif not any(isinstance(f, _KerasImportWatcher) for f in sys.meta_path):
        sys.meta_path.insert(0, _KerasImportWatcher())
