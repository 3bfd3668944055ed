"""Matching a run's settings to the paper's Table 1 rows."""

from __future__ import annotations

from retina.analysis.paper_match import match_paper_row


def test_match_paper_row():
    assert match_paper_row({"alpha": 0.75}, "a").ap == 31.1
    assert match_paper_row({"gamma": 2, "alpha": 0.25}).ap == 34.0
    assert match_paper_row({"gamma": 2.0, "alpha": 0.5}) is None
    assert match_paper_row({"gamma": 2.0, "alpha": 0.25, "prior_prob": None}) is None
    assert match_paper_row({"gamma": 2.0, "alpha": 0.25, "num_ratios": 1}, "b") is None
    assert match_paper_row({"num_scales": 2, "num_ratios": 3}, "c").ap == 34.2
    ohem = {"loss": "ohem", "ohem_batch": 128, "ohem_nms": 0.5, "ohem_pos_fraction": None}
    assert match_paper_row(ohem, "d").ap == 32.8
    assert match_paper_row({**ohem, "ohem_pos_fraction": 0.25, "ohem_batch": 256}, "d").ap == 28.3
    assert match_paper_row({**ohem, "ohem_pos_fraction": 0.5}, "d") is None
    assert match_paper_row({"loss": "focal", "gamma": 2.0, "alpha": 0.25}, "d").ap == 36.0
