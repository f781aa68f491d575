"""The backend is chosen before Keras is imported, and every problem is one line.

The cases about process start run in fresh processes, with frameworks made
missing the way Python itself sees a missing module: `sys.modules[name] =
None` makes both `import name` and `importlib.util.find_spec(name)` fail, as
for a package installed with the `[jax]` extra only.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_cifar_resnet import backend_choice
from keras_cifar_resnet.backend_choice import BackendError

# The tests that hide TensorFlow and torch stand for a [jax]-only install.
needs_jax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None,
    reason="stands for a [jax]-only install, and jax is not installed",
)


def _python(code, tmp_path, *, hide=(), backend=None, configured="tensorflow"):
    """Runs `code` in a fresh process with `hide` missing; (status, out, err).

    KERAS_HOME is a folder whose keras.json names `configured` (TensorFlow by
    default, as the file Keras writes on its first import does); None leaves
    the folder as it is, a new one without keras.json.
    """
    home = tmp_path / "keras-home"
    home.mkdir(exist_ok=True)
    if configured is not None:
        (home / "keras.json").write_text(json.dumps({"backend": configured}))
    env = dict(os.environ, KERAS_HOME=str(home), PYTHONWARNINGS="ignore")
    env.pop("KERAS_BACKEND", None)
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    prelude = "".join(f"sys.modules[{name!r}] = None\n" for name in hide)
    result = subprocess.run(
        [sys.executable, "-c", f"import sys\n{prelude}{textwrap.dedent(code)}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("backend", [None, "pytorch"])
def test_help_needs_no_backend(tmp_path, backend):
    code = """
        from keras_cifar_resnet import evaluate, predict, train
        for command in (train, evaluate, predict):
            try:
                status = command.main(["--help"])
            except SystemExit as exit_:
                status = exit_.code
            assert status == 0, status
        print("keras imported:", "keras" in sys.modules)
    """
    status, out, err = _python(
        code, tmp_path, hide=("tensorflow", "torch"), backend=backend
    )
    assert status == 0 and "Traceback" not in err, err[-2000:]
    assert out.count("usage: keras-cifar-resnet-") == 3
    assert out.strip().endswith("keras imported: False")


@needs_jax
def test_a_run_without_keras_backend_picks_an_installed_one(tmp_path):
    code = """
        from keras_cifar_resnet.backend_choice import choose_backend
        import keras
        print(keras.backend.backend(), "|", choose_backend().describe())
    """
    status, out, err = _python(code, tmp_path, hide=("tensorflow", "torch"))
    assert status == 0, err[-2000:]
    backend, described = out.strip().splitlines()[-1].split(" | ")
    assert backend == "jax" and described.startswith("jax (KERAS_BACKEND not set")
    assert "keras.json names tensorflow, which is not installed" in described


@pytest.mark.parametrize(
    "backend, hide, status, expected",
    [
        (
            "pytorch",
            (),
            2,
            "KERAS_BACKEND=pytorch is not a backend this package runs on; set it "
            "to one of tensorflow, jax, torch (installed: ",
        ),
        pytest.param(
            "tensorflow",
            ("tensorflow", "torch"),
            1,
            "KERAS_BACKEND=tensorflow, but tensorflow is not installed "
            "(installed: jax); install it with pip install",
            marks=needs_jax,
        ),
    ],
)
def test_a_wrong_keras_backend_is_one_line(tmp_path, backend, hide, status, expected):
    code = """
        from keras_cifar_resnet.train import main
        sys.exit(main(["--model", "tiny", "--synthetic", "--output-dir", "run"]))
    """
    got, out, err = _python(code, tmp_path, hide=hide, backend=backend)
    assert got == status, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    assert err.startswith("keras-cifar-resnet-train: error: ") and expected in err


def test_the_choice_keeps_an_explicit_one_and_names_what_is_installed(monkeypatch):
    monkeypatch.setattr(backend_choice, "installed_frameworks", lambda: ["jax"])
    monkeypatch.setattr(backend_choice, "_configured_backend", lambda: "torch")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend_choice._pick().name == "jax"
    monkeypatch.delenv("KERAS_BACKEND")
    choice = backend_choice._pick()
    assert choice.name == "jax" and "names torch, which is not installed" in (
        choice.reason
    )
    monkeypatch.setattr(
        backend_choice, "installed_frameworks", lambda: ["jax", "torch"]
    )
    assert backend_choice._pick().name == "torch"  # keras.json's, installed
    monkeypatch.setattr(backend_choice, "installed_frameworks", lambda: [])
    with pytest.raises(BackendError, match="no Keras backend is installed") as error:
        backend_choice._pick()
    assert not error.value.usage


KERAS_FIRST = """
    import keras

    from keras_cifar_resnet.backend_choice import choose_backend

    print(keras.backend.backend(), choose_backend().name)
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", [None, "jax"])
def test_a_new_keras_home_names_the_chosen_backend_so_keras_can_come_first(
    tmp_path, backend
):
    # A [jax]-only install: Keras alone would write keras.json naming TensorFlow.
    hide = ("tensorflow", "torch")
    status, _, err = _python(
        "import keras_cifar_resnet, keras",
        tmp_path,
        hide=hide,
        backend=backend,
        configured=None,
    )
    assert status == 0, err[-2000:]
    config = json.loads((tmp_path / "keras-home" / "keras.json").read_text())
    assert config["backend"] == "jax"
    assert config["image_data_format"] == "channels_last"
    status, out, err = _python(KERAS_FIRST, tmp_path, hide=hide, configured=None)
    assert status == 0, err[-2000:]
    assert out.split() == ["jax", "jax"] and not err.strip(), err


