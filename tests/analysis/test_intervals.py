"""The pure-Python t quantile and Welch interval against tabulated values and SciPy."""

from __future__ import annotations

import math

import pytest

from retina.analysis.intervals import (
    student_t_cdf,
    student_t_quantile,
    summarize,
    welch_difference,
)


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228),
                                          (30, 2.042), (1000, 1.962)])
def test_t_quantile_matches_the_table(df: float, expected: float):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_t_cdf_is_symmetric_and_cauchy_at_one_df():
    assert student_t_cdf(0.0, 3.7) == 0.5
    assert student_t_cdf(1.0, 1.0) == pytest.approx(0.75, abs=1e-12)  # Cauchy: 1/2 + atan(1)/pi
    assert student_t_cdf(-2.0, 5.0) + student_t_cdf(2.0, 5.0) == pytest.approx(1.0)


def test_summary_mean_and_sample_std():
    s = summarize([70.0, 72.0, 74.0])
    assert (s.mean, s.std, s.n) == (72.0, 2.0, 3)
    assert summarize([5.0]).std == 0.0


def test_welch_interval_by_hand():
    # a: mean 2, var 1; b: mean 16/3, var 7/3; se^2 = 1/3 + 7/9 = 10/9
    d = welch_difference([1, 2, 3], [4, 5, 7])
    assert d.diff == pytest.approx(-10 / 3)
    df = (10 / 9) ** 2 / ((1 / 3) ** 2 / 2 + (7 / 9) ** 2 / 2)
    assert d.df == pytest.approx(df)
    half = student_t_quantile(0.975, df) * math.sqrt(10 / 9)
    assert (d.low, d.high) == (pytest.approx(-10 / 3 - half), pytest.approx(-10 / 3 + half))
    assert not d.contains_zero
    assert welch_difference([1, 2, 3], [1.5, 2.5, 3.5]).contains_zero
    assert not welch_difference([1.0], [2.0, 3.0]).has_interval


def test_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.5, 3.44, 7.0, 17.9):
        assert student_t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    a, b = [70.1, 71.6, 69.2, 72.4], [77.0, 78.7, 76.1]
    res = stats.ttest_ind(a, b, equal_var=False)
    d = welch_difference(a, b)
    assert d.df == pytest.approx(res.df)
    low, high = res.confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(low), pytest.approx(high))
