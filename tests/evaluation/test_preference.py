"""Listening-vote statistics on counts with known answers (engines/evaluation/preference.py)."""
from __future__ import annotations

import numpy as np
import pytest

from engines.evaluation.preference import (binomial_p, bradley_terry, bradley_terry_bootstrap, fleiss_kappa,
                                           head_to_head, wilson_interval, win_matrix)


def test_wilson_interval_and_binomial_test_have_the_textbook_values():
    low, high = wilson_interval(8, 10)
    assert (low, high) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(0, 10)[1] == pytest.approx(0.2775, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert binomial_p(8, 10) == pytest.approx(0.109375)      # 2 * (45 + 10 + 1) / 1024
    assert binomial_p(5, 10) == pytest.approx(1.0) and binomial_p(0, 0) == 1.0


def test_head_to_head_counts_preferences_whatever_side_they_were_played_on():
    votes = [("vae", "gpt", "x"), ("gpt", "vae", "y"), ("gpt", "vae", "x"), ("vae", "gpt", "tie"),
             ("vae", "diffusion", "y")]
    rows = {(r["system_a"], r["system_b"]): r for r in head_to_head(votes)}
    gv = rows[("gpt", "vae")]
    assert (gv["a_wins"], gv["b_wins"], gv["ties"], gv["votes"]) == (1, 2, 1, 4)
    assert gv["a_win_rate"] == pytest.approx(1 / 3) and gv["tie_rate"] == 0.25
    assert gv["interval"] == pytest.approx(list(wilson_interval(1, 3)))
    assert rows[("diffusion", "vae")]["a_wins"] == 1
    with pytest.raises(ValueError, match="one of x, y, tie"):
        head_to_head([("a", "b", "A")])
    with pytest.raises(ValueError, match="two systems"):
        head_to_head([("a", "a", "x")])


def test_bradley_terry_recovers_known_strengths():
    strengths = np.array([4.0, 1.0, 0.25])
    strengths /= np.exp(np.log(strengths).mean())
    wins = 100 * strengths[:, None] / (strengths[:, None] + strengths[None, :])
    np.fill_diagonal(wins, 0)
    assert bradley_terry(wins) == pytest.approx(strengths, rel=1e-6)
    ties_only = win_matrix([("a", "b", "tie")] * 6, ["a", "b"])
    assert ties_only.tolist() == [[0, 3], [3, 0]] and bradley_terry(ties_only) == pytest.approx([1, 1])


def test_bootstrap_intervals_contain_the_scores_and_order_the_systems():
    rng = np.random.default_rng(0)
    votes = [("good", "bad", "x" if rng.random() < 0.8 else "y") for _ in range(120)]
    votes += [("good", "mid", "x" if rng.random() < 0.6 else "y") for _ in range(120)]
    result = bradley_terry_bootstrap(votes, ["good", "mid", "bad"], samples=200, seed=1)
    scores, intervals = result["scores"], result["intervals"]
    assert scores[0] > scores[1] and scores[0] > scores[2] and sum(scores) == pytest.approx(0, abs=1e-3)
    for score, (low, high) in zip(scores, intervals):
        assert low <= score <= high
    assert intervals[0][0] > intervals[2][1]   # 80 % wins over 120 votes: the intervals do not overlap
    assert bradley_terry_bootstrap(votes, ["good", "mid", "bad"], samples=200, seed=1) == result


def test_fleiss_kappa_matches_the_worked_example():
    # Fleiss (1971) as worked in Wikipedia's "Fleiss' kappa": 10 items, 14 raters, 5 categories -> 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=1e-3)
    assert fleiss_kappa(np.array([[2, 0, 0], [0, 2, 0]])) == pytest.approx(1.0)
    assert fleiss_kappa(np.array([[1, 0, 0]])) is None           # no item with two ratings
    assert fleiss_kappa(np.array([[3, 0, 0], [2, 0, 0]])) is None  # one category only: undefined
