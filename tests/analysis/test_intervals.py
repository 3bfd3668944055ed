"""The t quantile and the Welch interval against tabulated values and SciPy's Welch test."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from retina.analysis.intervals import student_t_quantile, summarize, welch_difference


@pytest.mark.parametrize("df, expected", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228),
                                          (30, 2.042), (1000, 1.962)])
def test_t_quantile_matches_the_table(df: float, expected: float):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=5e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-4)


def test_t_quantile_refuses_what_has_no_quantile():
    for p, df in ((0.0, 3.0), (1.0, 3.0), (0.975, 0.0), (0.975, math.nan)):
        with pytest.raises(ValueError, match="student_t_quantile"):
            student_t_quantile(p, df)


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


def test_interval_ends_are_where_scipys_welch_test_gives_p_equal_to_5_percent():
    """Shifting ``a`` by an end of the 95 % interval leaves a Welch t test at p = 0.05."""
    a, b = [70.1, 71.6, 69.2, 72.4], [77.0, 78.7, 76.1]
    d = welch_difference(a, b)
    assert d.diff == pytest.approx(sum(a) / 4 - sum(b) / 3)
    for end in (d.low, d.high):
        shifted = [x - end for x in a]
        assert stats.ttest_ind(shifted, b, equal_var=False).pvalue == pytest.approx(0.05)
