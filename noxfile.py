"""Developer sessions: `nox -l` lists them, `nox -s tests` runs the suite per backend.

Environment (set by .ci/run; useful on any CPU-only machine):
    UV_CONSTRAINT: a constraints file, e.g. pinning a local CPU build of torch.
    UV_FIND_LINKS: a folder of local wheels for uv to consider.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]

BACKENDS = ["jax", "tensorflow", "torch"]
# Every framework is installed in each test session: the portability tests
# load under one backend what another saved, each in its own subprocess.
TEST_EXTRAS = ".[all,plots]"


def _install_test_tools(session):
    session.install("-e", TEST_EXTRAS, "--group", "test")


@nox.session
def lint(session):
    """Ruff: lint and import order."""
    session.install("ruff")
    session.run(
        "ruff", "check", "keras_cifar_resnet", "tests", "benchmarks", "noxfile.py"
    )


@nox.session
@nox.parametrize("backend", BACKENDS)
def tests(session, backend):
    """The test suite under one Keras backend (KERAS_BACKEND); posargs go to pytest.

    `-- -m "not slow"` runs the fast subset. On a machine without a GPU, set
    UV_TORCH_BACKEND=cpu (or UV_CONSTRAINT, as .ci/run does) so that uv
    installs the CPU build of torch rather than PyPI's CUDA one.
    """
    _install_test_tools(session)
    session.run(
        "pytest",
        # Each test's name as it starts: a long test is never silent.
        "-v",
        "-ra",
        # The slowest tests, in CI's log: the suite has a 30-minute budget.
        "--durations=15",
        *session.posargs,
        env={"KERAS_BACKEND": backend, "KERAS_HOME": session.create_tmp()},
    )


def _floors():
    """{package: the lowest version pyproject.toml allows}, from its `>=` bounds.

    Read as text (tomllib is Python 3.11+): every `"name>=version"` of the
    dependencies and extras; the extras repeat the same bounds.
    """
    import re

    with open("pyproject.toml") as file:
        bounds = re.findall(r'"([a-z][\w-]*)(?:\[[\w,-]+\])?>=([\w.]+)"', file.read())
    return dict(reversed(bounds))


def _floor_release(package, floor):
    """The bound's own release, newest patch: `tensorflow>=2.16` is 2.16.x.

    (TensorFlow published no 2.16.0: its first 2.16 release is 2.16.1.)
    """
    parts = floor.split(".")
    upper = ".".join([*parts[:-1], str(int(parts[-1]) + 1)])
    return f"{package}>={floor},<{upper}"


# The frameworks whose floor is installed; torch's is not: PyPI has no CPU
# wheel of torch 2.1 for Linux (its Linux wheels are CUDA builds of several
# GB), so the torch session keeps the CPU build UV_CONSTRAINT pins.
FLOOR_FRAMEWORKS = {"jax": ["jax", "jaxlib"], "tensorflow": ["tensorflow"]}


@nox.session
@nox.parametrize("backend", sorted(FLOOR_FRAMEWORKS))
def floors(session, backend):
    """The fast tests on the lowest keras and framework pyproject.toml promises.

    Installs keras and the backend's framework at their `>=` bounds (jaxlib
    at jax's), the rest as usual, and runs `-m "not slow"` under that
    backend; posargs go to pytest. A floor that fails here is raised in
    pyproject.toml rather than promised.
    """
    floors = _floors()
    pins = [_floor_release("keras", floors["keras"])]
    for package in FLOOR_FRAMEWORKS[backend]:
        pins.append(_floor_release(package, floors[package.replace("jaxlib", "jax")]))
    session.install("-e", f".[{backend},plots]", "--group", "test", *pins)
    # The versions this session tested, in its log.
    versions = ", ".join(["keras", *FLOOR_FRAMEWORKS[backend], "numpy"])
    session.run(
        "python",
        "-c",
        "import importlib.metadata as m; "
        f"print(*(f'{{p}} {{m.version(p)}}' for p in {versions!r}.split(', ')))",
    )
    session.run(
        "pytest",
        "-v",
        "-ra",
        "-m",
        "not slow",
        *session.posargs,
        env={"KERAS_BACKEND": backend, "KERAS_HOME": session.create_tmp()},
    )


# Extras of the benchmark session: the CPU builds, or with a GPU present the
# CUDA ones (pyproject's `jax-cuda`, `tensorflow-cuda`; PyPI's Linux torch
# wheel already carries CUDA, unless UV_CONSTRAINT pins a CPU build).
BENCHMARK_EXTRAS = {
    False: {"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"},
    True: {"jax": "jax-cuda", "tensorflow": "tensorflow-cuda", "torch": "torch"},
}
# Options this session reads itself; the rest of posargs go to pytest.
BENCHMARK_SESSION_OPTIONS = ("--no-accuracy", "--cpu-accuracy")
# ... and those that take a value (`--seeds 3`).
BENCHMARK_SESSION_VALUES = ("--seeds",)


def _split_session_options(posargs):
    """(the session's own options as {name: value or True}, pytest's posargs)."""
    own, rest = {}, []
    arguments = iter(posargs)
    for argument in arguments:
        if argument in BENCHMARK_SESSION_OPTIONS:
            own[argument] = True
        elif argument in BENCHMARK_SESSION_VALUES:
            own[argument] = next(arguments, None)
        else:
            rest.append(argument)
    return own, rest


def _gpu_present():
    if shutil.which("nvidia-smi") is None:
        return False
    result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return result.returncode == 0 and "GPU" in result.stdout


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def benchmark(session, backend):
    """Step throughput, inference and accuracy of one backend beside native PyTorch.

    Writes benchmark-results/: pytest-benchmark JSON per backend, the accuracy
    run, and table.md and chart.png over every backend benchmarked there. posargs
    go to the benchmarks' pytest (`-- --quick` for a CPU; see
    benchmarks/README.md); `--no-accuracy` skips the training run;
    `--cpu-accuracy` trains the CPU accuracy profile (ResNet18 at width
    0.125, full CIFAR-10, 6 epochs), which the torch session also trains in
    plain PyTorch; `--seeds N` trains N seeds of each (the report gives their
    mean and 95% interval). The torch session also times the native PyTorch
    reference.
    """
    gpu = _gpu_present()
    extra = BENCHMARK_EXTRAS[gpu][backend]
    session.install("-e", f".[{extra},plots]", "--group", "test")
    own, posargs = _split_session_options(session.posargs)
    if "--seeds" in own and not str(own["--seeds"]).isdigit():
        session.error(f"--seeds takes a number of seeds. Received: {own['--seeds']}")
    seeds = ["--seeds", own["--seeds"]] if "--seeds" in own else []
    results = "benchmark-results"
    os.makedirs(results, exist_ok=True)
    env = {"KERAS_BACKEND": backend, "KERAS_HOME": session.create_tmp()}
    # The native PyTorch reference runs in the torch session, which has torch.
    native = ["--native", "auto"] if backend == "torch" else []
    session.run(
        "pytest",
        "benchmarks/test_step_throughput.py",
        "-p",
        "no:cacheprovider",
        f"--benchmark-json={results}/benchmark-{backend}.json",
        *native,
        *posargs,
        env=env,
    )
    if "--no-accuracy" not in own:
        if "--cpu-accuracy" in own:
            profile = "cpu"
        else:
            profile = "gpu" if gpu else ("quick" if "--quick" in posargs else "full")
        accuracy = ["-m", "benchmarks.accuracy", "--profile", profile, *seeds]
        session.run("python", *accuracy, "--output-dir", results, env=env)
        if profile in ("cpu", "gpu") and backend == "torch":
            accuracy.append("--native")
            session.run("python", *accuracy, "--output-dir", results, env=env)
    command = "nox -s benchmark" + (
        " -- " + " ".join(session.posargs) if session.posargs else ""
    )
    session.run(
        "python", "-m", "benchmarks.report", results, "--command", command, env=env
    )


@nox.session(default=False)
@nox.parametrize("backend", BACKENDS)
def train(session, backend):
    """Train ResNet18 with the default recipe under one backend; posargs go to train.

    `nox -s "train(backend='jax')" -- --epochs 1` passes `--epochs 1` to
    `python -m keras_cifar_resnet.train` (see its --help). The data comes
    from --data-dir, $KERAS_CIFAR_RESNET_DATA or the Keras cache (downloaded
    on first use); the run is written to runs/ unless --output-dir says
    otherwise. Then `python -m keras_cifar_resnet.evaluate runs/<run>`.
    """
    session.install("-e", f".[{backend},plots]")
    session.run(
        "python",
        "-m",
        "keras_cifar_resnet.train",
        *session.posargs,
        env={"KERAS_BACKEND": backend},
    )
