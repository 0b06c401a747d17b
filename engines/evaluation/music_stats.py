"""Musical statistics of segments, and how closely a generated set's distribution matches a real one's.

Per segment (as MusPy defines them; Dong et al. 2020):
    pitch_class_entropy   Shannon entropy (bits, 0..log2 12) of the note-count pitch-class histogram
    scale_consistency     the largest share of notes inside one of the 24 major / natural-minor scales
    groove_consistency    1 - mean Hamming distance between consecutive bars' onset patterns (at the
                          segment's tick resolution), divided by the positions in a bar
    empty_beat_rate       share of beats on which no note starts
    polyphony             mean number of pitches sounding, over the time steps where any sounds
    pitch_range           highest minus lowest pitch, in semitones

Between sets (Yang & Lerch 2018): `overlap_area(real, generated)` is the area under both kernel-density
estimates at once, 1 for identical distributions and 0 for disjoint ones; `compare_sets` gives each
statistic's mean and std in both sets and that overlap.
"""
from __future__ import annotations

import math

import numpy as np

from engines.music.notes import Segment, beat_ticks

STATISTICS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_beat_rate", "polyphony",
              "pitch_range")
MAJOR = (0, 2, 4, 5, 7, 9, 11)
NATURAL_MINOR = (0, 2, 3, 5, 7, 8, 10)
SCALES = np.array([[(pc - tonic) % 12 in scale for pc in range(12)]
                   for scale in (MAJOR, NATURAL_MINOR) for tonic in range(12)])  # (24, 12) bool


def pitch_class_entropy(segment: Segment) -> float:
    counts = np.bincount(segment.notes["pitch"].astype(int) % 12, minlength=12).astype(float)
    if counts.sum() == 0:
        return 0.0
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def scale_consistency(segment: Segment) -> float:
    counts = np.bincount(segment.notes["pitch"].astype(int) % 12, minlength=12).astype(float)
    if counts.sum() == 0:
        return 0.0
    return float((SCALES @ counts).max() / counts.sum())


def groove_consistency(segment: Segment) -> float:
    """1 for bars that all start notes on the same positions; 1 when there is a single bar."""
    bar = segment.bar_length
    patterns = np.zeros((segment.num_bars, bar), bool)
    starts = segment.notes["start"].astype(int)
    inside = (starts >= 0) & (starts < bar * segment.num_bars)
    patterns[starts[inside] // bar, starts[inside] % bar] = True
    if segment.num_bars < 2:
        return 1.0
    hamming = (patterns[1:] != patterns[:-1]).sum(1) / bar
    return float(1 - hamming.mean())


def empty_beat_rate(segment: Segment) -> float:
    beat = beat_ticks(segment.ts_num, segment.ts_den)
    beats = max(math.ceil(segment.length / beat), 1)
    has_onset = np.zeros(beats, bool)
    starts = segment.notes["start"].astype(int)
    has_onset[np.clip(starts // beat, 0, beats - 1)] = True
    return float(1 - has_onset.mean())


def polyphony(segment: Segment) -> float:
    notes = segment.notes
    if not len(notes):
        return 0.0
    length = max(int((notes["start"] + notes["duration"]).max()), segment.length, 1)
    sounding = np.zeros((length, 128), bool)  # one row per tick: pitches, not notes (unisons count once)
    for start, duration, pitch in zip(notes["start"], notes["duration"], notes["pitch"]):
        sounding[int(start):int(start) + max(int(duration), 1), int(pitch)] = True
    per_tick = sounding.sum(1)
    return float(per_tick[per_tick > 0].mean())


def pitch_range(segment: Segment) -> float:
    pitches = segment.notes["pitch"].astype(int)
    return float(pitches.max() - pitches.min()) if len(pitches) else 0.0


FUNCTIONS = {"pitch_class_entropy": pitch_class_entropy, "scale_consistency": scale_consistency,
             "groove_consistency": groove_consistency, "empty_beat_rate": empty_beat_rate, "polyphony": polyphony,
             "pitch_range": pitch_range}


def segment_statistics(segments: list[Segment]) -> dict[str, np.ndarray]:
    """{statistic: (N,) values} over the segments that hold notes."""
    kept = [s for s in segments if len(s.notes)]
    return {name: np.array([FUNCTIONS[name](s) for s in kept], float) for name in STATISTICS}


def overlap_area(a: np.ndarray, b: np.ndarray, grid: int = 512) -> float:
    """Area under min(kde_a, kde_b) on a grid spanning both sets (Gaussian KDE, Scott's bandwidth). Sets
    without spread are widened by a small jitter, so two identical constants overlap fully."""
    from scipy.stats import gaussian_kde

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"need two values or more in each set, got {len(a)} and {len(b)}")
    span = max(np.ptp(np.concatenate([a, b])), 1e-6)
    densities = []
    for x in (a, b):
        if np.ptp(x) < 1e-9 * span or np.ptp(x) == 0:
            x = x + np.linspace(-1e-3, 1e-3, len(x)) * span  # a constant: a narrow bump, not a singular KDE
        densities.append(gaussian_kde(x))
    low, high = min(a.min(), b.min()) - 0.25 * span, max(a.max(), b.max()) + 0.25 * span
    xs = np.linspace(low, high, grid)
    pa, pb = densities[0](xs), densities[1](xs)
    return float(np.clip(np.trapezoid(np.minimum(pa, pb), xs), 0.0, 1.0))


def compare_sets(real: list[Segment], generated: list[Segment]) -> dict:
    """{statistic: {"real": {mean, std}, "generated": {mean, std}, "overlap": x}} (overlap None when a set has
    fewer than two segments with notes)."""
    r, g = segment_statistics(real), segment_statistics(generated)
    out = {}
    for name in STATISTICS:
        row = {"real": _summary(r[name]), "generated": _summary(g[name])}
        row["overlap"] = round(overlap_area(r[name], g[name]), 4) if min(len(r[name]), len(g[name])) >= 2 else None
        out[name] = row
    return out


def _summary(values: np.ndarray) -> dict:
    if not len(values):
        return {"mean": None, "std": None}
    return {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4)}
