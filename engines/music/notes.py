"""Note arrays, pieces, segments and the fixed-size piano roll.

Time is counted in integer ticks, TICKS_PER_QUARTER to the quarter note: twelve ticks hold sixteenths (3),
eighth triplets (4) and sixteenth triplets (2) exactly, which is every subdivision the corpus uses in practice.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

TICKS_PER_QUARTER = 12

# One row per note. Times are ticks from the start of the piece (Piece) or of the segment (Segment).
NOTE_DTYPE = np.dtype([("start", "<i4"), ("duration", "<i4"), ("pitch", "u1"), ("velocity", "u1"), ("track", "u1")])

# One row per bar of a piece: where it starts, how long it is, and the time signature in force.
BAR_DTYPE = np.dtype([("start", "<i4"), ("length", "<i4"), ("ts_num", "u1"), ("ts_den", "u1")])


# Time signatures the engines generate, most common in the corpus first (torch-free, for the studio too).
METRES = ((2, 4), (6, 8), (4, 4), (4, 2), (3, 4), (2, 2), (3, 8), (3, 2), (9, 8), (6, 4), (12, 8), (5, 4))

# A tempo map: the tempo in quarter notes per minute from each tick on.
TEMPO_DTYPE = np.dtype([("start", "<i4"), ("qpm", "<f4")])


def fold_pitch(pitch: int, low: int = 21, high: int = 108) -> int:
    """Move a pitch by octaves into [low, high]: a C-1 becomes a C1, not the range's lowest key."""
    while pitch < low:
        pitch += 12
    while pitch > high:
        pitch -= 12
    return pitch


def shift_to_c(tonic: int) -> int:
    """Semitones (-6..5) that move a key with this tonic pitch class (0 = C) to a tonic of C, the nearer way."""
    return (-int(tonic) + 6) % 12 - 6


def transpose_notes(notes: np.ndarray, semitones: int, low: int = 21, high: int = 108) -> np.ndarray:
    """A copy of `notes` moved by `semitones`; a note pushed out of [low, high] is folded back by octaves."""
    out = notes.copy()
    if semitones and len(out):
        pitches = out["pitch"].astype(int) + int(semitones)
        out["pitch"] = [fold_pitch(p, low, high) for p in pitches.tolist()]
    return out


def effective_tempo(tempos: np.ndarray | None, start: int, end: int, default: float) -> float:
    """The steady tempo that lasts as long as the span [start, end) does under a tempo map."""
    if tempos is None or len(tempos) == 0 or end <= start:
        return default
    bounds = np.clip(np.append(tempos["start"], end), start, end)
    ticks = np.diff(bounds).astype(float)           # ticks spent under each tempo
    first = tempos["start"][0]
    minutes = (ticks / tempos["qpm"]).sum() / TICKS_PER_QUARTER
    if start < first:                                # before the first tempo event MIDI plays 120
        minutes += (min(first, end) - start) / TICKS_PER_QUARTER / 120.0
    return float((end - start) / TICKS_PER_QUARTER / minutes) if minutes > 0 else default


def make_notes(rows) -> np.ndarray:
    """`rows` of (start, duration, pitch, velocity[, track]) -> a NOTE_DTYPE array sorted by (start, pitch)."""
    rows = [tuple(r) + (0,) * (5 - len(r)) for r in rows]
    notes = np.array(rows, dtype=NOTE_DTYPE) if rows else np.zeros(0, NOTE_DTYPE)
    return sort_notes(notes)


def sort_notes(notes: np.ndarray) -> np.ndarray:
    return notes[np.lexsort((notes["pitch"], notes["start"]))]


