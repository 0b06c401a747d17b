"""Raw musical features of a segment: plain numbers measured from its notes, no calibration.

Every function takes a Segment and is deterministic. `measure_features` returns them all as a dict; the
analyzer turns them into emotion axes, rebracketing and temporal complexity.
"""
from __future__ import annotations

import math

import numpy as np

from engines.music.notes import TICKS_PER_QUARTER, Segment, beat_ticks

# Krumhansl-Kessler key profiles (C major / C minor), rotated for the other keys.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural minor with the raised 6th and 7th
PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Dissonance of each interval class 0..6 (unison/octave, m2/M7, M2/m7, m3/M6, M3/m6, P4/P5, tritone).
# Consonances score 0, so a consonant chorale is no tenser than a single line; the order of the
# dissonances follows Hutchinson & Knopoff's roughness ranking.
ROUGHNESS = np.array([0.0, 1.0, 0.6, 0.0, 0.0, 0.1, 0.8])

# Step of the analysis grid: a 48th of a whole note resolves sixteenths and eighth triplets.
GRID = TICKS_PER_QUARTER // 12 or 1


def _onset_times(notes: np.ndarray) -> np.ndarray:
    return np.unique(notes["start"])


def pitch_class_histogram(notes: np.ndarray) -> np.ndarray:
    """Duration-weighted pitch-class histogram (12,), summing to 1."""
    hist = np.bincount(notes["pitch"] % 12, weights=notes["duration"].astype(float), minlength=12)
    return hist / max(hist.sum(), 1e-9)


def estimate_key(hist: np.ndarray) -> tuple[int, bool, float, float]:
    """Krumhansl-Schmuckler: (tonic pitch class, is_major, best major r, best minor r)."""
    def correlations(profile):
        rolled = np.stack([np.roll(profile, k) for k in range(12)])
        a = rolled - rolled.mean(axis=1, keepdims=True)
        b = hist - hist.mean()
        denom = np.sqrt((a ** 2).sum(axis=1) * (b ** 2).sum()) + 1e-12
        return (a @ b) / denom

    major, minor = correlations(MAJOR_PROFILE), correlations(MINOR_PROFILE)
    if major.max() >= minor.max():
        return int(major.argmax()), True, float(major.max()), float(minor.max())
    return int(minor.argmax()), False, float(major.max()), float(minor.max())


def key_name(tonic: int, is_major: bool) -> str:
    return f"{PITCH_NAMES[tonic]} {'major' if is_major else 'minor'}"


