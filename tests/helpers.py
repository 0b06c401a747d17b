"""Small builders shared by tests: MIDI files and segments with known content."""
from __future__ import annotations

from pathlib import Path


def write_test_midi(path: Path, bars: int = 8, tempo: float = 110.0) -> Path:
    """A two-voice 4/4 piece: a C-major melody in eighths over a half-note bass, `bars` bars long."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, tempo))
    melody, bass = Track(name="melody", program=0), Track(name="bass", program=32)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    for bar in range(bars):
        for step in range(8):
            pitch = scale[(bar + step) % 8] + (12 if bar % 2 else 0)
            melody.notes.append(Note(bar * 1920 + step * 240, 220, pitch, 90))
        for half in range(2):
            bass.notes.append(Note(bar * 1920 + half * 960, 900, 36 + (bar * 5) % 12, 70))
    score.tracks.extend([melody, bass])
    score.dump_midi(str(path))
    return Path(path)
