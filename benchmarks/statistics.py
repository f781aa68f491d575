"""Means over seeds with 95% intervals, and differences between implementations.

Plain Python (no SciPy: the benchmark sessions install only one framework
each). Student's t quantiles come from integrating the t density, which is
exact to far more digits than any figure here needs (tests/test_statistics.py
checks them against the printed tables).
"""

from __future__ import annotations

import dataclasses
import math

CONFIDENCE = 0.95


def _t_density(x, df):
    log_scale = (
        math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    )
    return math.exp(log_scale - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x, df):
    """P(T <= x) for Student's t with `df` degrees of freedom (df may be fractional)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive. Received: df={df}")
    intervals = 2000  # Simpson's rule: error far below 1e-9 for |x| < 50
    end = min(abs(x), 50.0)
    step = end / intervals
    total = _t_density(0.0, df) + _t_density(end, df)
    for i in range(1, intervals):
        total += (4 if i % 2 else 2) * _t_density(i * step, df)
    area = total * step / 3
    return 0.5 + math.copysign(area, x)


def t_quantile(probability, df):
    """The x with t_cdf(x, df) == probability, by bisection."""
    if not 0.5 <= probability < 1:
        raise ValueError(f"probability must be in [0.5, 1). Received: {probability}")
    low, high = 0.0, 50.0
    for _ in range(60):
        middle = (low + high) / 2
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
    return (low + high) / 2


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval, `mean - half_width` to `mean + half_width`."""

    n: int
    mean: float
    sd: float | None  # None for n = 1
    half_width: float | None  # None when there are too few runs for one
    df: float | None

    @property
    def low(self):
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self):
        return None if self.half_width is None else self.mean + self.half_width

    def excludes_zero(self):
        return self.half_width is not None and abs(self.mean) > self.half_width


def _variance(values):
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def mean_interval(values, confidence=CONFIDENCE):
    """Mean, sample standard deviation and Student's t interval of `values`."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = sum(values) / n
    if n == 1:
        return Interval(n, mean, None, None, None)
    sd = math.sqrt(_variance(values))
    df = n - 1
    half = t_quantile(0.5 + confidence / 2, df) * sd / math.sqrt(n)
    return Interval(n, mean, sd, half, df)


def welch_difference(values, reference, confidence=CONFIDENCE):
    """mean(values) - mean(reference), with Welch's interval (unequal variances).

    Needs two or more values on each side; with fewer the interval is None.
    Where both samples have no spread at all the difference is exact.
    """
    a = [float(v) for v in values]
    b = [float(v) for v in reference]
    mean = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(len(a), mean, None, None, None)
    part_a = _variance(a) / len(a)
    part_b = _variance(b) / len(b)
    se2 = part_a + part_b
    if se2 == 0:
        return Interval(len(a), mean, 0.0, 0.0, math.inf)
    df = se2**2 / (part_a**2 / (len(a) - 1) + part_b**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(se2)
    return Interval(len(a), mean, math.sqrt(se2), half, df)
