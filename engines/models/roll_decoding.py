"""From a generated piano roll to notes: what the roll engines (VAE, diffusion) share.

A roll engine yields, per segment, an onset and a sustain probability for every (step, pitch), a metre and
a tempo. `probabilities_to_segments` turns them into a Segment:

    onsets   a note starts where the onset probability reaches `onset_threshold`; with `pitch_window` > 0
             only the peak within that many semitones at one step counts (pitch_peaks); with
             `sustain_onsets`, also where the sustain probability rises to `sustain_threshold` without an
             onset (a model that writes the sparse onset channel less surely than the sustain one still
             sounds every note it holds)
    length   the note lasts while the sustain probability >= `sustain_threshold`, and ends early where a note
             within `pitch_window` semitones starts (a blurred sustain otherwise lets a melody's notes
             overlap by a step, and each overlap is a second the analyzer hears as dissonance); notes
             shorter than `min_steps` steps are dropped (isolated one-step specks)
    metre    steps past the last bar of the metre are padding and dropped
    velocity the corpus carries no dynamics, so every note gets DEFAULT_VELOCITY

Keys: engines trained in C (`key_to_c`) move their output to the tonic a user names (`tonic_shift`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engines.data.torch_dataset import METRES
from engines.errors import StudioError
from engines.music.features import PITCH_NAMES, estimate_key, pitch_class_histogram
from engines.music.notes import Segment, bar_ticks, roll_to_notes, shift_to_c, ticks_per_step

DEFAULT_VELOCITY = 80


def pitch_peaks(onset: torch.Tensor, window: int) -> torch.Tensor:
    """Onset probabilities (B, T, P) with every value that is not the largest within `window` semitones at its
    step set to 0 (window 0 = unchanged).

    A factorised decoder unsure between two neighbouring pitches gives both a high probability, and
    thresholding then sounds both: a minor or major second the data rarely starts at once. Keeping the local
    peak on the pitch axis decodes "one of the two", as peak picking does in pitch estimation.
    """
    if window <= 0:
        return onset
    peaks = F.max_pool1d(onset.flatten(0, 1)[:, None], 2 * window + 1, stride=1, padding=window).view_as(onset)
    return torch.where(onset >= peaks, onset, torch.zeros_like(onset))


def neighbour_onsets(onsets: np.ndarray, window: int) -> np.ndarray:
    """(T, P) bool: a note starts within `window` semitones of this pitch at this step, but not on it."""
    padded = np.pad(onsets, ((0, 0), (window, window)))
    near = np.zeros_like(onsets)
    for offset in range(-window, window + 1):
        if offset:
            near |= padded[:, window + offset:window + offset + onsets.shape[1]]
    return near & ~onsets


def probabilities_to_segments(onset: torch.Tensor, sustain: torch.Tensor, metres: list[int], tempos: list[float],
                              steps_per_beat: int = 4, pitch_low: int = 21, segment_bars: int = 4,
                              onset_threshold: float = 0.5, sustain_threshold: float = 0.5,
                              pitch_window: int = 0, sustain_onsets: bool = False,
                              min_steps: int = 1) -> list[Segment]:
    """onset, sustain (B, T, P) probabilities, metres (B,) indices into METRES, tempos (B,) qpm -> Segments
    (the rules are in the module docstring)."""
    sustain = sustain.cpu().numpy()
    onset = onset.cpu()
    if sustain_onsets:  # a rise of the sustain channel counts as an onset of full probability
        held_all = sustain >= sustain_threshold
        rise = held_all & ~np.pad(held_all, ((0, 0), (1, 0), (0, 0)))[:, :-1]
        onset = torch.maximum(onset, torch.from_numpy(rise.astype(np.float32)))
    onset = pitch_peaks(onset, pitch_window).numpy()
    segments = []
    for b in range(onset.shape[0]):
        num, den = METRES[metres[b]]
        bar = bar_ticks(num, den)
        step = ticks_per_step(bar, steps_per_beat)
        steps_used = segment_bars * bar // step
        held = sustain[b] >= sustain_threshold
        if pitch_window > 0:
            held &= ~neighbour_onsets(onset[b] >= onset_threshold, pitch_window)
        roll = np.stack([onset[b], np.where(held, DEFAULT_VELOCITY / 127, 0.0)])
        roll[:, steps_used:] = 0  # steps past the last bar of this metre are padding
        notes = roll_to_notes(roll, bar, steps_per_beat, pitch_low, onset_threshold, 0.5 / 127)
        notes = notes[notes["duration"] >= min_steps * step]
        notes["velocity"] = DEFAULT_VELOCITY
        segments.append(Segment(notes=notes, ts_num=num, ts_den=den, num_bars=segment_bars,
                                tempo_qpm=round(float(tempos[b]), 1)))
    return segments


# Tonic names a user may type, lower case -> pitch class: PITCH_NAMES plus the other spelling of each black key.
TONICS = {**{name.lower(): i for i, name in enumerate(PITCH_NAMES)}, "db": 1, "d#": 3, "gb": 6, "g#": 8, "a#": 10}


def tonic_shift(tonic: str | None) -> int:
    """Semitones (-6..5) from C to the tonic named (C, C#, Db, D, ... B); None or "" = 0."""
    if not tonic:
        return 0
    key = str(tonic).strip().lower()
    if key not in TONICS:
        raise StudioError(f"unknown tonic '{tonic}'; choose one of {', '.join(PITCH_NAMES)}")
    return -shift_to_c(TONICS[key])


def segment_tonic(segment: Segment) -> int:
    """Pitch class of the tonic of the key the analyzer estimates for a segment (0 = C)."""
    return estimate_key(pitch_class_histogram(segment.notes))[0]
