"""Diversity of generated segments and a memorisation check against the training set: pure functions.

    per_mode_diversity(embeddings, modes)    per mode: intra-class variance (mean squared distance to the
                                             mode's centroid) and mean pairwise distance of the embeddings
    note_similarity(a, b)                    Jaccard similarity of two segments' (onset, pitch) sets, at the
                                             best transposition within a tritone either way
    copy_rates(generated, training, ...)     the share of generated segments that duplicate a training
                                             segment (similarity 1) or nearly copy one (>= threshold);
                                             candidates are each one's `k` nearest training segments in the
                                             embedding, so the check stays fast on a corpus of 50 000
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
    target = _note_set(b)
    if not len(a.notes) or not target:
        return 0.0
    best = 0.0
    for t in TRANSPOSITIONS:
        shifted = _note_set(a, t)
        best = max(best, len(shifted & target) / len(shifted | target))
    return best


def copy_rates(generated: list[Segment], training: list[Segment], generated_embedding: np.ndarray,
               training_embedding: np.ndarray, k: int = 8, threshold: float = 0.8) -> dict:
    """{"duplicate_rate", "near_copy_rate", "mean_max_similarity", "threshold", "n"} over the generated
    segments with notes (the embeddings are row-aligned with the segment lists)."""
    g, t = np.asarray(generated_embedding, float), np.asarray(training_embedding, float)
    if len(g) != len(generated) or len(t) != len(training):
        raise ValueError("embeddings must have one row per segment")
    best = []
    t_squared = (t ** 2).sum(1)
    for segment, row in zip(generated, g):
        if not len(segment.notes):
            continue
        distances = t_squared - 2 * t @ row            # + |row|^2, the same for every candidate
        candidates = np.argsort(distances)[:k]
        best.append(max((note_similarity(segment, training[i]) for i in candidates), default=0.0))
    best = np.array(best)
    if not len(best):
        return {"n": 0, "duplicate_rate": None, "near_copy_rate": None, "mean_max_similarity": None,
                "threshold": threshold}
    return {"n": int(len(best)), "duplicate_rate": round(float((best >= 1.0).mean()), 4),
            "near_copy_rate": round(float((best >= threshold).mean()), 4),
            "mean_max_similarity": round(float(best.mean()), 4), "threshold": threshold}
