"""Compiled programs kept between runs: JAX's persistent compilation cache.

Under JAX, the commands (`train`, `evaluate`, `predict`) compile the model's
programs (the training step takes tens of seconds on a CPU) in every new
process. With the cache on, a second run loads them from disk instead. The
folder is

    $KERAS_HOME/keras_cifar_resnet/compilation-cache/<package>-jax-<jax>

(`KERAS_HOME` defaults to `~/.keras`), one per package and JAX version, so
versions never share entries; delete it to reclaim the space.
`KERAS_CIFAR_RESNET_COMPILATION_CACHE=0` turns the cache off, and a folder
given as its value is used instead of the default one. Other backends are left
alone: TensorFlow and eager PyTorch compile nothing up front.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "KERAS_CIFAR_RESNET_COMPILATION_CACHE"
OFF_VALUES = ("0", "off", "false", "no")


def cache_folder(jax_version, environ=os.environ):
    """Where the cache lives for `jax_version`, or None when turned off.

    Args:
        jax_version: str, the installed JAX's version.
        environ: mapping, the environment. Defaults to `os.environ`.
    """
    from keras_cifar_resnet import __version__

    value = environ.get(ENV_VAR, "").strip()
    if value.lower() in OFF_VALUES:
        return None
    if value and value.lower() not in ("1", "on", "true", "yes"):
        return Path(value).expanduser()
    home = environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    return (
        Path(home)
        / "keras_cifar_resnet"
        / "compilation-cache"
        / f"{__version__}-jax-{jax_version}"
    )


def enable_compilation_cache(backend):
    """Turns JAX's persistent compilation cache on for this process.

    Call it once the backend is chosen and before anything compiles.

    Args:
        backend: str, the Keras backend of this process; only `"jax"` has a
            cache to turn on.

    Returns:
        Path of the cache folder, or None (another backend, or turned off).
    """
    if backend != "jax":
        return None
    import jax

    folder = cache_folder(jax.__version__)
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program, however quick to compile: a command compiles dozens of
    # small ones, and together they are most of a short run's start.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder
