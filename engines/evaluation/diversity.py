"""Diversity of generated segments and a memorisation check against the training set: pure functions.

    per_mode_diversity(embeddings, modes)    per mode: intra-class variance (mean squared distance to the
                                             mode's centroid) and mean pairwise distance of the embeddings
    note_similarity(a, b)                    Jaccard similarity of two segments' (onset, pitch) sets, at the
                                             best transposition within a tritone either way
    copy_rates(generated, index)             the share of generated segments that duplicate a training
                                             segment (similarity 1) or nearly copy one (>= threshold), against
                                             every segment of the training split (a CopyIndex); and the share
                                             that nearly copy a *rare* one: a training segment whose pattern
                                             recurs fewer than IDIOM_TWINS times in the training split

Why the rare share: the corpus repeats itself. Half of its training segments have a near twin elsewhere in the
training split (Essen folk tunes share stock 2/4 formulas hundreds of times over), and 7-11 % of held-out real
segments nearly copy a training segment by this very check. A generated segment that lands on such a formula
writes an idiom of the corpus; one that lands on a passage with no twin has memorised a piece.
"""
from __future__ import annotations

import numpy as np

from engines.music.notes import Segment

TRANSPOSITIONS = range(-6, 7)


def per_mode_diversity(embeddings: np.ndarray, modes: list[str]) -> dict:
    """{mode: {"n", "intra_class_variance", "mean_pairwise_distance"}} and "overall" (all modes pooled)."""
    embeddings = np.asarray(embeddings, float)
    modes = np.asarray(modes)
    out = {}
    for mode in list(dict.fromkeys(modes.tolist())) + ["overall"]:
        x = embeddings if mode == "overall" else embeddings[modes == mode]
        if len(x) < 2:
            out[mode] = {"n": int(len(x)), "intra_class_variance": None, "mean_pairwise_distance": None}
            continue
        centred = x - x.mean(0)
        squared = (x ** 2).sum(1)
        distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * x @ x.T, 0))
        upper = distances[np.triu_indices(len(x), 1)]
        out[mode] = {"n": int(len(x)), "intra_class_variance": round(float((centred ** 2).sum(1).mean()), 4),
                     "mean_pairwise_distance": round(float(upper.mean()), 4)}
    return out


def _note_set(segment: Segment, transpose: int = 0) -> set[tuple[int, int]]:
    notes = segment.notes
    return set(zip(notes["start"].astype(int).tolist(), (notes["pitch"].astype(int) + transpose).tolist()))


def note_similarity(a: Segment, b: Segment) -> float:
    """max over transpositions t of |A + t ∩ B| / |A + t ∪ B| on (onset tick, pitch); 0 when either is empty."""
    return best_transposition(a, b)[0]


def best_transposition(a: Segment, b: Segment) -> tuple[float, int]:
    """(note_similarity(a, b), the transposition t of `a` that reaches it; the smallest |t| on a tie)."""
    target = _note_set(b)
    if not len(a.notes) or not target:
        return 0.0, 0
    best, at = 0.0, 0
    for t in sorted(TRANSPOSITIONS, key=abs):
        shifted = _note_set(a, t)
        similarity = len(shifted & target) / len(shifted | target)
        if similarity > best:
            best, at = similarity, t
    return best, at


IDIOM_TWINS = 10   # a training segment with this many near twins in the training split is a corpus idiom


def copy_rates(generated: list[Segment], index, idiom_twins: int = IDIOM_TWINS) -> dict:
    """{"n", "duplicate_rate", "near_copy_rate", "rare_near_copy_rate", "mean_max_similarity", "threshold",
    "idiom_twins", "method"} over the generated segments with notes; `index` is a CopyIndex of the training
    split (engines/generation/copies.py: exhaustive, each segment against every training segment)."""
    best, rare = [], []
    for segment in generated:
        if not len(segment.notes):
            continue
        similarity, row = index.nearest(segment)
        best.append(similarity)
        rare.append(similarity >= index.threshold and index.near_twins(row) < idiom_twins)
    best = np.array(best)
    out = {"n": int(len(best)), "threshold": index.threshold, "idiom_twins": idiom_twins,
           "method": "every training segment (shingle index, exact similarity on the shortlist)"}
    if not len(best):
        return {**out, "duplicate_rate": None, "near_copy_rate": None, "rare_near_copy_rate": None,
                "mean_max_similarity": None}
    return {**out, "duplicate_rate": round(float((best >= 1.0).mean()), 4),
            "near_copy_rate": round(float((best >= index.threshold).mean()), 4),
            "rare_near_copy_rate": round(float(np.mean(rare)), 4),
            "mean_max_similarity": round(float(best.mean()), 4)}
