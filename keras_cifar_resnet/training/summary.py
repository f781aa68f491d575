"""The end of a run: the test figures, `summary.json` and the curves.

The headline test figure is the last epoch's model's (`final.keras`), read
back from its file in float32, as the evaluate command reads it; the model
of the best validation accuracy is evaluated too and recorded apart.
"""

from __future__ import annotations

import keras

from keras_cifar_resnet import messages
from keras_cifar_resnet.errors import ModelFileError
from keras_cifar_resnet.reporting.evaluation import evaluate_model, progress_verbosity
from keras_cifar_resnet.reporting.model_files import load_model
from keras_cifar_resnet.training.precision_support import dtype_policy
from keras_cifar_resnet.training.run_folder import BEST_NAME, CURVES_NAME, FINAL_NAME


def evaluate_and_summarise(config, data, folder, position, distribution, signals):
    """The test figures, `summary.json` and the curves; status 0.

    The headline figure is the last epoch's model (`final.keras`): nothing is
    chosen by looking at the test set. With a validation split the model of
    the best validation accuracy (`best.keras`) is evaluated too and recorded
    apart, labelled as chosen on the validation split.
    """
    report = _test_report(config, data, folder.path / FINAL_NAME, distribution)
    best = None
    if position.best_epoch:
        try:
            best_report = _test_report(
                config, data, folder.path / BEST_NAME, distribution
            )
        except ModelFileError as error:
            # Lost or damaged since it was written: the summary goes without it.
            print(messages.best_model_unreadable(error), flush=True)
        else:
            best = {
                "model_file": BEST_NAME,
                "chosen_on": "validation split",
                "epoch": position.best_epoch,
                "validation_accuracy": position.best_val_accuracy,
                "test": best_report,
            }
    with signals.saving():
        folder.write_summary(
            {
                "model_file": FINAL_NAME,
                "test_model": "the last epoch's model",
                "epochs": config.epochs,
                "validation_accuracy": position.best_val_accuracy,
                "train_images": len(data.train_images),
                "synthetic": config.synthetic,
                "train_seconds": round(position.train_seconds, 1),
                "backend": keras.backend.backend(),
                "test": report,
                "best_validation": best,
            }
        )
    _draw_curves(folder)
    print(messages.test_result(report, best, folder.path), flush=True)
    return 0


def _test_report(config, data, model_path, distribution):
    """evaluate_model's report of the model file at `model_path` on the test set."""
    print(messages.evaluating_test_set(model_path, len(data.test_images)), flush=True)
    # The chief alone, on its own devices: the others have finished. In
    # float32 whatever the training precision, so the figure is the one the
    # evaluate command gives for the same file.
    with distribution.local_scope(), dtype_policy("float32"):
        # Checked as evaluate checks it: a damaged file is one line.
        model, _ = load_model(model_path, input_shape=None, num_classes=None)
        return evaluate_model(
            model,
            data.test_images,
            data.test_labels,
            batch_size=config.eval_batch_size,
            verbose=progress_verbosity(),
        )


def _draw_curves(folder):
    from keras_cifar_resnet.reporting.plots import (
        PlotsUnavailableError,
        plot_training_curves,
    )

    try:
        plot_training_curves(folder.log_path, folder.curves_path)
    except PlotsUnavailableError as err:
        print(messages.curves_not_drawn(CURVES_NAME, err))
    except OSError as err:  # a full disk: the results are written already
        reason = err.strerror or err
        print(messages.curves_not_drawn(CURVES_NAME, f"cannot write it ({reason})"))