def sounding_matrix(segment: Segment, step: int) -> np.ndarray:
    """(steps, 128) bool: which pitches sound at each grid step."""
    steps = max(1, segment.length // step)
    grid = np.zeros((steps, 128), bool)
    for n in segment.notes:
        a = int(n["start"]) // step
        b = max(a + 1, (int(n["start"]) + int(n["duration"])) // step)
        grid[a:min(b, steps), n["pitch"]] = True
    return grid


def dissonance(grid: np.ndarray) -> float:
    """Mean roughness over all pairs of simultaneously sounding notes (0 for a single line)."""
    total, pairs = 0.0, 0
    for row in np.unique(grid[grid.sum(axis=1) >= 2], axis=0):
        pitches = np.nonzero(row)[0]
        diff = np.abs(pitches[:, None] - pitches[None, :])[np.triu_indices(len(pitches), 1)] % 12
        ic = np.minimum(diff, 12 - diff)
        weight = (grid == row).all(axis=1).sum()
        total += ROUGHNESS[ic].sum() * weight
        pairs += len(ic) * weight
    return total / pairs if pairs else 0.0


def skyline(notes: np.ndarray) -> np.ndarray:
    """Top line: the highest pitch sounding at each onset time, repeats merged, (changes,) int.

    Sounding, not just starting: in a chorale the soprano's held note stays the top line while inner
    voices move, so the line does not leap down to the alto and back.
    """
    start = notes["start"].astype(np.int64)
    end = start + notes["duration"]
    onsets = np.unique(start)
    sounding = (start[None, :] <= onsets[:, None]) & (end[None, :] > onsets[:, None])  # (onsets, notes)
    top = np.where(sounding, notes["pitch"].astype(int)[None, :], -1).max(axis=1)
    keep = np.ones(len(top), bool)
    keep[1:] = top[1:] != top[:-1]
    return top[keep]


def metric_level(position: np.ndarray, bar: int, beat: int) -> np.ndarray:
    """3 on a downbeat, 2 on a beat, 1 on a half (or third of a) beat, 0 anywhere weaker."""
    pos = np.asarray(position) % bar
    sub = beat // 3 if beat % 3 == 0 and beat // 3 >= GRID and beat > TICKS_PER_QUARTER else beat // 2
    level = np.zeros(pos.shape, int)
    level[pos % max(sub, 1) == 0] = 1
    level[pos % beat == 0] = 2
    level[pos == 0] = 3
    return level


def syncopation(segment: Segment) -> float:
    """Fraction of onsets, voice by voice (track by track), that sound through a stronger metric position
    where their own voice starts nothing new; averaged over voices by their onsets.

    Voice by voice (analyzer version 4): a suspension in one part of a motet is a syncopation even while the
    other parts move on the beat; measured over all parts at once, their onsets hid it."""
    notes = segment.notes
    if len(notes) == 0:
        return 0.0
    total, weight = 0.0, 0
    for track in np.unique(notes["track"]):
        voice = notes[notes["track"] == track]
        count = len(np.unique(voice["start"]))
        total += _syncopation_of(voice, segment) * count
        weight += count
    return total / weight if weight else 0.0


def _syncopation_of(notes: np.ndarray, segment: Segment) -> float:
    bar, beat = segment.bar_length, beat_ticks(segment.ts_num, segment.ts_den)
    onsets = _onset_times(notes)
    if len(onsets) == 0:
        return 0.0
    onset_set = set(onsets.tolist())
    longest = {}
    for n in notes:
        longest[int(n["start"])] = max(longest.get(int(n["start"]), 0), int(n["duration"]))
    half = max(beat // 2, 1)
    count = 0
    for t in onsets.tolist():
        end = min(t + longest[t], segment.length)
        own = metric_level(np.array([t]), bar, beat)[0]
        # candidate stronger positions strictly inside the note: the half-beat grid
        first = (t // half + 1) * half
        positions = np.arange(first, end, half)
        if len(positions) == 0:
            continue
        levels = metric_level(positions, bar, beat)
        stronger = positions[levels > own]
        if len(stronger) and int(stronger[0]) not in onset_set:
            count += 1
    return count / len(onsets)


def cross_bar(segment: Segment) -> float:
    """Fraction of notes that sound across a bar line (ties over the bar)."""
    notes, bar = segment.notes, segment.bar_length
    if len(notes) == 0:
        return 0.0
    start = notes["start"].astype(int)
    end = start + notes["duration"]
    next_bar = (start // bar + 1) * bar
    return float(np.mean((end > next_bar) & (next_bar < segment.length)))


def hemiola(segment: Segment) -> float:
    """Share of the segment covered by runs of groupings that cut across the metre.

    Triple metres (3/4, 3/2, 3/8): two or more successive inter-onset intervals of two beats.
    Compound metres (6/8, 9/8, 12/8): three or more successive intervals of two eighths (a 3/4 feel).
    Duple metres: two or more successive intervals of one and a half beats (3+3+2).
    """
    onsets = _onset_times(segment.notes)
    if len(onsets) < 3:
        return 0.0
    beat = beat_ticks(segment.ts_num, segment.ts_den)
    if segment.ts_den >= 8 and segment.ts_num % 3 == 0 and segment.ts_num > 3:
        unit, min_run = beat * 2 // 3, 3
    elif segment.ts_num % 3 == 0:
        unit, min_run = beat * 2, 2
    else:
        unit, min_run = beat * 3 // 2, 2
    ioi = np.diff(np.append(onsets, segment.length))
    covered, run = 0, 0
    for value in ioi.tolist() + [-1]:
        if value == unit:
            run += 1
            continue
        if run >= min_run:
            covered += run * unit
        run = 0
    return min(1.0, covered / segment.length)


def top_line(notes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The melody's own onsets: times where the highest note starting is at least as high as everything still
    sounding (a held soprano note is not overtaken by an inner voice), and the time each lasts until the next
    such onset (the last: its own duration). ((k,) starts, (k,) inter-onset intervals), ticks."""
    if len(notes) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    start = notes["start"].astype(np.int64)
    end = start + notes["duration"].astype(np.int64)
    pitch = notes["pitch"].astype(int)
    onsets = np.unique(start)
    starting = start[None, :] == onsets[:, None]                                       # (onsets, notes)
    held = (start[None, :] < onsets[:, None]) & (end[None, :] > onsets[:, None])
    new_top = np.where(starting, pitch[None, :], -1).max(axis=1)
    old_top = np.where(held, pitch[None, :], -1).max(axis=1)
    times = onsets[new_top >= old_top]
    if len(times) == 0:
        return times, times
    last = end[start == times[-1]].max() - times[-1]
    return times, np.append(np.diff(times), last)


def displacement(segment: Segment) -> float:
    """Accent displacement (Krebs' displacement dissonance) in the top line: of the weight of its agogic
    accents (a note lasting longer than the one before it, weight log2 of the ratio, at most 1), the share
    that falls off the downbeat: on another beat a quarter of it, between beats all of it. Graded: most real
    music places some lengthened notes off the downbeat, so it is rarely exactly 0 (analyzer version 4)."""
    times, ioi = top_line(segment.notes)
    if len(times) < 2:
        return 0.0
    ratio = ioi[1:] / np.maximum(ioi[:-1], 1)
    weight = np.clip(np.log2(np.maximum(ratio, 1.0)), 0.0, 1.0)
    if weight.sum() <= 0:
        return 0.0
    levels = metric_level(times[1:], segment.bar_length, beat_ticks(segment.ts_num, segment.ts_den))
    off = np.where(levels == 3, 0.0, np.where(levels == 2, 0.25, 1.0))
    return float((weight * off).sum() / weight.sum())


def offbeat_phrase_starts(segment: Segment) -> float:
    """Phrase starts (the first onset, and any onset after half a beat of silence) that miss the downbeat:
    1 off the beat, 0.5 on a weak beat, 0 on a downbeat; averaged over phrase starts."""
    notes, bar, beat = segment.notes, segment.bar_length, beat_ticks(segment.ts_num, segment.ts_den)
    if len(notes) == 0:
        return 0.0
    order = np.argsort(notes["start"], kind="stable")
    start = notes["start"][order].astype(int)
    end = np.maximum.accumulate(start + notes["duration"][order])
    gaps = start[1:] - end[:-1]
    phrase = np.concatenate([[start[0]], start[1:][gaps >= max(beat // 2, 1)]])
    phrase = np.unique(phrase)
    levels = metric_level(phrase, bar, beat)
    scores = np.where(levels == 3, 0.0, np.where(levels == 2, 0.5, 1.0))
    return float(scores.mean())


def temporal_components(segment: Segment) -> dict:
    """Components of rhythmic complexity, each in [0, 1]."""
    notes, beat = segment.notes, beat_ticks(segment.ts_num, segment.ts_den)
    onsets = _onset_times(notes)
    if len(onsets) < 2:
        return {"ioi_entropy": 0.0, "subdivisions": 0.0, "density_variation": 0.0, "irregular_durations": 0.0}
    ioi = np.diff(onsets)
    _, counts = np.unique(ioi, return_counts=True)
    p = counts / counts.sum()
    ioi_entropy = float(-(p * np.log2(p)).sum() / 3.0)            # 8 equally used values -> 1
    pos = onsets % beat
    kinds = {
        "half": bool(np.any((pos != 0) & (pos % max(beat // 2, 1) == 0))),
        "quarter": bool(np.any((pos % max(beat // 2, 1) != 0) & (pos % max(beat // 4, 1) == 0))),
        "triplet": bool(np.any((pos % max(beat // 2, 1) != 0) & (pos % max(beat // 3, 1) == 0)
                               & (pos % max(beat // 4, 1) != 0))),
        "finer": bool(np.any((pos % max(beat // 4, 1) != 0) & (pos % max(beat // 3, 1) != 0))),
    }
    subdivisions = sum(kinds.values()) / 4.0
    # Density change from bar to bar (steady whole notes and steady sixteenths both score 0).
    per_bar = np.bincount(onsets // segment.bar_length, minlength=segment.num_bars)[:segment.num_bars]
    density_variation = float(min(1.0, per_bar.std() / max(per_bar.mean(), 1e-9)))
    d = notes["duration"].astype(float) / beat
    plain = np.isclose(np.log2(np.maximum(d, 1e-9)) % 1, 0) | np.isclose(np.log2(np.maximum(d, 1e-9)) % 1, 1)
    irregular = float(np.mean(~plain))
    return {"ioi_entropy": min(1.0, ioi_entropy), "subdivisions": subdivisions,
            "density_variation": density_variation, "irregular_durations": irregular}


def measure_features(segment: Segment) -> dict:
    """All raw features of a segment (see README, 'The chromatic analyzer')."""
    notes = segment.notes
    beat = beat_ticks(segment.ts_num, segment.ts_den)
    seconds = max(segment.seconds, 1e-6)
    onsets = _onset_times(notes)
    hist = pitch_class_histogram(notes)
    tonic, is_major, r_major, r_minor = estimate_key(hist)
    scale = MAJOR_SCALE if is_major else MINOR_SCALE
    in_scale = np.zeros(12, bool)
    in_scale[[(tonic + s) % 12 for s in scale]] = True
    step = max(TICKS_PER_QUARTER // 4, 1)
    grid = sounding_matrix(segment, step)
    sounding = grid.sum(axis=1)
    pitches = notes["pitch"].astype(float)
    weights = notes["duration"].astype(float)
    top = skyline(notes)
    intervals = np.abs(np.diff(top)) if len(top) > 1 else np.zeros(1)
    nonzero = hist[hist > 0]
    features = {
        "onset_rate": len(onsets) / seconds,                           # onsets per second
        "polyphony": float(sounding[sounding > 0].mean()) if sounding.any() else 0.0,
        "velocity": float(notes["velocity"].mean() / 127.0),
        "register": float(np.average(pitches, weights=weights)),
        "pitch_range": float(pitches.max() - pitches.min()),
        "major_leaning": r_major - r_minor,
        "key_clarity": max(r_major, r_minor),
        "chromaticism": float(hist[~in_scale].sum()),
        "dissonance": float(dissonance(grid)),
        "pc_entropy": float(-(nonzero * np.log2(nonzero)).sum() / math.log2(12)),
        "melodic_motion": float(intervals.sum() / seconds),            # semitones per second in the top line
        "leap_fraction": float(np.mean(intervals > 4)),
        "short_notes": float(np.mean(notes["duration"] < beat)),
        "silence": float(np.mean(sounding == 0)),
        "syncopation": syncopation(segment),
        "cross_bar": cross_bar(segment),
        "hemiola": hemiola(segment),
        "offbeat_phrases": offbeat_phrase_starts(segment),
        "displacement": displacement(segment),
        "key_tonic": tonic,
        "key_major": is_major,
    }
    features.update(temporal_components(segment))
    return features
