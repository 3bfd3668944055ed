"""retina.analysis.paper against the focal loss paper (Lin et al., arXiv v2), every block."""

from __future__ import annotations

from retina.analysis.paper import TABLE1E, paper_rows


def _ap(block: str) -> list[tuple]:
    return [(*r.setting.values(), r.ap, r.ap50, r.ap75) for r in paper_rows(block)]


def test_block_a_alpha_balanced_ce():
    got = {r.setting["alpha"]: r.ap for r in paper_rows("a")}
    assert got == {0.10: 0.0, 0.25: 10.8, 0.50: 30.2, 0.75: 31.1, 0.90: 30.8, 0.99: 28.7,
                   0.999: 25.1}
    assert [r.metrics() for r in paper_rows("a") if r.setting["alpha"] == 0.75] == [
        {"AP": 31.1, "AP50": 49.4, "AP75": 33.0}]


def test_block_b_gamma_alpha():
    assert _ap("b") == [(0.0, 0.75, 31.1, 49.4, 33.0), (0.1, 0.75, 31.4, 49.9, 33.1),
                        (0.2, 0.75, 31.9, 50.7, 33.4), (0.5, 0.50, 32.9, 51.7, 35.2),
                        (1.0, 0.25, 33.7, 52.0, 36.2), (2.0, 0.25, 34.0, 52.5, 36.5),
                        (5.0, 0.25, 32.2, 49.6, 34.8)]


def test_block_c_anchors():
    got = [(r.setting["num_scales"], r.setting["num_ratios"], r.ap) for r in paper_rows("c")]
    assert got == [(1, 1, 30.3), (2, 1, 31.9), (3, 1, 31.8), (1, 3, 32.4), (2, 3, 34.2),
                   (3, 3, 34.0), (4, 3, 33.8)]


def test_block_d_ohem():
    assert _ap("d") == [
        ("OHEM", 128, 0.7, 31.1, 47.2, 33.2), ("OHEM", 256, 0.7, 31.8, 48.8, 33.9),
        ("OHEM", 512, 0.7, 30.6, 47.0, 32.6), ("OHEM", 128, 0.5, 32.8, 50.3, 35.1),
        ("OHEM", 256, 0.5, 31.0, 47.4, 33.0), ("OHEM", 512, 0.5, 27.6, 42.0, 29.2),
        ("OHEM 1:3", 128, 0.5, 31.1, 47.2, 33.2), ("OHEM 1:3", 256, 0.5, 28.3, 42.4, 30.3),
        ("OHEM 1:3", 512, 0.5, 24.0, 35.5, 25.8), ("FL", 36.0, 54.9, 38.7)]


def test_block_e_speed_accuracy():
    got = [(r.depth, r.scale, r.ap, r.ap50, r.ap75, r.aps, r.apm, r.apl, r.ms) for r in TABLE1E]
    assert got == [
        (50, 400, 30.5, 47.8, 32.7, 11.2, 33.8, 46.1, 64),
        (50, 500, 32.5, 50.9, 34.8, 13.9, 35.8, 46.7, 72),
        (50, 600, 34.3, 53.2, 36.9, 16.2, 37.4, 47.4, 98),
        (50, 700, 35.1, 54.2, 37.7, 18.0, 39.3, 46.4, 121),
        (50, 800, 35.7, 55.0, 38.5, 18.9, 38.9, 46.3, 153),
        (101, 400, 31.9, 49.5, 34.1, 11.6, 35.8, 48.5, 81),
        (101, 500, 34.4, 53.1, 36.8, 14.7, 38.5, 49.1, 90),
        (101, 600, 36.0, 55.2, 38.7, 17.4, 39.6, 49.7, 122),
        (101, 700, 37.1, 56.6, 39.8, 19.1, 40.6, 49.4, 154),
        (101, 800, 37.8, 57.5, 40.8, 20.2, 41.1, 49.2, 198),
    ]
    assert TABLE1E[2].metrics()["APs"] == 16.2 and TABLE1E[7].setting == {"depth": 101,
                                                                          "scale": 600}
