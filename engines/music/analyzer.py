"""The chromatic analyzer: what a chromatic mode means, musically.

    features  (engines/music/features.py: onset rate, polyphony, key leaning, dissonance, syncopation ...)
      -> normalised features   each raw feature mapped to [0, 1] between its corpus 5th and 95th percentile
      -> raw axes              weighted sums (AXIS_WEIGHTS below: which features make energy, valence ...)
      -> axes                  each raw axis mapped through its corpus quantiles, so 0.8 means "higher than
                               80 % of the corpus"; valence is then spread to [-1, 1]
      -> mode                  the nearest prototype (MODE_PROTOTYPES, in those percentile units), with
                               soft scores softmax(-distance^2 / temperature) over all eight modes

Rebracketing and temporal complexity are absolute, not percentiles: a weighted sum of their components x
mapped by x / (x + median), so the corpus median lands on 0.5 and a wholly syncopated segment near 1.

The corpus constants live in engines/music/calibration.py, written by `python -m engines calibrate`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.errors import StudioError
from engines.music import calibration
from engines.music.features import key_name, measure_features
from engines.music.notes import Segment

# Bump when features, weights or the mapping change what the analyzer says (the segment cache is rebuilt).
ANALYZER_VERSION = 4   # 4: syncopation voice by voice, accent displacement in rebracketing
MODES = ("BLACK", "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "INDIGO", "VIOLET")
WHITE = "WHITE"  # no mode: unconditioned generation
AXES = ("energy", "valence", "tension", "intimacy", "motion")
# Everything the analyzer measures besides the mode on a [0, 1] scale (valence -1..1): what a request may ask for,
# the judge predicts and the engines condition on
ANALYZER_ATTRIBUTES = ("rebracketing", "temporal_complexity") + AXES
MODE_COLORS = {"BLACK": "#1f1f1f", "RED": "#d62728", "ORANGE": "#ff7f0e", "YELLOW": "#e6c200",
               "GREEN": "#2ca02c", "BLUE": "#1f77b4", "INDIGO": "#4b0082", "VIOLET": "#9467bd",
               "WHITE": "#9a9a9a"}

# Which normalised features make each axis. A leading "-" means the feature counts inverted (1 - x).
AXIS_WEIGHTS = {
    "energy": {"onset_rate": 0.45, "velocity": 0.2, "polyphony": 0.15, "register": 0.1, "-silence": 0.1},
    "valence": {"major_leaning": 0.55, "-dissonance": 0.15, "-chromaticism": 0.15, "register": 0.15},
    "tension": {"dissonance": 0.3, "chromaticism": 0.3, "-key_clarity": 0.15, "syncopation": 0.1,
                "pc_entropy": 0.15},
    "intimacy": {"-polyphony": 0.3, "-pitch_range": 0.25, "-velocity": 0.15, "-onset_rate": 0.15,
                 "-register": 0.15},
    "motion": {"melodic_motion": 0.45, "short_notes": 0.3, "leap_fraction": 0.25},
}
# Rebracketing: syncopation (voice by voice), ties over the bar, hemiola, phrases starting off the downbeat,
# and accent displacement (lengthened notes off the downbeat: the graded part most real music has some of;
# before version 4, 74 % of corpus segments measured exactly 0)
REBRACKETING_WEIGHTS = {"syncopation": 0.3, "cross_bar": 0.2, "hemiola": 0.2, "offbeat_phrases": 0.1,
                        "displacement": 0.2}
TEMPORAL_WEIGHTS = {"ioi_entropy": 0.35, "subdivisions": 0.25, "density_variation": 0.2,
                    "irregular_durations": 0.2}

# Mode prototypes in percentile units of (energy, valence, tension, intimacy, motion); valence here in [0, 1]
# (0 = darkest of the corpus). The musical character of each is tabled in the README.
MODE_PROTOTYPES = {
    "BLACK": [0.20, 0.10, 0.75, 0.35, 0.20],   # grave, dark, heavy
    "RED": [0.85, 0.25, 0.70, 0.15, 0.75],     # fiery, driving, dramatic
    "ORANGE": [0.80, 0.75, 0.40, 0.25, 0.80],  # warm, dancing, exuberant
    "YELLOW": [0.60, 0.90, 0.15, 0.50, 0.45],  # bright, cheerful, plain
    "GREEN": [0.40, 0.60, 0.25, 0.75, 0.35],   # pastoral, calm, flowing
    "BLUE": [0.20, 0.25, 0.30, 0.80, 0.25],    # melancholy, lyrical, soft
    "INDIGO": [0.35, 0.40, 0.55, 0.60, 0.60],  # introspective, wandering, mysterious
    "VIOLET": [0.55, 0.55, 0.85, 0.40, 0.50],  # shimmering, chromatic, strange
}


@dataclass
class AnalyzerConfig:
    prototypes: dict = field(default_factory=lambda: {m: list(v) for m, v in MODE_PROTOTYPES.items()})
    softmax_temperature: float = 0.02   # in squared percentile units; smaller = more decisive scores

    def validate(self) -> None:
        if set(self.prototypes) != set(MODES):
            raise StudioError(f"analyzer.prototypes must name exactly the modes {', '.join(MODES)}")
        for mode, point in self.prototypes.items():
            if len(point) != len(AXES) or not all(0 <= float(v) <= 1 for v in point):
                raise StudioError(f"analyzer.prototypes.{mode} must be {len(AXES)} numbers in [0, 1] "
                                  f"({', '.join(AXES)}; valence as 0..1)")
        if not self.softmax_temperature > 0:
            raise StudioError("analyzer.softmax_temperature must be > 0")


@dataclass
class Analysis:
    mode: str
    scores: dict            # mode -> probability, sums to 1
    axes: dict              # energy [0,1], valence [-1,1], tension, intimacy, motion [0,1]
    rebracketing: float
    temporal_complexity: float
    key: str
    features: dict

    def to_dict(self, bars: tuple[int, int] | None = None, with_features: bool = False) -> dict:
        out = {}
        if bars is not None:
            out["bars"] = list(bars)
        out.update({"mode": self.mode, "scores": {k: round(v, 4) for k, v in self.scores.items()},
                    "axes": {k: round(v, 4) for k, v in self.axes.items()},
                    "rebracketing": round(self.rebracketing, 4),
                    "temporal_complexity": round(self.temporal_complexity, 4), "key": self.key})
        if with_features:
            out["features"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.features.items()}
        return out


def normalise_features(features: dict, ranges: dict) -> dict:
    """Each feature in `ranges` mapped to [0, 1] between its (lo, hi); values may be numbers or arrays."""
    out = {}
    for name, (lo, hi) in ranges.items():
        value = np.clip((np.asarray(features[name], float) - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
        out[name] = float(value) if value.ndim == 0 else value
    return out


def raw_axes(normalised: dict) -> dict:
    out = {}
    for axis, weights in AXIS_WEIGHTS.items():
        total = 0.0
        for name, w in weights.items():
            value = 1.0 - normalised[name[1:]] if name.startswith("-") else normalised[name]
            total += w * value
        out[axis] = total / sum(weights.values())
    return out


def weighted(features: dict, weights: dict) -> float:
    return sum(w * features[name] for name, w in weights.items())


class ChromaticAnalyzer:
    """Deterministic analysis of a Segment: axes, mode with soft scores, rebracketing, temporal complexity."""

    def __init__(self, config: AnalyzerConfig | None = None):
        self.config = config or AnalyzerConfig()
        self.config.validate()
        self._prototypes = np.array([self.config.prototypes[m] for m in MODES], float)  # (8, 5)

    def axes_from_features(self, features: dict) -> dict:
        """Calibrated axes (each in [0, 1], valence still in [0, 1])."""
        raw = raw_axes(normalise_features(features, calibration.FEATURE_RANGES))
        return {axis: float(np.interp(raw[axis], calibration.AXIS_QUANTILES[axis], calibration.QUANTILE_LEVELS))
                for axis in AXES}

    def mode_scores(self, unit_axes: dict) -> dict:
        p = self.score_array(np.array([unit_axes[a] for a in AXES]))
        return {m: float(v) for m, v in zip(MODES, p)}

    def score_array(self, unit_axes: np.ndarray) -> np.ndarray:
        """(..., 5) axes in [0, 1] (valence too) -> (..., 8) soft scores over MODES."""
        d2 = ((unit_axes[..., None, :] - self._prototypes) ** 2).sum(-1)
        logits = -d2 / self.config.softmax_temperature
        p = np.exp(logits - logits.max(-1, keepdims=True))
        return p / p.sum(-1, keepdims=True)

    def analyze(self, segment: Segment) -> Analysis:
        if len(segment.notes) == 0:
            raise StudioError("the segment holds no notes; there is nothing to analyse")
        features = measure_features(segment)
        unit_axes = self.axes_from_features(features)
        scores = self.mode_scores(unit_axes)
        mode = max(scores, key=scores.get)
        axes = dict(unit_axes)
        axes["valence"] = 2.0 * unit_axes["valence"] - 1.0
        reb = weighted(features, REBRACKETING_WEIGHTS)
        tc = weighted(features, TEMPORAL_WEIGHTS)
        return Analysis(
            mode=mode, scores=scores, axes=axes,
            rebracketing=float(reb / (reb + calibration.REBRACKETING_MEDIAN)) if reb > 0 else 0.0,
            temporal_complexity=float(tc / (tc + calibration.TEMPORAL_MEDIAN)) if tc > 0 else 0.0,
            key=key_name(features["key_tonic"], features["key_major"]), features=features)


# Features the corpus cannot calibrate: music21 scores carry no performed dynamics, so every corpus velocity
# is the same. Their range is fixed instead (velocity 45..115 of 127) so user MIDI still counts its loudness.
FIXED_RANGES = {"velocity": [45 / 127, 115 / 127]}


def calibrate(feature_rows: list[dict]) -> dict:
    """Corpus constants for engines/music/calibration.py from the raw features of every corpus segment."""
    names = sorted({n.lstrip("-") for w in AXIS_WEIGHTS.values() for n in w})
    table = {n: np.array([row[n] for row in feature_rows], float) for n in names}
    ranges = {n: FIXED_RANGES.get(n) or [float(np.percentile(v, 5)), float(np.percentile(v, 95))]
              for n, v in table.items()}
    normalised = [normalise_features(row, ranges) for row in feature_rows]
    axes = [raw_axes(row) for row in normalised]
    levels = np.linspace(0, 1, 21)
    quantiles = {}
    for a in AXES:
        q = np.quantile(np.array([row[a] for row in axes]), levels)
        quantiles[a] = [float(x) for x in np.maximum.accumulate(q + np.arange(len(q)) * 1e-9)]
    reb = np.array([weighted(row, REBRACKETING_WEIGHTS) for row in feature_rows])
    tc = np.array([weighted(row, TEMPORAL_WEIGHTS) for row in feature_rows])
    return {"FEATURE_RANGES": ranges, "QUANTILE_LEVELS": [float(x) for x in levels], "AXIS_QUANTILES": quantiles,
            "REBRACKETING_MEDIAN": float(max(np.median(reb), 1e-3)),
            "TEMPORAL_MEDIAN": float(max(np.median(tc), 1e-3))}


def write_calibration(constants: dict, path, source: str) -> None:
    """Write the constants as a Python module, so the analyzer stays importable without any data file."""
    lines = ['"""Corpus calibration of the chromatic analyzer. Written by `python -m engines calibrate`; do not edit.',
             "", f"Source: {source}", '"""', ""]
    for name, value in constants.items():
        lines.append(f"{name} = {value!r}")
    from pathlib import Path

    Path(path).write_text("\n".join(lines) + "\n")
