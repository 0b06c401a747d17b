"""How smooth a join is: the analyzer's reading of the bars just before it against the bars just after.

    join_jump(left, right)       {"axis_jump", "density_jump"} between the last SIDE_BARS bars of `left` and the
                                 first SIDE_BARS of `right`
    join_cost(left, right)       the two as one number, in units of real music's median jump (the arranger
                                 ranks the candidates of a section's opening by it)
    corpus_join_jumps(cache)     the same across the boundaries between consecutive 4-bar segments of one corpus
                                 piece (mostly phrase boundaries), as medians: what a real piece does there

axis_jump is the mean absolute change of the five axes (energy, valence / 2 so that every axis spans 1,
tension, intimacy, motion); density_jump the change in notes per quarter note. A join of an arranged piece is
as smooth as real music when its jumps are no larger than the corpus's medians.
"""
from __future__ import annotations

import numpy as np

from engines.music.analyzer import AXES, ChromaticAnalyzer
from engines.music.notes import TICKS_PER_QUARTER, Segment, bars_window

SIDE_BARS = 2
# Real music's medians at a phrase boundary (corpus_join_jumps of the shipped corpus's test split, 1000 pairs):
# the units join_cost counts in.
TYPICAL_AXIS_JUMP = 0.174
TYPICAL_DENSITY_JUMP = 0.25


def on_one_scale(axes: np.ndarray) -> np.ndarray:
    """Axes (..., 5) in AXES order as the analyzer gives them -> every axis spanning 1 (valence, -1..1, halved)."""
    scaled = np.array(axes, dtype=float)
    scaled[..., AXES.index("valence")] /= 2
    return scaled


def reading(segment: Segment, analyzer: ChromaticAnalyzer) -> tuple[np.ndarray, float]:
    """(the five axes on one scale (5,), notes per quarter note) of a few bars; silence reads as zeros."""
    quarters = segment.length / TICKS_PER_QUARTER
    if not len(segment.notes):
        return np.zeros(len(AXES)), 0.0
    axes = analyzer.analyze(segment).axes
    return on_one_scale([axes[a] for a in AXES]), len(segment.notes) / quarters


def join_jump(left: Segment, right: Segment, analyzer: ChromaticAnalyzer | None = None) -> dict:
    """How far the analyzer's reading moves from the last SIDE_BARS bars of `left` to the first of `right`."""
    analyzer = analyzer or ChromaticAnalyzer()
    before = reading(bars_window(left, left.num_bars - SIDE_BARS, SIDE_BARS), analyzer)
    after = reading(bars_window(right, 0, SIDE_BARS), analyzer)
    return {"axis_jump": round(float(np.abs(before[0] - after[0]).mean()), 4),
            "density_jump": round(abs(before[1] - after[1]), 4)}


def join_cost(left: Segment, right: Segment, analyzer: ChromaticAnalyzer | None = None) -> float:
    """join_jump as one number: each jump in units of real music's median there, averaged (1: a typical
    phrase boundary; 0: no change at all)."""
    jump = join_jump(left, right, analyzer)
    return (jump["axis_jump"] / TYPICAL_AXIS_JUMP + jump["density_jump"] / TYPICAL_DENSITY_JUMP) / 2


def corpus_join_jumps(cache, analyzer: ChromaticAnalyzer | None = None, pairs: int = 1000, seed: int = 0,
                      split: str = "test") -> dict:
    """Medians (and quartiles) of join_jump across `pairs` boundaries between consecutive segments of one piece
    in the cache's `split`, drawn at random."""
    analyzer = analyzer or ChromaticAnalyzer()
    rows = np.sort(cache.split_indices(split))
    segments = cache.segments
    following = rows[:-1][(rows[1:] == rows[:-1] + 1)]      # candidates whose next row is in the split too
    same_piece = segments["piece"][following] == segments["piece"][following + 1]
    ends = segments["bar_start"][following] + segments["num_bars"][following]
    starts = following[same_piece & (ends == segments["bar_start"][following + 1])]   # the next one goes on there
    chosen = np.random.default_rng(seed).choice(starts, size=min(pairs, len(starts)), replace=False)
    jumps = [join_jump(cache.segment(int(i)), cache.segment(int(i) + 1), analyzer) for i in chosen]
    out = {"pairs": len(jumps), "split": split}
    for key in ("axis_jump", "density_jump"):
        values = np.array([j[key] for j in jumps])
        out[key] = {"median": round(float(np.median(values)), 4), "p25": round(float(np.quantile(values, 0.25)), 4),
                    "p75": round(float(np.quantile(values, 0.75)), 4)}
    return out
