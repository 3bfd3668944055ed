"""Small-sample statistics for seed groups: mean ± standard deviation, Student's t quantile,
and the Welch confidence interval of a difference of two means.

Pure Python (no SciPy): Student's t distribution function is written through the regularised
incomplete beta function (continued fraction, Numerical Recipes §6.4), and its quantile is
found by bisection, which handles the non-integer degrees of freedom of Welch–Satterthwaite.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "Difference",
    "Summary",
    "incomplete_beta",
    "student_t_cdf",
    "student_t_quantile",
    "summarize",
    "welch_difference",
]


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation (``n - 1`` in the denominator; 0 when ``n == 1``), n."""

    mean: float
    std: float
    n: int


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)`` with its two-sided confidence interval ``[low, high]``.

    ``df`` is the Welch–Satterthwaite degrees of freedom; ``low``/``high`` are NaN when either
    group has fewer than two values (no variance estimate, no interval).
    """

    diff: float
    low: float
    high: float
    df: float
    level: float

    @property
    def has_interval(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    @property
    def contains_zero(self) -> bool:
        """True when the interval includes 0: the difference is not significant at ``level``."""
        return self.has_interval and self.low <= 0.0 <= self.high


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation of ``values`` (at least one)."""
    if not values:
        raise ValueError("summarize: no values")
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return Summary(mean, 0.0, 1)
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return Summary(mean, math.sqrt(var), n)


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                    -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete_beta: x={x} outside [0, 1]")
    if x in (0.0, 1.0):
        return x
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """``P(T <= t)`` for Student's t with ``df > 0`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"student_t_cdf: df must be > 0, got {df}")
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t (e.g. ``p = 0.975`` for a two-sided 95 % interval)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_cdf(mid, df) < p:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Difference:
    """``mean(a) - mean(b)`` and its Welch t interval (unequal variances).

    ``se = sqrt(s_a²/n_a + s_b²/n_b)``, ``df = se⁴ / ((s_a²/n_a)²/(n_a-1) + (s_b²/n_b)²/(n_b-1))``
    (Welch–Satterthwaite), interval ``diff ± t_{(1+level)/2, df} · se``. With identical values
    in both groups (``se == 0``) the interval is the point ``[diff, diff]``.
    """
    sa, sb = summarize(a), summarize(b)
    diff = sa.mean - sb.mean
    if sa.n < 2 or sb.n < 2:
        return Difference(diff, math.nan, math.nan, math.nan, level)
    va, vb = sa.std**2 / sa.n, sb.std**2 / sb.n
    se2 = va + vb
    if se2 == 0.0:
        return Difference(diff, diff, diff, float(sa.n + sb.n - 2), level)
    df = se2**2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))
    half = student_t_quantile(0.5 + level / 2.0, df) * math.sqrt(se2)
    return Difference(diff, diff - half, diff + half, df, level)
