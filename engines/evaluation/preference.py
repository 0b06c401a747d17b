"""Statistics of A/B listening votes: pure functions over counts, used by the listening sessions' results.

    wilson_interval(wins, n)          the Wilson score interval of a binomial proportion (better than the
                                      normal one near 0, 1 and at small n)
    binomial_p(wins, n)               two-sided exact binomial test against 1/2 (scipy.stats.binomtest)
    head_to_head(votes)               per pair of systems: wins, losses, ties, win rate over decisive votes
                                      with its Wilson interval and binomial p
    bradley_terry(wins)               strengths from a win matrix by Hunter's (2004) MM iterations; a tie
                                      counts half a win each way
    bradley_terry_bootstrap(votes)    the same with percentile intervals from votes resampled with
                                      replacement
    fleiss_kappa(counts)              agreement of raters on items rated by several of them (each item may
                                      have its own number of raters), with categories first / second / tie

A vote here is (system_x, system_y, outcome) with outcome "x", "y" or "tie": which system the rater
preferred, whatever side it was played on.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

OUTCOMES = ("x", "y", "tie")


def wilson_interval(wins: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """(low, high) of the Wilson score interval for wins / n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_p(wins: int, n: int) -> float:
    """Two-sided exact binomial test of wins out of n against a fair coin; 1 when n is 0."""
    if n <= 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(int(wins), int(n), 0.5).pvalue)


def _check(votes) -> list[tuple[str, str, str]]:
    votes = [(str(x), str(y), str(o)) for x, y, o in votes]
    for x, y, outcome in votes:
        if outcome not in OUTCOMES:
            raise ValueError(f"vote outcome must be one of {', '.join(OUTCOMES)}, got '{outcome}'")
        if x == y:
            raise ValueError(f"a vote compares two systems, got '{x}' twice")
    return votes


def head_to_head(votes: Sequence[tuple[str, str, str]]) -> list[dict]:
    """One row per pair of systems (sorted names): wins of the first, of the second, ties, the first's win
    rate over decisive votes, its Wilson interval, the binomial p and the share of ties."""
    tally: dict[tuple[str, str], list[int]] = {}
    for x, y, outcome in _check(votes):
        a, b = sorted((x, y))
        row = tally.setdefault((a, b), [0, 0, 0])
        if outcome == "tie":
            row[2] += 1
        else:
            row[0 if (outcome == "x") == (x == a) else 1] += 1
    rows = []
    for (a, b), (wins, losses, ties) in sorted(tally.items()):
        decisive = wins + losses
        low, high = wilson_interval(wins, decisive)
        rows.append({"system_a": a, "system_b": b, "a_wins": wins, "b_wins": losses, "ties": ties,
                     "votes": decisive + ties, "a_win_rate": wins / decisive if decisive else None,
                     "interval": [low, high], "p_value": binomial_p(wins, decisive),
                     "tie_rate": ties / (decisive + ties)})
    return rows


def win_matrix(votes: Sequence[tuple[str, str, str]], systems: Sequence[str]) -> np.ndarray:
    """W (S, S): W[i, j] = times system i was preferred to system j (a tie adds 1/2 to both)."""
    index = {s: i for i, s in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))
    for x, y, outcome in _check(votes):
        i, j = index[x], index[y]
        if outcome == "x":
            wins[i, j] += 1
        elif outcome == "y":
            wins[j, i] += 1
        else:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    return wins


def bradley_terry(wins: np.ndarray, iterations: int = 1000, tol: float = 1e-10, prior: float = 0.0) -> np.ndarray:
    """Strengths p (S,) with P(i beats j) = p_i / (p_i + p_j), normalised to a geometric mean of 1, from the
    win matrix (win_matrix). `prior` adds that many pseudo-wins each way between every pair (keeps a system
    that never won, or never lost, finite; the bootstrap uses 0.5)."""
    wins = np.asarray(wins, dtype=float) + prior * (1 - np.eye(len(wins)))
    games = wins + wins.T
    total_wins = wins.sum(1)
    p = np.ones(len(wins))
    for _ in range(iterations):
        denominator = (games / (p[:, None] + p[None, :])).sum(1)
        new = np.where(denominator > 0, total_wins / np.maximum(denominator, 1e-300), p)
        new = np.maximum(new, 1e-12)
        new = new / np.exp(np.log(new).mean())
        if np.abs(new - p).max() < tol:
            return new
        p = new
    return p


def bradley_terry_bootstrap(votes: Sequence[tuple[str, str, str]], systems: Sequence[str], samples: int = 500,
                            seed: int = 0, level: float = 0.95) -> dict:
    """{"systems", "scores" (log-strengths, mean 0), "intervals" [[lo, hi] per system]} from the votes, with
    percentile intervals over `samples` resamplings of the votes."""
    votes = _check(votes)
    prior = 0.5
    scores = np.log(bradley_terry(win_matrix(votes, systems), prior=prior))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples if votes else 0):
        picked = [votes[i] for i in rng.integers(0, len(votes), len(votes))]
        draws.append(np.log(bradley_terry(win_matrix(picked, systems), prior=prior)))
    if draws:
        tail = (1 - level) / 2 * 100
        low, high = np.percentile(np.array(draws), [tail, 100 - tail], axis=0)
    else:
        low, high = np.full(len(systems), -np.inf), np.full(len(systems), np.inf)
    return {"systems": list(systems), "scores": scores.round(4).tolist(),
            "intervals": [[round(float(a), 4), round(float(b), 4)] for a, b in zip(low, high)]}


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of counts (items, categories): how many raters put each item in each category. Items
    with fewer than two ratings are left out; None when no item has two, or every rating is one category."""
    counts = np.asarray(counts, dtype=float)
    counts = counts[counts.sum(1) >= 2]
    if not len(counts):
        return None
    n = counts.sum(1)
    agreement = ((counts * (counts - 1)).sum(1) / (n * (n - 1))).mean()       # P-bar
    shares = counts.sum(0) / counts.sum()
    chance = float((shares ** 2).sum())                                       # P-bar_e
    if chance >= 1:
        return None
    return float((agreement - chance) / (1 - chance))
