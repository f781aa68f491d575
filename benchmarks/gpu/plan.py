"""What one GPU lease runs, in which order, and how long each part may take.

Data and arithmetic only; `driver.py` runs the plan. Two profiles take the
same stages: `gpu` (ResNet18 at batch 512 on one card, the figures the
issue asks for) and `rehearsal` (the test model on a CPU, a slice of the
real data and short limits, so that CI runs every stage between leases).

The stages, in the order they run (which is their priority: a later
stage's failure never costs an earlier stage's figure):

    probe-jax       Keras JAX, mixed_bfloat16: step time of one accuracy
    probe-torch     Keras torch, mixed_bfloat16 (eager)  candidate each
    accuracy        the default recipe on the faster of the two, its epochs
                    fitted to the time left (at most the recipe's 100)
    native          native PyTorch eager bf16 and channels_last bf16 (the
                    anchor of every ratio)
    jax-float32     Keras JAX, float32
    torch-keras-bn  Keras torch, mixed_bfloat16, Keras's own BatchNorm: the
                    fused layer's gain against probe-torch
    native-compiled native PyTorch, torch.compile, channels_last bf16
    torch-compiled  Keras torch, mixed_bfloat16, jit_compile=True
    accuracy-other  the other backend on the same schedule (same --epochs),
                    stopped at its time limit, for curves at equal epochs
    report          chart and table (always, unless nothing was measured)

Time (gpu profile). A lease is 15 minutes of device time, counted from the
machine's start to its return; the issue asks for at most 13 (780 s):

    machine start (first call)             60-120 s
    two staging calls, ~47 MB each         2 x ~25 s (transfer, xz)
    main call: transfer ~50 MB             ~25 s
               run.sh, its deadline        510 s  (the gpu profile's)
               slack to the call's limit   60 s   (timeout_s 570)
    give_back at once                      0 s
    total, at worst                        765 s, 12.75 min

Inside the 510 s: staging the last part and installing Keras ~20 s, the
two probes ~75 s (limits 150 and 120), the accuracy run what is left but
the native anchor's minimum and the report's reserve, then the other
stages in order while their minimum fits.
"""

from __future__ import annotations

import dataclasses
import math

# The default recipe (keras_cifar_resnet.config.TrainConfig), repeated so
# that planning imports no Keras; tests/test_gpu_rehearsal.py checks them.
RECIPE_EPOCHS = 100
RECIPE_BATCH_SIZE = 512
CIFAR10_TRAIN_IMAGES = 50_000
RECIPE_VALIDATION_IMAGES = 5_000

ACCURACY_PRECISION = "mixed_bfloat16"
BACKENDS = ("jax", "torch")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the run.

    Args:
        name: str, also the name of its output file (`stages/<name>.json`).
        job: str, one line for the table.
        min_s: float, skipped (with a line saying so) when less time is left.
        max_s: float or None, its limit when time allows; None: all that is
            left but the report's reserve.
        required: bool, a skip counts as a failure (the headline figure).
    """

    name: str
    job: str
    min_s: float
    max_s: float | None
    required: bool = False


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes, limits and the epoch-time model of one kind of run.

    The epoch-time constants are estimates until a run on the card measures
    them; the run records its estimate beside what happened, so the next
    lease can correct them.
    """

    name: str
    model: str
    batch_size: int
    deadline_s: float
    rounds: int
    steps_per_round: int
    warmup_rounds: int
    # Images per epoch and held out, as the accuracy run's train command sees
    # them; `train_flags` make the rehearsal's run match.
    train_images: int
    validation_images: int
    train_flags: tuple
    stages: tuple
    # Epoch-time model: fit's step costs `fit_step_factor` bare steps plus
    # `fit_step_extra_s` (a host sync per step, the progress bar); each epoch
    # adds validation, the checkpoint and the best model; a run adds process
    # start and data loading, two compilations (train, evaluate) and the
    # final test-set evaluation with flips.
    fit_step_factor: float
    fit_step_extra_s: float
    per_epoch_s: float
    startup_s: float
    final_eval_s: float
    # Fraction of the accuracy stage's time kept spare by the epoch fit.
    margin: float
    # The most epochs the fit may choose: the recipe's own length on a GPU;
    # a few in the rehearsal, whatever the time allows.
    max_epochs: int
    # Step time assumed when neither probe measured one.
    assumed_step_s: float
    assumed_first_step_s: float
    # Throughput stages that only collect their benchmarks (pytest
    # --collect-only: the options and parametrization are checked, nothing
    # is timed).
    collect_only: tuple
    report_reserve_s: float
    # Seconds between SIGTERM and SIGKILL when a stage overruns (the train
    # command saves a checkpoint on SIGTERM).
    grace_s: float

    def stage(self, name):
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"no stage {name!r} in profile {self.name!r}")


