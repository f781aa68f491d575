"""Files written by an earlier version load and resume: `tests/fixtures/saved_run`.

The folder is a tiny synthetic run stopped by SIGTERM in its second epoch
(`tests/fixtures/make_saved_run.py`): a finished epoch's `best.keras` and
log row, and a mid-epoch checkpoint. Saved files name the package's
classes by their registered names (`keras_cifar_resnet>ResNet`), so these
tests fail if a module move or a rename breaks what users have on disk.
"""

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np

from keras_cifar_resnet.reporting.model_files import load_model
from keras_cifar_resnet.train import main
from keras_cifar_resnet.training.checkpoints import read_checkpoint_state

SAVED_RUN = Path(__file__).resolve().parent / "fixtures" / "saved_run"


def test_a_saved_model_file_loads_and_predicts():
    model, path = load_model(SAVED_RUN / "best.keras", (32, 32, 3), 10)
    assert path == SAVED_RUN / "best.keras"
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), np.uint8)
    logits = np.asarray(model.predict(images.astype("float32"), verbose=0))
    assert logits.shape == (4, 10) and np.isfinite(logits).all()


def test_a_saved_model_file_loads_with_keras_alone():
    import keras

    model = keras.saving.load_model(SAVED_RUN / "best.keras", compile=False)
    assert model.output_shape == (None, 10)


def test_a_saved_run_resumes_mid_epoch_and_finishes(tmp_path):
    folder = tmp_path / "saved_run"
    shutil.copytree(SAVED_RUN, folder)
    state = read_checkpoint_state(folder / "checkpoint.npz")
    assert (state["epoch"], state["step"]) == (1, 2)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main(["--resume", str(folder)])
    assert status == 0, output.getvalue()[-2000:]
    with open(folder / "log.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    # The saved log numbers epochs from 0; resumed, it numbers them from 1.
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    summary = json.loads((folder / "summary.json").read_text())
    # The test figure is the last epoch's model; the validation choice apart.
    assert summary["model_file"] == "final.keras" and "accuracy" in summary["test"]
    assert summary["best_validation"]["model_file"] == "best.keras"
    record = json.loads((folder / "config.json").read_text())
    assert len(record["resumed"]) == 1