def clean_notes(notes: np.ndarray) -> np.ndarray:
    """One note per (onset, pitch), the longest; a note is cut where the next note of the same pitch starts.

    MIDI cannot hold two overlapping notes of one pitch (the second note-on ends the first), so every path
    into the project normalises this way, and tokenizer round trips can be exact.
    """
    if len(notes) == 0:
        return notes
    notes = notes[notes["duration"] > 0]
    order = np.lexsort((-notes["duration"], notes["start"], notes["pitch"]))
    notes = notes[order]
    keep = np.ones(len(notes), bool)
    keep[1:] = (notes["pitch"][1:] != notes["pitch"][:-1]) | (notes["start"][1:] != notes["start"][:-1])
    notes = notes[keep].copy()
    same_pitch_next = np.zeros(len(notes), bool)
    same_pitch_next[:-1] = notes["pitch"][1:] == notes["pitch"][:-1]
    next_start = np.empty(len(notes), np.int64)
    next_start[:-1] = notes["start"][1:]
    next_start[-1] = np.iinfo(np.int32).max
    end = notes["start"].astype(np.int64) + notes["duration"]
    cut = same_pitch_next & (end > next_start)
    notes["duration"][cut] = (next_start[cut] - notes["start"][cut]).astype(np.int32)
    return sort_notes(notes)


def beat_ticks(ts_num: int, ts_den: int) -> int:
    """Ticks of the felt beat: a dotted quarter in 6/8, 9/8, 12/8; the denominator's note otherwise."""
    unit = TICKS_PER_QUARTER * 4 // ts_den
    if ts_den >= 8 and ts_num % 3 == 0 and ts_num > 3:
        return unit * 3
    return unit


def bar_ticks(ts_num: int, ts_den: int) -> int:
    return TICKS_PER_QUARTER * 4 * ts_num // ts_den


@dataclass
class Piece:
    """A whole piece of music, as imported from the music21 corpus or a MIDI file."""

    piece_id: str
    collection: str
    notes: np.ndarray            # NOTE_DTYPE, ticks from the piece start
    bars: np.ndarray             # BAR_DTYPE, consecutive
    tempo_qpm: float = 100.0     # quarter notes per minute (the first tempo when there is a map)
    title: str = ""
    tempos: np.ndarray | None = None  # TEMPO_DTYPE tempo map, when the source has tempo changes


@dataclass
class Segment:
    """`segment_bars` consecutive bars of one time signature, the unit every engine and metric works on."""

    notes: np.ndarray            # NOTE_DTYPE, ticks from the segment start
    ts_num: int = 4
    ts_den: int = 4
    num_bars: int = 4
    tempo_qpm: float = 100.0
    piece_id: str = ""
    collection: str = ""
    bar_start: int = 0           # index of the first bar in the piece (0-based)
    meta: dict = field(default_factory=dict)

    @property
    def bar_length(self) -> int:
        return bar_ticks(self.ts_num, self.ts_den)

    @property
    def length(self) -> int:
        return self.bar_length * self.num_bars

    @property
    def seconds(self) -> float:
        return self.length / TICKS_PER_QUARTER * 60.0 / self.tempo_qpm

    def piano_roll(self, steps_per_beat: int = 4, pitch_low: int = 21, pitch_high: int = 108) -> np.ndarray:
        """The fixed-size roll (2, num_bars * 4 * steps_per_beat, pitches); see notes_to_roll."""
        return notes_to_roll(self.notes, self.bar_length, self.num_bars, steps_per_beat, pitch_low, pitch_high)


def first_bars(segment: Segment, bars: int) -> Segment:
    """The segment cut after `bars` bars (notes held past the cut end there); itself when it is no longer."""
    if segment.num_bars <= bars:
        return segment
    end = bars * segment.bar_length
    notes = segment.notes[segment.notes["start"] < end].copy()
    notes["duration"] = np.minimum(notes["duration"], end - notes["start"])
    return replace(segment, notes=notes, num_bars=bars)


def bars_window(segment: Segment, start: int, bars: int) -> Segment:
    """Bars start .. start + bars - 1 of `segment` as a segment of their own (notes that start there, moved to
    0 and cut at its end): a window of a longer piece."""
    first, end = start * segment.bar_length, (start + bars) * segment.bar_length
    notes = segment.notes[(segment.notes["start"] >= first) & (segment.notes["start"] < end)].copy()
    notes["start"] -= first
    notes["duration"] = np.minimum(notes["duration"], end - first - notes["start"])
    return replace(segment, notes=notes, num_bars=bars, bar_start=segment.bar_start + start)


