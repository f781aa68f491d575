"""The names of a run folder's files, and the order a run's model is read in.

Imports nothing of the package: the training run that writes these files
and the commands that read them (evaluate, predict, the model checks in
`reporting`) take the names from here, so none imports the other for them.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"
LOG_NAME = "log.csv"
CHECKPOINT_NAME = "checkpoint.npz"


def previous_checkpoint_path(path):
    """Where the checkpoint before `path` is kept: `NAME.previous.npz`.

    The one rule for the previous checkpoint's name (kept in case the last
    is damaged).
    """
    path = Path(path)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


PREVIOUS_CHECKPOINT_NAME = previous_checkpoint_path(CHECKPOINT_NAME).name
# A damaged last checkpoint, set aside when a run continues from the previous.
DAMAGED_CHECKPOINT_NAME = "checkpoint.damaged.npz"
BEST_NAME = "best.keras"
FINAL_NAME = "final.keras"
SUMMARY_NAME = "summary.json"
CURVES_NAME = "curves.png"
# Not written any more: the run's folder itself is locked
# (`hold_run_folder`). A folder from an earlier version may hold one.
LOCK_NAME = ".lock"
# What a run's folder may hold for inference, in order of preference: the
# model at the end of training (the one summary.json's test figures are of),
# then the one chosen on validation (all a run written before 0.1 kept).
RUN_MODEL_FILES = (FINAL_NAME, BEST_NAME)
LOG_COLUMNS = (
    "epoch",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "seconds",
)
