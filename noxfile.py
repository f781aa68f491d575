"""Developer sessions: `nox -l` lists them, `nox -s tests` runs the suite per backend.

Environment (set by .ci/run; useful on any CPU-only machine):
    UV_CONSTRAINT: a constraints file, e.g. pinning a local CPU build of torch.
    UV_FIND_LINKS: a folder of local wheels for uv to consider.
"""

from __future__ import annotations

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
    """The test suite under one Keras backend (KERAS_BACKEND); posargs go to pytest."""
    _install_test_tools(session)
    session.run(
        "pytest",
        "-ra",
        *session.posargs,
        env={"KERAS_BACKEND": backend, "KERAS_HOME": session.create_tmp()},
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
