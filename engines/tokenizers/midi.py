"""REMI and Compound Word (CPWord) tokenizers through miditok, configured for the project's segments.

The configuration is chosen so corpus segments round-trip exactly on onset, pitch and duration:
segments store notes on a 12-ticks-per-quarter grid, and miditok's grid is `BEAT_RESOLUTION` per beat of
the time signature's denominator, so 24 per beat is exact for x/2 (12 per quarter), x/4 and x/8 metres
(segmenting respells x/1 and x/16 into those). Durations up to 8 beats are exact; longer ones (up to
48 beats, a whole 4-bar segment of 12/8 in eighths) are held at quarter-beat precision.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from engines.errors import StudioError
from engines.music.notes import NOTE_DTYPE, TICKS_PER_QUARTER, Segment, clean_notes

KINDS = ("remi", "cpword")
BEAT_RESOLUTION = 24
TIME_SIGNATURES = {2: [1, 2, 3, 4, 5, 6, 8], 4: list(range(1, 13)), 8: list(range(1, 13))}


def tokenizer_config(pitch_low: int = 21, pitch_high: int = 108):
    from miditok import TokenizerConfig

    return TokenizerConfig(
        pitch_range=(pitch_low, pitch_high + 1),
        beat_res={(0, 8): BEAT_RESOLUTION, (8, 48): 4},
        num_velocities=32,
        use_time_signatures=True,
        time_signature_range=TIME_SIGNATURES,
        use_tempos=True,
        num_tempos=48,
        tempo_range=(30, 300),
        log_tempos=True,
        use_programs=False,
        remove_duplicated_notes=True,
    )


@lru_cache(maxsize=4)
def get_tokenizer(kind: str = "remi", pitch_low: int = 21, pitch_high: int = 108):
    """A cached miditok tokenizer; `kind` is 'remi' or 'cpword'."""
    from miditok import REMI, CPWord

    if kind not in KINDS:
        raise StudioError(f"unknown tokenizer '{kind}'; choose one of {', '.join(KINDS)}")
    cls = REMI if kind == "remi" else CPWord
    return cls(tokenizer_config(pitch_low, pitch_high))


def encode_segment(segment: Segment, kind: str = "remi") -> np.ndarray:
    """Segment -> token ids. REMI: (tokens,); CPWord: (tokens, families)."""
    from engines.data.midi_io import segment_to_score

    tokenizer = get_tokenizer(kind)
    seq = tokenizer.encode(segment_to_score(segment))
    seq = seq[0] if isinstance(seq, list) else seq
    return np.asarray(seq.ids, dtype=np.int32)


def decode_tokens(ids, kind: str = "remi", tempo_qpm: float | None = None) -> Segment:
    """Token ids -> Segment on the 12-ticks grid (time signature and tempo from the tokens)."""
    tokenizer = get_tokenizer(kind)
    ids = np.asarray(ids).tolist()
    score = tokenizer.decode([ids])
    scale = TICKS_PER_QUARTER / score.ticks_per_quarter
    rows = [(int(round(n.time * scale)), max(1, int(round(n.duration * scale))), n.pitch, n.velocity, 0)
            for track in score.tracks for n in track.notes]
    notes = clean_notes(np.array(rows, dtype=NOTE_DTYPE)) if rows else np.zeros(0, NOTE_DTYPE)
    ts = score.time_signatures[0] if len(score.time_signatures) else None
    qpm = tempo_qpm or (float(score.tempos[0].qpm) if len(score.tempos) else 100.0)
    segment = Segment(notes=notes, ts_num=ts.numerator if ts else 4, ts_den=ts.denominator if ts else 4,
                      tempo_qpm=qpm)
    if len(notes):
        # Durations beyond 8 beats are held at quarter-beat precision, so a note held to the segment end
        # may round up past the last bar line by less than a quarter beat: such an overshoot is cut.
        tolerance = TICKS_PER_QUARTER * 4 // segment.ts_den // 4
        last_end = int((notes["start"].astype(np.int64) + notes["duration"]).max())
        segment.num_bars = max(1, -(-(last_end - tolerance) // segment.bar_length))
        end = segment.num_bars * segment.bar_length
        notes["duration"] = np.minimum(notes["duration"], end - notes["start"])
    return segment


def vocabulary_size(kind: str = "remi") -> int:
    return len(get_tokenizer(kind))