GPU_STAGES = (
    Stage("probe-jax", "Keras JAX mixed_bfloat16 step, accuracy candidate", 60, 150),
    Stage("probe-torch", "Keras torch mixed_bfloat16 step, candidate", 45, 120),
    Stage("accuracy", "default recipe on the faster backend", 120, None, True),
    Stage("native", "native PyTorch eager bf16, channels_last bf16", 40, 90),
    Stage("jax-float32", "Keras JAX float32 step", 60, 120),
    Stage("torch-keras-bn", "Keras torch mixed_bfloat16, Keras's BatchNorm", 45, 120),
    Stage("native-compiled", "native PyTorch compiled channels_last bf16", 90, 150),
    Stage("torch-compiled", "Keras torch mixed_bfloat16, jit_compile", 120, 180),
    Stage("accuracy-other", "the other backend, same schedule, to its limit", 60, None),
    Stage("report", "table and chart", 5, 60),
)

# The rehearsal's limits fit the test model on a shared 2-core CPU: each
# minimum is what the stage took there under load, each limit about three
# times that, so that a stage runs to its end or is skipped, never cut short
# on a busy machine. The stages end in about 150 s on a quiet one, 250 s at
# a load of 6; the deadline leaves room beyond that.
REHEARSAL_STAGES = (
    Stage("probe-jax", GPU_STAGES[0].job, 30, 120),
    Stage("probe-torch", GPU_STAGES[1].job, 25, 120),
    Stage("accuracy", GPU_STAGES[2].job, 30, None, True),
    Stage("native", GPU_STAGES[3].job, 35, 120),
    Stage("jax-float32", GPU_STAGES[4].job, 15, 60),
    Stage("torch-keras-bn", GPU_STAGES[5].job, 15, 60),
    Stage("native-compiled", GPU_STAGES[6].job, 15, 60),
    Stage("torch-compiled", GPU_STAGES[7].job, 15, 60),
    Stage("accuracy-other", GPU_STAGES[8].job, 20, 35),
    Stage("report", GPU_STAGES[9].job, 5, 45),
)

