"""The music corpus bundled in the music21 wheel -> Pieces.

We read notes straight from music21's parsed streams rather than through music21's MIDI writer, which fails
on some Essen time signatures and loses pickup bars. Repeats are expanded where music21 can, and otherwise
played once (stripped).
"""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from engines.errors import StudioError
from engines.music.notes import BAR_DTYPE, NOTE_DTYPE, TICKS_PER_QUARTER, Piece, clean_notes, fold_pitch

# Extensions music21 can read into metered, pitched scores (romantext .rntxt holds chord symbols only).
SCORE_EXTENSIONS = (".krn", ".abc", ".mxl", ".xml", ".musicxml")
DEFAULT_VELOCITY = 80
UNMARKED_TEMPO_QPM = 100.0
UNMARKED_TEMPO_HALF_BEAT_QPM = 160.0   # x/2 and x/1 metres (Palestrina, trecento) move in half notes


def corpus_root() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def corpus_sources(collections: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """(collection, path) of every score file in the chosen collections, sorted for determinism."""
    root = corpus_root()
    available = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    missing = [c for c in collections if c not in available]
    if missing:
        raise StudioError(f"unknown corpus collection '{missing[0]}'; available: {', '.join(available)}")
    sources = []
    for collection in collections:
        for dirpath, _, files in os.walk(root / collection):
            for name in files:
                if name.lower().endswith(SCORE_EXTENSIONS):
                    sources.append((collection, os.path.join(dirpath, name)))
    return sorted(sources, key=lambda s: (s[0], s[1]))


def parse_source(collection: str, path: str) -> list[Piece]:
    """Parse one corpus file (an Opus file holds many tunes) into Pieces. Raises on unparsable files."""
    from music21 import converter, stream

    parsed = converter.parse(path, forceSource=True)
    rel = os.path.relpath(path, corpus_root() / collection)
    base_id = f"{collection}/{os.path.splitext(rel)[0]}"
    scores = list(parsed.scores) if isinstance(parsed, stream.Opus) else [parsed]
    pieces = []
    for index, score in enumerate(scores):
        piece_id = base_id if len(scores) == 1 else f"{base_id}#{index + 1}"
        piece = score_to_piece(score, piece_id, collection)
        if piece is not None:
            pieces.append(piece)
    return pieces


def _ticks(quarter_length) -> int:
    return int(round(float(Fraction(quarter_length)) * TICKS_PER_QUARTER))


def score_to_piece(score, piece_id: str, collection: str) -> Piece | None:
    """One music21 Score -> Piece, or None when it has no measures or no pitched notes."""
    from music21 import tempo

    try:
        score = score.expandRepeats()
    except Exception:  # music21 raises many types on irregular repeat marks; then repeats play once
        pass
    score = score.stripTies(inPlace=False)
    parts = list(score.parts) or [score]
    bars = _bars(parts[0])
    if len(bars) == 0:
        return None
    rows = []
    for track, part in enumerate(parts[:16]):
        for element in part.flatten().notes:
            duration = _ticks(element.duration.quarterLength)
            if duration <= 0:          # grace notes
                continue
            start = _ticks(element.offset)
            velocity = element.volume.velocity if element.volume.velocity else DEFAULT_VELOCITY
            for pitch in getattr(element, "pitches", ()):
                rows.append((start, duration, fold_pitch(pitch.midi), int(velocity), track))
    if not rows:
        return None
    notes = clean_notes(np.array(rows, dtype=NOTE_DTYPE))
    marks = list(score.flatten().getElementsByClass(tempo.MetronomeMark))
    half_beat = int(bars["ts_den"][0]) <= 2
    qpm = UNMARKED_TEMPO_HALF_BEAT_QPM if half_beat else UNMARKED_TEMPO_QPM
    if marks:
        try:
            qpm = float(marks[0].getQuarterBPM()) or qpm
        except Exception:  # a mark with text only ("Allegro") has no number
            pass
    title = (score.metadata.title if score.metadata and score.metadata.title else "") or piece_id
    return Piece(piece_id=piece_id, collection=collection, notes=notes, bars=bars,
                 tempo_qpm=float(np.clip(qpm, 30, 300)), title=str(title))


def _bars(part) -> np.ndarray:
    """Bars of the first part: start, actual length (pickups are short), and the time signature in force."""
    rows = []
    ts = None
    for measure in part.getElementsByClass("Measure"):
        if measure.timeSignature is not None:
            ts = measure.timeSignature
        if ts is None:
            found = measure.getContextByClass("TimeSignature")
            ts = found if found is not None else None
        num, den = (ts.numerator, ts.denominator) if ts is not None else (4, 4)
        length = _ticks(measure.duration.quarterLength)
        if length <= 0:
            continue
        rows.append((_ticks(measure.offset), length, min(num, 255), min(den, 255)))
    return np.array(rows, dtype=BAR_DTYPE)
