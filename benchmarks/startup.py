"""Start-up costs per backend, each in a fresh process: what a user waits for.

    build    building ResNet18 (full width and 0.125), import not counted;
             under JAX also the number of XLA programs compiled meanwhile
    step     the first training step of the CPU profile's network (width
             0.125, batch 32) minus a later one: its compile time; twice in
             fresh processes sharing one Keras home, so under JAX the second
             finds the first's programs in the compilation cache (cold, warm)
    predict  `python -m keras_cifar_resnet.predict` on 4 images with a saved
             ResNet18, end to end, twice in fresh processes (cold, warm), and
             a process that only imports what it imports

    python benchmarks/startup.py build step predict --backends jax,torch,tensorflow

Prints one markdown row per measurement. Give a fresh `--keras-home` (or
none: a temporary one) so the first run starts cold.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

BUILD = """
import time
t0 = time.perf_counter()
import keras
from keras_cifar_resnet import ResNet18
compiled = []
if keras.backend.backend() == "jax":
    from jax import monitoring
    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(duration)
    monitoring.register_event_duration_secs_listener(listen)
keras.utils.set_random_seed(0)  # imports TensorFlow when installed: not counted
t1 = time.perf_counter()
ResNet18(width_multiplier={width})
t2 = time.perf_counter()
print(f"RESULT import {{t1 - t0:.2f}} s, build {{t2 - t1:.2f}} s, "
      f"{{len(compiled)}} programs compiled")
"""

STEP = """
import time
import keras, numpy as np
from keras_cifar_resnet.training.build import build_model, compile_model
from keras_cifar_resnet.config import TrainConfig
try:  # as the commands do; absent from versions before the cache
    from keras_cifar_resnet.compilation_cache import enable_compilation_cache
    enable_compilation_cache(keras.backend.backend())
except ImportError:
    pass
config = TrainConfig(width_multiplier=0.125, batch_size=32)
keras.utils.set_random_seed(0)
model = compile_model(build_model(config), config, steps_per_epoch=10)
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
labels = rng.integers(0, 10, 32)
times = []
for _ in range(3):
    start = time.perf_counter()
    model.train_on_batch(images, labels)
    times.append(time.perf_counter() - start)
print(f"RESULT first step {{times[0]:.2f}} s, later step {{times[-1]:.2f}} s, "
      f"compile ~{{times[0] - times[-1]:.2f}} s")
"""

MAKE_MODEL = """
import keras, numpy as np
from PIL import Image
from keras_cifar_resnet import ResNet18
ResNet18().save({model!r})
rng = np.random.default_rng(0)
for index in range(4):
    pixels = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save({folder!r} + f"/image{{index}}.png")
"""


def _run(arguments, backend, keras_home):
    env = dict(os.environ, KERAS_BACKEND=backend, KERAS_HOME=str(keras_home))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *arguments], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"failed under {backend}:\n{result.stderr[-2000:]}")
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT")]
    return wall, lines[-1][len("RESULT ") :] if lines else ""


def _row(*cells):
    load = os.getloadavg()[0]
    print("| " + " | ".join([*cells, f"{load:.1f}"]) + " |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python benchmarks/startup.py")
    parser.add_argument("what", nargs="+", choices=("build", "step", "predict"))
    parser.add_argument("--backends", default="jax,torch,tensorflow")
    parser.add_argument("--keras-home", default=None)
    args = parser.parse_args(argv)
    home = Path(args.keras_home or tempfile.mkdtemp(prefix="startup-"))
    print("| measurement | backend | wall s (process) | figures | load (1 min) |")
    print("| --- | --- | ---: | --- | ---: |")
    for backend in args.backends.split(","):
        if "build" in args.what:
            for width in (1.0, 0.125):
                code = textwrap.dedent(BUILD.format(width=width))
                wall, result = _run(["-c", code], backend, home / backend)
                _row(f"build ResNet18 width {width:g}", backend, f"{wall:.1f}", result)
        if "step" in args.what:
            for run in ("cold", "warm"):
                code = textwrap.dedent(STEP.format())
                wall, result = _run(["-c", code], backend, home / backend)
                _row(f"first training step ({run})", backend, f"{wall:.1f}", result)
        if "predict" in args.what:
            folder = home / "predict"
            folder.mkdir(parents=True, exist_ok=True)
            model = folder / "resnet18.keras"
            if not model.exists():
                code = MAKE_MODEL.format(model=str(model), folder=str(folder))
                _run(["-c", textwrap.dedent(code)], "torch", home / "make")
            images = sorted(str(path) for path in folder.glob("image*.png"))
            command = ["-m", "keras_cifar_resnet.predict", str(model), *images]
            for run in ("first", "second"):
                wall, _ = _run(command, backend, home / backend)
                _row(f"predict 4 images ({run} run)", backend, f"{wall:.1f}", "")
            # The same process's imports alone: what no cache can save.
            imports = ["-c", "import keras, PIL.Image, keras_cifar_resnet.predict"]
            wall, _ = _run(imports, backend, home / backend)
            _row("predict's imports only", backend, f"{wall:.1f}", "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