@needs_jax
def test_keras_json_naming_a_missing_framework_is_one_warning_line(tmp_path):
    code = "import keras_cifar_resnet"
    status, out, err = _python(code, tmp_path, hide=("tensorflow", "torch"))
    assert status == 0, err[-2000:]
    path = tmp_path / "keras-home" / "keras.json"
    assert err.strip() == (
        f"keras-cifar-resnet: warning: {path} names backend 'tensorflow', which "
        "is not installed, so `import keras` before this package fails; set "
        '"backend" there to "jax" (or delete the file and import '
        "keras_cifar_resnet once)"
    )
    assert json.loads(path.read_text()) == {"backend": "tensorflow"}  # left as is
    # With an installed framework named, nothing is said.
    status, out, err = _python(
        code, tmp_path, hide=("tensorflow", "torch"), configured="jax"
    )
    assert status == 0 and not err.strip(), err


def test_an_existing_keras_json_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "keras.json").write_text('{"backend": "torch", "floatx": "float16"}')
    backend_choice._write_keras_config("jax")
    assert json.loads((tmp_path / "keras.json").read_text())["floatx"] == "float16"
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "new" / "home"))
    backend_choice._write_keras_config("jax")
    written = json.loads((tmp_path / "new" / "home" / "keras.json").read_text())
    assert written == {
        "floatx": "float32",
        "epsilon": 1e-07,
        "backend": "jax",
        "image_data_format": "channels_last",
    }


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"floatx": ["float32"]}', "its floatx is ['float32'], not one of"),
        ("[1, 2]", "holds a JSON list, not an object of settings"),
        (None, "is a folder; remove it"),
        ('{"image_data_format": 3}', "its image_data_format is 3"),
        ('{"epsilon": "small"}', "its epsilon is 'small', not a float"),
    ],
)
def test_a_keras_json_keras_cannot_import_with_is_named_in_one_line(
    content, says, tmp_path, monkeypatch
):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    if content is None:
        (tmp_path / "keras.json").mkdir()
    else:
        (tmp_path / "keras.json").write_text(content)
    problem = backend_choice.keras_config_problem()
    assert problem.startswith(f"Keras's settings file {tmp_path / 'keras.json'}")
    assert says in problem


@pytest.mark.parametrize("content", [None, "not json", '{"floatx": "float16"}'])
def test_a_keras_json_keras_accepts_is_no_problem(content, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    if content is not None:
        (tmp_path / "keras.json").write_text(content)
    assert backend_choice.keras_config_problem() is None


def test_the_commands_use_float32_and_channels_last_whatever_keras_json_says():
    keras = pytest.importorskip("keras")
    keras.config.set_floatx("float16")
    keras.config.set_image_data_format("channels_first")
    try:
        note = backend_choice.use_package_keras_settings()
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_image_data_format("channels_last")
    assert "sets floatx float16, image_data_format channels_first" in note
    assert "uses floatx float32, image_data_format channels_last" in note
    assert backend_choice.use_package_keras_settings() is None


def test_framework_warnings_stay_warnings_under_pythonwarnings_error():
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("error")
        backend_choice.keep_framework_warnings_as_warnings()
        warnings.warn_explicit(  # shown, not raised
            "old", DeprecationWarning, "_pytree.py", 1, module="torch.utils"
        )
        assert [str(w.message) for w in caught] == ["old"]
        with pytest.raises(UserWarning):
            warnings.warn_explicit("mine", UserWarning, "x.py", 1, module="myscript")


@pytest.mark.parametrize(
    "framework, gpu, expected",
    [
        (
            "torch",
            False,
            "pip install torch --index-url https://download.pytorch.org/whl/cpu, "
            "then pip install -e '{checkout}[torch]'",
        ),
        ("torch", True, "pip install -e '{checkout}[torch]'"),
        ("jax", False, "pip install -e '{checkout}[jax]'"),
        ("jax", True, "pip install -e '{checkout}[jax-cuda]'"),
        ("tensorflow", True, "pip install -e '{checkout}[tensorflow-cuda]'"),
    ],
)
def test_the_install_advice_is_the_readmes_for_this_machine(
    monkeypatch, framework, gpu, expected
):
    monkeypatch.setattr(backend_choice, "nvidia_gpu_present", lambda: gpu)
    checkout = backend_choice._checkout()
    assert checkout is not None and (checkout / "README.md").is_file()
    advice = backend_choice.install_advice(framework)
    assert advice == expected.format(checkout=checkout)
    # The package is on no index: never the bare name.
    assert f"'keras-cifar-resnet[{framework}]'" not in advice


def test_the_install_advice_outside_a_checkout_names_the_git_source(monkeypatch):
    monkeypatch.setattr(backend_choice, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(backend_choice, "_checkout", lambda: None)
    monkeypatch.setattr(
        backend_choice, "_repository_url", lambda: "https://example.org/k.git"
    )
    assert backend_choice.install_advice("jax") == (
        "pip install 'keras-cifar-resnet[jax] @ git+https://example.org/k.git'"
    )
