"""Fréchet distance between two sets of embeddings (the music analogue of FID), and the fixed embedding the
engines use until the learned judge arrives: the analyzer's raw features, standardised on real segments.

    d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))      (Dowson & Landau 1982; Heusel et al. 2017)
"""
from __future__ import annotations

import numpy as np
from scipy import linalg

from engines.music.features import measure_features
from engines.music.notes import Segment

# Every analyzer feature but velocity (the corpus has no dynamics, so it would only measure the engines'
# fixed DEFAULT_VELOCITY) and the key (a label, not a quantity).
EMBEDDING_FEATURES = ("onset_rate", "polyphony", "register", "pitch_range", "major_leaning", "key_clarity",
                      "chromaticism", "dissonance", "pc_entropy", "melodic_motion", "short_notes", "leap_fraction",
                      "silence", "syncopation")


def frechet_distance(a: np.ndarray, b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to a (N, D) and b (M, D).

    Numerically safe: when the product of the covariances is near singular, sqrtm is taken of the covariances
    plus eps * I, and the tiny imaginary part sqrtm can return is dropped."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N >= 2, D) arrays of one width, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    root, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    if not np.isfinite(root).all():
        offset = np.eye(len(cov_a)) * eps
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = root.real
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root), 0.0))


def feature_embedding(segments: list[Segment]) -> np.ndarray:
    """(N, len(EMBEDDING_FEATURES)) raw analyzer features; empty segments are skipped."""
    measured = (measure_features(s) for s in segments if len(s.notes))  # once per segment, not per feature
    rows = [[features[name] for name in EMBEDDING_FEATURES] for features in measured]
    return np.asarray(rows, np.float64).reshape(-1, len(EMBEDDING_FEATURES))


def standardise(real: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Scale every set by the real set's mean and standard deviation, so no feature's unit dominates."""
    mean, std = real.mean(0), real.std(0) + 1e-9
    return [(x - mean) / std for x in (real, *others)]
