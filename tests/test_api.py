"""The public API as a dependent uses it: import, load a saved model, compile, fit."""

from __future__ import annotations

import numpy as np
import pytest

import keras_cifar_resnet
from tests.backend_subprocess import BACKENDS, current_backend, run_under_backend

LOAD = """
    import keras_cifar_resnet
    import keras
    model = keras.saving.load_model({path!r})  # no custom_objects
    print(type(model).__module__, type(model.get_layer("stem_bn")).__module__)
"""


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    from keras_cifar_resnet.models import TinyResNet

    path = tmp_path_factory.mktemp("saved") / "tiny.keras"
    TinyResNet().save(path)
    return str(path)


KERAS_FIRST = LOAD.replace(
    "import keras_cifar_resnet\n    import keras\n",
    "import keras\n    import keras_cifar_resnet\n",
)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_importing_the_package_is_enough_for_load_model(saved_model, backend):
    """Saved under the session's backend, loaded in a fresh process under each.

    Under the session's own backend Keras is imported first, the other
    order; one subprocess per backend keeps the test short.
    """
    pytest.importorskip(backend)
    code = KERAS_FIRST if backend == current_backend() else LOAD
    assert KERAS_FIRST != LOAD  # the replacement above matched
    out = run_under_backend(backend, code.format(path=saved_model), timeout=600)
    assert out.split() == [
        "keras_cifar_resnet.models",
        "keras_cifar_resnet.network.batch_norm",
    ]


@pytest.mark.slow
def test_a_backend_the_package_cannot_train_on_leaves_keras_working():
    """Under Keras's numpy backend the package registers nothing and warns nothing."""
    out = run_under_backend(
        "numpy",
        """
        import warnings
        warnings.simplefilter("error")
        import keras_cifar_resnet, keras, sys
        network = "keras_cifar_resnet.models"
        print(keras.backend.backend(), network in sys.modules)
        """,
    )
    assert out.split() == ["numpy", "False"]


def test_compile_for_training_uses_the_recipe_scaled_to_the_batch():
    from keras_cifar_resnet.models import TinyResNet

    model = keras_cifar_resnet.compile_for_training(
        TinyResNet(), steps_per_epoch=10, epochs=4, batch_size=128
    )
    # The default recipe: 0.2 at batch 512, scaled to 0.05; smoothing, decay.
    assert model.label_smoothing == 0.1 and model.weight_decay == 5e-4
    assert model.augmentation is not None

    def rate_at(step):
        model.optimizer.iterations.assign(step)
        return float(model.optimizer.learning_rate)

    assert rate_at(20) == pytest.approx(0.05, rel=1e-3)  # the warm-up's end
    assert rate_at(40) == pytest.approx(0.0, abs=1e-6)  # the last step
    model.optimizer.iterations.assign(0)
    images = np.zeros((8, 32, 32, 3), np.uint8)
    history = model.fit(images, np.arange(8) % 10, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"steps_per_epoch": 5, "learning_rat": 0.1}, "unknown training settings"),
        ({"steps_per_epoch": 5, "recipe": "fast"}, "recipe"),
    ],
)
def test_compile_for_training_rejects_bad_arguments(kwargs, expected):
    from keras_cifar_resnet.models import TinyResNet

    with pytest.raises(ValueError, match=expected):
        keras_cifar_resnet.compile_for_training(TinyResNet(), **kwargs)


def _modules_the_models_module_imports_that_import_keras():
    """The package modules `models` imports, directly or not, whose top level
    imports Keras: importing one first starts Keras's import, whose class
    registration imports `models` while that module is still initializing."""
    import ast
    from pathlib import Path

    root = Path(keras_cifar_resnet.__file__).parent.parent

    def path_of(module):
        base = root.joinpath(*module.split("."))
        return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")

    def package_imports(module):
        tree = ast.parse(path_of(module).read_text())
        for node in tree.body:  # the top level only: what runs on import
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                if name.startswith("keras_cifar_resnet.") and path_of(name).exists():
                    yield name

    def imports_keras(module):
        return any(
            line.startswith(("import keras", "from keras import", "from keras."))
            for line in path_of(module).read_text().splitlines()
        )

    # `models` also imports its backend's train-step module, by name
    # (`training.steps`): each is followed.
    steps = "keras_cifar_resnet.training.steps"
    seen, todo = set(), ["keras_cifar_resnet.models"]
    todo += [f"{steps}.{backend}" for backend in BACKENDS]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(package_imports(module))
    return sorted(module for module in seen if imports_keras(module))


@pytest.mark.slow
def test_any_module_imported_first_still_registers_the_classes():
    """A user's first import may be any module: Keras's import, inside it,
    registers the classes while that module is still initializing."""
    from concurrent.futures import ThreadPoolExecutor

    from tests.backend_subprocess import run_only_in_session

    run_only_in_session("tensorflow", "imports each module in a fresh process")
    code = """
        import warnings
        warnings.simplefilter("error", UserWarning)
        import {module}
        import keras
        print(keras.saving.get_registered_object("keras_cifar_resnet>ResNet"))
    """
    # The train-step modules are the base classes `ResNet` is defined with:
    # imported first, one is still initializing when `models` needs it.
    modules = [
        module
        for module in _modules_the_models_module_imports_that_import_keras()
        if not module.startswith("keras_cifar_resnet.training.steps.")
    ]
    assert "keras_cifar_resnet.network.initializers" in modules
    with ThreadPoolExecutor(2) as pool:
        outputs = pool.map(
            lambda module: run_under_backend("jax", code.format(module=module)),
            modules,
        )
        for module, output in zip(modules, outputs, strict=True):
            assert "ResNet" in output, (module, output)