def ticks_per_step(bar_length: int, steps_per_beat: int = 4) -> int:
    """Ticks in one piano-roll step: a sixteenth (for steps_per_beat=4), doubled until the bar fits the roll.

    A 4-bar roll has 4 * 4 * steps_per_beat steps; a bar of 2/1 or 12/8 is longer than 4 quarters, so its
    steps are eighths. Powers of two keep every on-grid note on the grid.
    """
    base = TICKS_PER_QUARTER // steps_per_beat
    step = base
    while bar_length > 4 * steps_per_beat * step:
        step *= 2
    return step


def steps_per_bar(bar_length: int, steps_per_beat: int = 4) -> int:
    """Piano-roll steps in one bar of `bar_length` ticks (16 for 4/4, 12 for 3/4 and 6/8, 16 for 4/2 ...)."""
    return bar_length // ticks_per_step(bar_length, steps_per_beat)


def notes_to_roll(notes: np.ndarray, bar_length: int, num_bars: int, steps_per_beat: int = 4,
                  pitch_low: int = 21, pitch_high: int = 108) -> np.ndarray:
    """Notes -> piano roll of shape (2, steps, pitches), float32 in [0, 1].

    Channel 0 is 1 at each note's onset step; channel 1 holds velocity/127 on every step the note sounds.
    steps = num_bars * 4 * steps_per_beat; a shorter segment (3/4, 6/8) leaves trailing steps empty.
    """
    steps = num_bars * 4 * steps_per_beat
    roll = np.zeros((2, steps, pitch_high - pitch_low + 1), np.float32)
    if len(notes) == 0:
        return roll
    step = ticks_per_step(bar_length, steps_per_beat)
    keep = (notes["pitch"] >= pitch_low) & (notes["pitch"] <= pitch_high)
    notes = notes[keep]
    on = np.round(notes["start"] / step).astype(np.int64)
    off = np.maximum(on + 1, np.round((notes["start"] + notes["duration"]) / step).astype(np.int64))
    inside = on < steps
    on, off, notes = on[inside], np.minimum(off[inside], steps), notes[inside]
    pitch = notes["pitch"].astype(np.int64) - pitch_low
    velocity = notes["velocity"] / 127.0
    for a, b, p, v in zip(on, off, pitch, velocity):
        roll[1, a:b, p] = np.maximum(roll[1, a:b, p], v)
    roll[0, on, pitch] = 1.0
    return roll


def roll_to_notes(roll: np.ndarray, bar_length: int, steps_per_beat: int = 4, pitch_low: int = 21,
                  onset_threshold: float = 0.5, sustain_threshold: float = 0.5 / 127) -> np.ndarray:
    """Piano roll (2, steps, pitches) -> notes; the inverse of notes_to_roll for on-grid notes.

    A note starts where channel 0 >= onset_threshold and lasts while channel 1 >= sustain_threshold and no
    new onset of that pitch begins. Channel 1 holds velocity/127, so the default threshold (half a velocity
    step) keeps the softest notes; a model's output may want a higher one. Velocity is the sustain value at
    the onset (64 if it is below threshold).
    """
    step = ticks_per_step(bar_length, steps_per_beat)
    onset, sustain = roll[0] >= onset_threshold, roll[1] >= sustain_threshold
    steps = roll.shape[1]
    # A note ends at the first later step that is silent or starts a new note of the same pitch.
    stop = ~sustain | onset
    rows = []
    for p in np.nonzero(onset.any(axis=0))[0]:                  # one pass per sounding pitch, not per note
        starts = np.nonzero(onset[:, p])[0]
        stops = np.append(np.nonzero(stop[:, p])[0], steps)
        ends = stops[np.searchsorted(stops, starts, side="right")]
        levels = roll[1, starts, p]
        velocities = np.where(levels >= sustain_threshold, np.round(levels * 127), 64).clip(1, 127)
        rows.extend(zip((starts * step).tolist(), ((ends - starts) * step).tolist(), [int(p) + pitch_low] * len(starts),
                        velocities.astype(int).tolist(), [0] * len(starts)))
    return make_notes(rows)
