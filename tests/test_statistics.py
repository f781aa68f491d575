"""The benchmark's statistics on fixed inputs, against values computed by hand."""

from __future__ import annotations

import math

import pytest

from benchmarks import report
from benchmarks.statistics import (
    mean_interval,
    t_cdf,
    t_quantile,
    welch_difference,
)


@pytest.mark.parametrize(
    "df, quantile",
    # Student's t table, 97.5th percentile (two-sided 95%).
    [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)],
)
def test_t_quantiles_match_the_table(df, quantile):
    assert t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-4)
    assert t_cdf(quantile, df) == pytest.approx(0.975, abs=1e-5)


def test_t_with_many_degrees_of_freedom_tends_to_the_normal():
    assert t_quantile(0.975, 1e6) == pytest.approx(1.95996, abs=1e-4)
    assert t_cdf(0.0, 3.5) == 0.5 and t_cdf(-1.0, 3) == pytest.approx(1 - t_cdf(1, 3))


def test_mean_interval_by_hand():
    # mean 0.70; sd sqrt((0.01^2 + 0 + 0.01^2) / 2) = 0.01;
    # half-width t(0.975, 2) * 0.01 / sqrt(3) = 4.302653 * 0.005773503 = 0.024841
    interval = mean_interval([0.69, 0.70, 0.71])
    assert interval.n == 3 and interval.df == 2
    assert interval.mean == pytest.approx(0.70)
    assert interval.sd == pytest.approx(0.01)
    assert interval.half_width == pytest.approx(0.024841, abs=1e-6)
    assert (interval.low, interval.high) == pytest.approx((0.675159, 0.724841))


def test_a_single_run_has_no_interval():
    interval = mean_interval([0.6925])
    assert (interval.n, interval.mean) == (1, 0.6925)
    assert interval.sd is None and interval.half_width is None
    assert not interval.excludes_zero()
    with pytest.raises(ValueError, match="no values"):
        mean_interval([])


def test_welch_difference_by_hand():
    # a = 1, 2, 3 (mean 2, variance 1); b = 2, 4, 6, 8 (mean 5, variance 20/3).
    # se^2 = 1/3 + (20/3)/4 = 2; df = 2^2 / ((1/3)^2/2 + (5/3)^2/3) = 216/53
    difference = welch_difference([1, 2, 3], [2, 4, 6, 8])
    assert difference.mean == pytest.approx(-3.0)
    assert difference.df == pytest.approx(216 / 53)
    assert difference.sd == pytest.approx(math.sqrt(2))
    # t(0.975, 4.0755) = 2.7563 (between 2.7764 at 4 and 2.5706 at 5)
    assert difference.half_width == pytest.approx(2.7563 * math.sqrt(2), abs=1e-3)
    assert not difference.excludes_zero()  # -3 ± 3.90 contains 0
    assert welch_difference([1, 2, 3], [11, 12, 13]).excludes_zero()
    assert welch_difference([0.7], [0.69, 0.71]).half_width is None


def _run(backend, seed, accuracy, tta=None):
    return {
        "kind": "accuracy",
        "backend": backend,
        "model": "resnet18",
        "profile": "cpu",
        "seed": seed,
        "device": "CPU",
        "test_accuracy": accuracy,
        "test_accuracy_flip_tta": tta if tta is not None else accuracy + 0.01,
        "best_validation_test_accuracy": accuracy - 0.001,
    }


def test_report_gives_each_implementation_its_interval_and_difference():
    accuracy = {}
    for backend, figures in {
        "native-torch": [0.69, 0.70, 0.71],
        "jax": [0.695, 0.70, 0.705],
        "torch": [0.60, 0.61, 0.62],
    }.items():
        accuracy[(backend, "resnet18", "cpu")] = [
            _run(backend, seed, value) for seed, value in enumerate(figures)
        ]
    text = "\n".join(report.accuracy_lines(accuracy))
    # native: 70.00% ± 2.48 points; jax 70.00% ± 1.24 (half the spread).
    assert (
        "| native-torch | resnet18 | cpu | CPU | 3 | 0, 1, 2 | 70.00% ± 2.48% |" in text
    )
    assert "| jax | resnet18 | cpu | CPU | 3 | 0, 1, 2 | 70.00% ± 1.24% |" in text
    assert "| 71.00% ± 2.48% | 69.90% ± 2.48% |" in text  # flip TTA, best-validation
    # jax - native: 0 ± t(0.975, 2.94) * sqrt(1e-4/3 + 2.5e-5/3) = 0 ± 2.08 points
    assert "| jax | resnet18 | cpu | 3 vs 3 | +0.00 points ± 2.08 |" in text
    assert "no: the interval contains 0" in text
    assert "| torch | resnet18 | cpu | 3 vs 3 | -9.00 points ± 2.27 |" in text
    assert "torch differs from native PyTorch by -9.00 points ± 2.27" in text
    summary = "\n".join(report.summary_accuracy_lines(accuracy))
    assert (
        "| Keras, JAX | 3 | 70.00% ± 1.24% | 71.00% ± 1.24% | +0.00 points ± 2.08 |"
        in summary
    )
    assert "| native PyTorch, same initial weights | 3 | 70.00% ± 2.48% |" in summary


def test_report_says_a_single_run_cannot_be_told_from_noise():
    accuracy = {
        ("native-torch", "resnet18", "cpu"): [_run("native-torch", 0, 0.68)],
        ("jax", "resnet18", "cpu"): [_run("jax", 0, 0.69), _run("jax", 1, 0.70)],
    }
    text = "\n".join(report.accuracy_lines(accuracy))
    assert "cannot tell: needs 2 or more runs on each side" in text
    assert "at n = 1 no difference can be told from seed noise" in text
