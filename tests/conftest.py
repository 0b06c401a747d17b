"""Shared helpers for the engine tests: hand-made segments, small MIDI files, one prepared MIDI cache.

Times in `rows` are ticks on the project grid (12 to the quarter note); MIDI files are written at 480.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines.music.notes import Segment, make_notes

MIDI_TPQ = 480
SCALE = MIDI_TPQ // 12  # MIDI ticks per project tick


def segment(rows, ts=(4, 4), bars=4, tempo=100.0, **kw) -> Segment:
    """Rows of (start, duration, pitch, velocity) in project ticks -> a Segment."""
    return Segment(notes=make_notes(rows), ts_num=ts[0], ts_den=ts[1], num_bars=bars, tempo_qpm=tempo, **kw)


def note_tuples(notes: np.ndarray, velocity: bool = False) -> list[tuple]:
    """NOTE_DTYPE array -> sorted [(start, duration, pitch[, velocity])] of plain ints, for exact comparison."""
    fields = ("start", "duration", "pitch") + (("velocity",) if velocity else ())
    return sorted(tuple(int(n[f]) for f in fields) for n in notes)


def write_midi(path, rows, signatures=((0, 4, 4),), tempo: float | None = 120.0, drum_rows=(),
               tpq: int = MIDI_TPQ) -> Path:
    """Write a one-track MIDI file with symusic. `rows` and signature times are in project ticks (12/quarter),
    scaled to `tpq`; `drum_rows` go on a drum track."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    scale = tpq // 12
    score = Score(tpq)
    for time, num, den in signatures:
        score.time_signatures.append(TimeSignature(time * scale, num, den))
    if tempo is not None:
        score.tempos.append(Tempo(0, float(tempo)))
    track = Track(name="piano", program=0)
    for start, duration, pitch, velocity in rows:
        track.notes.append(Note(start * scale, duration * scale, pitch, velocity))
    score.tracks.append(track)
    if drum_rows:
        drums = Track(name="drums", program=0, is_drum=True)
        for start, duration, pitch, velocity in drum_rows:
            drums.notes.append(Note(start * scale, duration * scale, pitch, velocity))
        score.tracks.append(drums)
    path = Path(path)
    score.dump_midi(str(path))
    return path


def scale_melody(bars: int, bar_length: int = 48, step: int = 12, low: int = 60, velocity: int = 80) -> list:
    """A stepwise C major line filling `bars` bars with notes `step` ticks long."""
    degrees = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2]
    count = bars * bar_length // step
    return [(i * step, step, low + degrees[i % len(degrees)], velocity) for i in range(count)]


# The small MIDI folder `prepare` is tested on: four pieces written four different ways, plus one garbage file.
def corpus_folder(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    # 8 bars of 4/4 quarter notes.
    files["quarters"] = write_midi(root / "quarters.mid", scale_melody(8))
    # A pickup beat, then 10 bars of 3/4 in eighths with a chord per bar.
    rows = [(0, 12, 67, 70)]
    for bar in range(10):
        start = 12 + bar * 36
        rows += [(start + i * 6, 6, 72 + (i % 5), 90) for i in range(6)]
        rows += [(start, 36, p, 60) for p in (48, 52, 55)]
    files["waltz"] = write_midi(root / "waltz.mid", rows, signatures=((0, 3, 4),), tempo=150)
    # 12 bars of 6/8 at 96 ticks per quarter, with a drum track that must be ignored.
    rows = [(i * 6, 6, 62 + (i * 5) % 12, 75) for i in range(12 * 6)]
    drums = [(i * 18, 3, 36, 100) for i in range(24)]
    (root / "sub").mkdir(exist_ok=True)
    files["jig"] = write_midi(root / "sub" / "jig.mid", rows, signatures=((0, 6, 8),), tempo=110, drum_rows=drums,
                              tpq=96)
    # 4 bars of 4/4 then 8 bars of 2/2 with no tempo event, in half-note chords.
    rows = [(i * 12, 12, 64 + i % 5, 85) for i in range(16)]
    for i in range(16):
        rows += [(192 + i * 24, 24, p, 70) for p in (57 + i % 3, 60 + i % 3, 64 + i % 3)]
    files["hymn"] = write_midi(root / "hymn.mid", rows, signatures=((0, 4, 4), (192, 2, 2)), tempo=None)
    garbage = root / "garbage.mid"
    garbage.write_bytes(bytes(range(256)) * 4)
    files["garbage"] = garbage
    return files


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """One `prepare` run over corpus_folder: (cfg, files, report, cache directory, manifest path)."""
    from engines.config import load_config
    from engines.data.prepare import prepare

    base = tmp_path_factory.mktemp("prepared")
    files = corpus_folder(base / "songs")
    manifest = base / "labels.csv"
    manifest.write_text("path,mode,rebracketing,valence\nwaltz.mid,INDIGO,0.9,-0.5\n")
    cfg = load_config(overrides=[f"data.cache_dir={base / 'cache'}"])
    out = base / "cache" / "songs"
    report = prepare(cfg, midi_dir=str(base / "songs"), manifest=str(manifest), out=str(out), workers=1)
    return cfg, files, report, out, manifest


@pytest.fixture(scope="module")
def batch(tiny_cfg):
    """The first 8 training rolls as the diffusion networks see them; `tiny_cfg` is the test module's own."""
    from tests.helpers import first_rolls

    return first_rolls(tiny_cfg)


# ---- the listening store's two back ends ------------------------------------------------------------------
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the whole run (tests/postgres.py); each test gets its own database."""
    from tests.postgres import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh listening database on each back end: a SQLite file, then a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "private" / "sessions.sqlite")
    return request.getfixturevalue("postgres_server").new_database()
