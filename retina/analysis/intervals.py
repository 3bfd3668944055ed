"""Small-sample statistics for seed groups: mean ± standard deviation, Student's t quantile,
and the Welch confidence interval of a difference of two means.

The t quantile comes from :mod:`scipy.stats` (it takes the non-integer degrees of freedom of
Welch–Satterthwaite); the interval is the textbook Welch formula, so that a group with
identical values (zero variance) gets a point interval instead of SciPy's NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = [
    "Difference",
    "Summary",
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


def student_t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` (possibly non-integer) degrees of
    freedom, e.g. ``p = 0.975`` for a two-sided 95 % interval (``scipy.stats.t.ppf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"student_t_quantile: p must be in (0, 1), got {p}")
    if not df > 0:
        raise ValueError(f"student_t_quantile: df must be > 0, got {df}")
    return float(stats.t.ppf(p, df))


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