PROFILES = {
    "gpu": Profile(
        name="gpu",
        model="resnet18",
        batch_size=RECIPE_BATCH_SIZE,
        deadline_s=510,
        # Medians of a few seconds of steps: 10 rounds of 10 at 20-100 ms.
        rounds=10,
        steps_per_round=10,
        warmup_rounds=1,
        train_images=CIFAR10_TRAIN_IMAGES - RECIPE_VALIDATION_IMAGES,
        validation_images=RECIPE_VALIDATION_IMAGES,
        train_flags=(),
        stages=GPU_STAGES,
        fit_step_factor=1.05,
        fit_step_extra_s=0.003,
        # ~90 MB checkpoint and ~45 MB best model written each epoch, ten
        # validation batches: estimated, not yet measured on a card.
        per_epoch_s=3.0,
        startup_s=25,
        final_eval_s=30,
        margin=0.1,
        max_epochs=RECIPE_EPOCHS,
        assumed_step_s=0.1,
        assumed_first_step_s=60,
        collect_only=(),
        report_reserve_s=30,
        grace_s=30,
    ),
    "rehearsal": Profile(
        name="rehearsal",
        model="tiny",
        batch_size=64,
        deadline_s=360,
        rounds=3,
        steps_per_round=2,
        # One untimed round: the first call of Keras's train function after
        # train_on_batch can still compile.
        warmup_rounds=1,
        train_images=512,
        validation_images=256,
        train_flags=(
            "--max-train-examples",
            "512",
            "--validation-size",
            "256",
            "--batch-size",
            "64",
        ),
        stages=REHEARSAL_STAGES,
        # Measured on the shared 2-core CPU (2026-11-28): fit ran at about
        # twice the bare step; TensorFlow's import at the first best.keras
        # and the 20,000 test-set passes make most of the fixed cost.
        fit_step_factor=2.0,
        fit_step_extra_s=0.0,
        per_epoch_s=1.0,
        startup_s=18,
        final_eval_s=6,
        margin=0.1,
        max_epochs=3,
        assumed_step_s=0.2,
        assumed_first_step_s=5,
        # torch.compile takes minutes on a CPU; float32 JAX and Keras's
        # BatchNorm on torch are the probes' code path with another flag.
        collect_only=(
            "jax-float32",
            "torch-keras-bn",
            "native-compiled",
            "torch-compiled",
        ),
        report_reserve_s=12,
        grace_s=10,
    ),
}


def steps_per_epoch(profile):
    """Optimizer steps per epoch (the train command drops the last partial batch)."""
    return profile.train_images // profile.batch_size


@dataclasses.dataclass(frozen=True)
class AccuracyEstimate:
    """Predicted seconds of one accuracy run: `fixed_s + epochs * epoch_s`."""

    epochs: int
    fixed_s: float
    epoch_s: float
    budget_s: float

    @property
    def total_s(self):
        return self.fixed_s + self.epochs * self.epoch_s

    def to_dict(self):
        return dataclasses.asdict(self) | {"total_s": self.total_s}


def epoch_seconds(profile, step_s):
    """Predicted wall seconds of one epoch, validation and saving included."""
    fit_step = step_s * profile.fit_step_factor + profile.fit_step_extra_s
    return steps_per_epoch(profile) * fit_step + profile.per_epoch_s


def fixed_seconds(profile, first_step_s):
    """Predicted seconds of a run that do not grow with its epochs.

    The probe's first call (build and compile one train step) stands for
    each of the two compilations, train and evaluate.
    """
    return profile.startup_s + 2 * first_step_s + profile.final_eval_s


def fit_epochs(profile, seconds, step_s, first_step_s):
    """The most epochs (at most `profile.max_epochs`) predicted to finish in
    `seconds`, `margin` of which is kept spare. Zero when not even one fits.

    Args:
        profile: the `Profile`.
        seconds: float, the time the run may take.
        step_s: float, a bare train step's median seconds (the probe's).
        first_step_s: float, the probe's first call (build and compile).
    """
    fixed = fixed_seconds(profile, first_step_s)
    per_epoch = epoch_seconds(profile, step_s)
    usable = seconds * (1 - profile.margin) - fixed
    epochs = max(0, min(profile.max_epochs, math.floor(usable / per_epoch)))
    return AccuracyEstimate(
        epochs=epochs, fixed_s=fixed, epoch_s=per_epoch, budget_s=seconds
    )


def pick_backend(probes):
    """The accuracy run's backend: the probe with the shortest step.

    Args:
        probes: dict backend -> (step_s, first_step_s), or None for a probe
            that measured nothing.

    Returns:
        (backend, step_s, first_step_s, measured): `measured` is False when
        neither probe gave a figure and JAX with the profile's assumed times
        is the fallback (the caller fills those in).
    """
    measured = {b: p for b, p in probes.items() if p is not None}
    if not measured:
        return "jax", None, None, False
    backend = min(measured, key=lambda b: measured[b][0])
    step_s, first_step_s = measured[backend]
    return backend, step_s, first_step_s, True


def other_backend(backend):
    return next(b for b in BACKENDS if b != backend)
