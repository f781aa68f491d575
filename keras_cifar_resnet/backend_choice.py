"""Which Keras backend a run uses, chosen before Keras is imported.

Keras fixes its backend once, when it is imported: `KERAS_BACKEND`, else the
`backend` of `keras.json` in `$KERAS_HOME` (default `~/.keras`), else
TensorFlow. Without TensorFlow installed, or with a misspelt
`KERAS_BACKEND`, that import fails with a long traceback. This module, the
one place that makes the choice, runs first (the package's `__init__` calls
`choose_backend`): an explicit choice is kept, else the first installed
framework of `BACKENDS` is picked; what it finds is reported in one line.
In a Keras home without `keras.json` it writes one naming the backend
chosen, before Keras writes its own naming TensorFlow, so that a later
`import keras` before the package finds an installed backend; a `keras.json`
that names a framework not installed gets a one-line warning with the fix.

    KERAS_BACKEND=jax python -m keras_cifar_resnet.train ...   # explicit
    python -m keras_cifar_resnet.train ...    # keras.json, else the first installed

It only looks for the frameworks (`importlib.util.find_spec`), imports none.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

# The backends this package trains on, in the order tried when none is
# chosen: Keras's own default first.
BACKENDS = ("tensorflow", "jax", "torch")
ENV_VAR = "KERAS_BACKEND"


class BackendError(Exception):
    """No usable backend; the message is one line saying what to do.

    Attributes:
        usage: bool, True for a value the user set wrongly (exit status 2),
            False for a framework that is missing (exit status 1).
    """

    def __init__(self, message, *, usage):
        super().__init__(message)
        self.usage = usage


@dataclasses.dataclass(frozen=True)
class BackendChoice:
    """The backend and why: `name` and `reason` (words for the start line)."""

    name: str
    reason: str

    def describe(self):
        return f"{self.name} ({self.reason})"


def installed_frameworks():
    """The frameworks of `BACKENDS` that can be imported, without importing them."""
    return [name for name in BACKENDS if _installed(name)]


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # ValueError: a module set to None in sys.modules, or without a spec.
        return False


def keras_config_path():
    """Keras's `keras.json`: in `$KERAS_HOME`, else `~/.keras` (Keras's rule)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        # Keras's own fallback for a home folder it cannot write to.
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    return Path(home) / "keras.json"


def _configured_backend():
    """The backend `keras.json` names, or None (no file, unreadable, no entry)."""
    try:
        backend = json.loads(keras_config_path().read_bytes()).get("backend")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return backend if isinstance(backend, str) else None


# What Keras accepts in keras.json (it fails its own import otherwise).
KERAS_FLOATX = ("float16", "float32", "float64")
KERAS_IMAGE_DATA_FORMATS = ("channels_last", "channels_first")
# The settings this package's models are made for; the commands use these
# whatever keras.json says (`use_package_keras_settings`).
PACKAGE_KERAS_SETTINGS = {"floatx": "float32", "image_data_format": "channels_last"}


def keras_config_problem():
    """Why Keras's import would fail on `keras.json`, in one line; None if not.

    Keras reads the file as it is imported and fails there with a
    traceback that does not name it (a folder, a JSON list, a `floatx` that
    is a list). A file that is not JSON at all Keras ignores.
    """
    path = keras_config_path()
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return f"Keras's settings file {path} is a folder; remove it"
    except OSError as error:
        return f"cannot read Keras's settings file {path} ({error.strerror})"
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(config, dict):
        return (
            f"Keras's settings file {path} holds a JSON {type(config).__name__}, "
            "not an object of settings; fix or delete it"
        )
    for key, allowed in (
        ("floatx", KERAS_FLOATX),
        ("image_data_format", KERAS_IMAGE_DATA_FORMATS),
    ):
        value = config.get(key, allowed[1] if key == "floatx" else allowed[0])
        if not isinstance(value, str) or value not in allowed:
            return (
                f"Keras's settings file {path}: its {key} is {value!r}, not one of "
                f"{', '.join(allowed)}; fix or delete it"
            )
    if not isinstance(config.get("epsilon", 1e-7), float):
        return (
            f"Keras's settings file {path}: its epsilon is "
            f"{config['epsilon']!r}, not a float; fix or delete it"
        )
    return None


def use_package_keras_settings():
    """Sets Keras's `floatx` and `image_data_format` to what the models need.

    For the commands, after Keras is imported: a `keras.json` asking for
    float16 or channels_first would otherwise break training (float16
    variables in the fused BatchNorm) or refuse a good model file.

    Returns:
        str or None, a note naming what keras.json asked for, when it asked
        for something else.
    """
    import keras

    current = {
        "floatx": keras.config.floatx(),
        "image_data_format": keras.config.image_data_format(),
    }
    changed = {k: v for k, v in current.items() if v != PACKAGE_KERAS_SETTINGS[k]}
    if not changed:
        return None
    keras.config.set_floatx(PACKAGE_KERAS_SETTINGS["floatx"])
    keras.config.set_image_data_format(PACKAGE_KERAS_SETTINGS["image_data_format"])
    asked = ", ".join(f"{key} {value}" for key, value in changed.items())
    used = ", ".join(f"{key} {PACKAGE_KERAS_SETTINGS[key]}" for key in changed)
    return (
        f"note: {keras_config_path()} sets {asked}; this command uses {used}, "
        "which its models are made for"
    )


# Where the frameworks and the libraries under them issue warnings from.
FRAMEWORK_MODULES = r"(keras|torch|jax|jaxlib|tensorflow|numpy|h5py|PIL)(\.|$)"


def keep_framework_warnings_as_warnings():
    """The frameworks' own warnings stay warnings under `PYTHONWARNINGS=error`.

    For the commands: a deprecation inside torch or numpy is no fault of the
    user's run, and `-W error` (meant for one's own code) would otherwise
    end it with a traceback. The package's own warnings keep the user's
    filter.
    """
    warnings.filterwarnings("default", module=FRAMEWORK_MODULES)


def _installed_words(installed):
    return ", ".join(installed) if installed else "none of them"


# PyTorch's CPU wheels: PyPI's Linux torch is a CUDA build of several GB.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# The extras that install a framework's CUDA build (pyproject.toml).
CUDA_EXTRAS = {"jax": "jax-cuda", "tensorflow": "tensorflow-cuda", "torch": "torch"}


def nvidia_gpu_present():
    """Whether this machine has an NVIDIA driver loaded (no framework imported)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidiactl").exists()


def _checkout():
    """The source checkout this package runs from, or None (installed from git)."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def _repository_url():
    """The git URL pip installed this package from (PEP 610), else `URL`."""
    try:
        origin = json.loads(
            importlib.metadata.distribution("keras-cifar-resnet").read_text(
                "direct_url.json"
            )
            or "{}"
        )
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return "URL"
    return origin["url"] if "vcs_info" in origin and "url" in origin else "URL"


def install_advice(framework):
    """The README's install of `framework` for this machine, as commands.

    From the checkout the package runs from (the package is on no index);
    on a machine without an NVIDIA GPU, torch's CPU build goes first, as the
    README says, so that pip keeps it rather than fetch the CUDA one.
    """
    gpu = nvidia_gpu_present()
    extra = CUDA_EXTRAS[framework] if gpu else framework
    checkout = _checkout()
    if checkout is None:
        target = f"'keras-cifar-resnet[{extra}] @ git+{_repository_url()}'"
    else:
        target = f"-e '{checkout}[{extra}]'"
    command = f"pip install {target}"
    if framework == "torch" and not gpu:
        command = f"pip install torch --index-url {TORCH_CPU_INDEX}, then {command}"
    return command


def _pick():
    installed = installed_frameworks()
    valid = ", ".join(BACKENDS)
    value = os.environ.get(ENV_VAR)
    if value:
        if value not in BACKENDS:
            raise BackendError(
                f"{ENV_VAR}={value} is not a backend this package runs on; set it "
                f"to one of {valid} (installed: {_installed_words(installed)})",
                usage=True,
            )
        if value not in installed:
            raise BackendError(
                f"{ENV_VAR}={value}, but {value} is not installed (installed: "
                f"{_installed_words(installed)}); install it with "
                f"{install_advice(value)}; or set {ENV_VAR} to one of {valid}",
                usage=False,
            )
        return BackendChoice(value, f"from {ENV_VAR}")
    if not installed:
        raise BackendError(
            f"no Keras backend is installed (one of {valid} is needed); install "
            f"one, for example {install_advice('jax')}, and set {ENV_VAR} to it",
            usage=False,
        )
    configured = _configured_backend()
    if configured in installed:
        return BackendChoice(configured, f"from {keras_config_path()}")
    skipped = (
        f"; {keras_config_path()} names {configured}, which is not installed"
        if configured
        else ""
    )
    return BackendChoice(
        installed[0],
        f"{ENV_VAR} not set, the first installed of {valid}{skipped}",
    )


_chosen = None


def choose_backend():
    """Chooses the backend and sets `KERAS_BACKEND` so Keras imports it.

    Once per process: later calls return the first answer. If Keras was
    imported before, its backend is the answer (it can no longer change).

    Returns:
        BackendChoice.

    Raises:
        BackendError: a `KERAS_BACKEND` that is not one of `BACKENDS` or not
            installed, or no framework installed.
    """
    global _chosen
    if _chosen is not None:
        return _chosen
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
        _warn_about_keras_config(backend)
        _chosen = BackendChoice(backend, "Keras was already imported")
        return _chosen
    choice = _pick()
    problem = keras_config_problem()
    if problem:
        raise BackendError(problem, usage=True)
    # Keras gives the variable precedence over keras.json.
    os.environ[ENV_VAR] = choice.name
    _write_keras_config(choice.name)
    _warn_about_keras_config(choice.name)
    _chosen = choice
    return choice


def _write_keras_config(backend):
    """Writes Keras's default `keras.json` naming `backend`, if there is none.

    Keras writes the file on its first import naming TensorFlow, whatever
    `KERAS_BACKEND` says; with TensorFlow not installed every later script
    that imports `keras` before this package would fail.
    """
    path = keras_config_path()
    config = {
        "floatx": "float32",
        "epsilon": 1e-07,
        "backend": backend,
        "image_data_format": "channels_last",
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # "x": a file another process wrote meanwhile is kept.
        with open(path, "x") as file:
            file.write(json.dumps(config, indent=4))
    except OSError:
        pass  # exists, or not writable: Keras has the same rule


def _warn_about_keras_config(backend):
    """One line on stderr when `keras.json` names a framework not installed."""
    configured = _configured_backend()
    if configured is None or configured == backend or _installed(configured):
        return
    print(
        f"keras-cifar-resnet: warning: {keras_config_path()} names backend "
        f"{configured!r}, which is not installed, so `import keras` before this "
        f'package fails; set "backend" there to "{backend}" (or delete the file '
        f"and import keras_cifar_resnet once)",
        file=sys.stderr,
    )


def choose_backend_if_possible():
    """`choose_backend` for the package's import: a problem is left for later.

    Importing the package must not fail for a command's `--help`; the
    commands call `choose_backend` after parsing and report the problem.
    """
    try:
        choose_backend()
    except BackendError:
        pass
