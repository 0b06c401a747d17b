"""MIDI files <-> the project's notes, through symusic (the C++ MIDI library under miditok).

Every MIDI a user gives us passes `load_midi_score`, which turns each kind of bad file into a StudioError
naming the file and what is wrong with it: not MIDI, truncated, empty, no notes, absurd tempo, too big.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engines.errors import StudioError
from engines.music.notes import (BAR_DTYPE, NOTE_DTYPE, TEMPO_DTYPE, TICKS_PER_QUARTER, Piece, Segment, bar_ticks,
                                 clean_notes, fold_pitch)

MIN_TEMPO_QPM, MAX_TEMPO_QPM = 10.0, 1000.0
MIDI_TICKS_PER_QUARTER = 480  # what we write: a common resolution every sequencer reads


def load_midi_score(path: str | Path, max_file_mb: float = 20.0, max_notes: int = 200_000,
                    max_seconds: float = 900.0):
    """Read and validate a MIDI file -> symusic Score (ticks), its first `max_seconds` only (read_midi_score).
    Raises StudioError with the reason."""
    return read_midi_score(path, max_file_mb, max_notes, max_seconds)[0]


def tick_at_seconds(score, seconds: float) -> int:
    """The tick of a score (ticks) that sounds `seconds` after its start, through its tempo map (120 quarter
    notes a minute before the first tempo event, as MIDI has it)."""
    tpq = score.ticks_per_quarter
    tempos = sorted((int(t.time), float(t.qpm)) for t in score.tempos)
    if not tempos or tempos[0][0] > 0:
        tempos.insert(0, (0, 120.0))
    elapsed = 0.0
    for (tick, qpm), (next_tick, _) in zip(tempos, tempos[1:] + [(None, None)]):
        span = float("inf") if next_tick is None else (next_tick - tick) / tpq * 60.0 / qpm
        if elapsed + span >= seconds:
            return int(tick + (seconds - elapsed) * qpm / 60.0 * tpq)
        elapsed += span
    return int(tempos[-1][0])


def read_midi_score(path: str | Path, max_file_mb: float = 20.0, max_notes: int = 200_000,
                    max_seconds: float = 900.0):
    """Read and validate a MIDI file -> (symusic Score in ticks, None), or, for a file longer than
    `max_seconds` (counting every event), (its first `max_seconds`, the whole file's length in seconds): a long
    piece is analysed in part, not refused. Raises StudioError with the reason for a file that cannot be used
    (size, header, notes, tempo)."""
    from symusic import Score

    path = Path(path)
    name = path.name
    if path.is_dir():
        raise StudioError(f"'{name}' is a folder, not a MIDI file")
    if not path.is_file():
        raise StudioError(f"'{name}' does not exist")
    size = path.stat().st_size
    if size > max_file_mb * 1024 * 1024:
        raise StudioError(f"'{name}' is {size / 1048576:.1f} MB; the limit is {max_file_mb:g} MB")
    if size == 0:
        raise StudioError(f"'{name}' is empty (0 bytes)")
    with open(path, "rb") as fh:
        header = fh.read(4)
    if header != b"MThd":
        raise StudioError(f"'{name}' is not a MIDI file (it does not start with the MThd header)")
    try:
        score = Score(str(path))
    except Exception as exc:
        raise StudioError(f"'{name}' could not be read as MIDI; it may be truncated or corrupt ({exc})") from None
    if score.ticks_per_quarter <= 0:
        raise StudioError(f"'{name}' declares {score.ticks_per_quarter} ticks per quarter note; "
                          "this MIDI header (SMPTE or zero division) is not supported")
    total = sum(track.note_num() for track in score.tracks)
    if total == 0:
        raise StudioError(f"'{name}' holds no notes")
    if total > max_notes:
        raise StudioError(f"'{name}' holds {total:,} notes; the limit is {max_notes:,}")
    for tempo in score.tempos:
        if not MIN_TEMPO_QPM <= tempo.qpm <= MAX_TEMPO_QPM:
            raise StudioError(f"'{name}' sets an absurd tempo of {tempo.qpm:g} quarter notes per minute; "
                              f"tempos must lie in {MIN_TEMPO_QPM:g}..{MAX_TEMPO_QPM:g}")
    # Every event counts (a stray controller far after the last note would otherwise mean minutes of
    # silence to render), so the cut is on the whole file's length in seconds.
    seconds = score.to("second").end()
    if seconds > max_seconds:
        cut = score.clip(0, tick_at_seconds(score, max_seconds), clip_end=True)
        if cut.note_num() == 0:
            raise StudioError(f"'{name}' holds no notes in its first {max_seconds / 60:g} minutes, the part "
                              f"the studio reads of a file that lasts {seconds / 60:.1f}")
        return cut, seconds
    return score, None


def score_to_piece(score, piece_id: str, collection: str = "upload") -> Piece:
    """symusic Score (ticks) -> Piece on the project's 12-ticks-per-quarter grid; drum tracks are left out."""
    scale = TICKS_PER_QUARTER / score.ticks_per_quarter
    rows = []
    for track_index, track in enumerate(score.tracks):
        if track.is_drum:
            continue
        for note in track.notes:
            start = int(round(note.time * scale))
            duration = max(1, int(round(note.duration * scale)))
            pitch = fold_pitch(note.pitch)
            rows.append((start, duration, pitch, max(1, min(127, note.velocity)), min(track_index, 255)))
    if not rows:
        raise StudioError(f"'{piece_id}' holds only drum notes; the analyzer needs pitched notes")
    notes = clean_notes(np.array(rows, dtype=NOTE_DTYPE))
    end = int((notes["start"].astype(np.int64) + notes["duration"]).max())
    for marker in score.markers:   # a segment written by the studio marks where its last bar ends
        if marker.text == END_MARKER:
            end = max(end, int(round(marker.time * scale)))
    signatures = [(int(round(ts.time * scale)), ts.numerator, ts.denominator) for ts in score.time_signatures
                  if ts.numerator > 0 and ts.denominator in (1, 2, 4, 8, 16)]
    if not signatures or signatures[0][0] > 0:
        signatures.insert(0, (0, 4, 4))
    bars, position, index = [], 0, 0
    while position < end:
        while index + 1 < len(signatures) and signatures[index + 1][0] <= position:
            index += 1
        _, num, den = signatures[index]
        length = bar_ticks(num, den)
        bars.append((position, length, num, den))
        position += length
    tempos = np.array([(int(round(t.time * scale)), t.qpm) for t in score.tempos], TEMPO_DTYPE)
    qpm = float(tempos["qpm"][0]) if len(tempos) else 120.0
    has_map = len(tempos) > 1 or (len(tempos) == 1 and tempos["start"][0] > 0)
    return Piece(piece_id=piece_id, collection=collection, notes=notes, bars=np.array(bars, BAR_DTYPE),
                 tempo_qpm=qpm, title=piece_id, tempos=tempos if has_map else None)


def read_midi_piece(path: str | Path, collection: str = "midi", piece_id: str = "", max_file_mb: float = 20.0,
                    max_notes: int = 200_000) -> Piece:
    """A MIDI file -> Piece; the id defaults to collection/file-stem (prepare passes the path below its root)."""
    score = load_midi_score(path, max_file_mb, max_notes)
    piece_id = piece_id or f"{collection}/{os.path.splitext(os.path.basename(path))[0]}"
    return score_to_piece(score, piece_id=piece_id, collection=collection)


END_MARKER = "segment end"   # a MIDI marker at the end of the last bar of segments the studio writes


def segment_to_score(segment: Segment, program: int | None = None):
    """Segment -> symusic Score at 480 ticks per quarter: one track, its tempo and time signature."""
    return segments_to_score([segment], program)


def key_signature(tonic: int, major: bool) -> tuple[int, int]:
    """A key (tonic pitch class 0-11, major or not) -> MIDI's (sharps, or flats as negative, -5..6; 0 major or
    1 minor), spelled with the fewer accidentals (F# major rather than Gb)."""
    sharps = ((tonic if major else tonic + 3) * 7) % 12
    return (sharps - 12 if sharps > 6 else sharps), (0 if major else 1)


def segments_to_score(segments: list[Segment], program: int | None = None, markers: list[str] | None = None,
                      keys: list[tuple[int, bool] | None] | None = None):
    """Segments played one after another -> one Score; each keeps its own time signature and tempo. The
    track's General MIDI program (0-based) is `program`, else the first segment's meta["program"], else 0.
    `markers`: a MIDI marker at each segment's start (a piece's section names); `keys`: each segment's key
    (tonic pitch class, major; None: unsaid), written as a key signature where it changes."""
    if program is None:
        program = int(segments[0].meta.get("program", 0)) if segments else 0
    from symusic import KeySignature, Note, Score, Tempo, TextMeta, TimeSignature, Track

    scale = MIDI_TICKS_PER_QUARTER // TICKS_PER_QUARTER
    score = Score(MIDI_TICKS_PER_QUARTER)
    track = Track(name=segments[0].piece_id or "segment", program=program)
    offset, key = 0, None
    for index, segment in enumerate(segments):
        if keys is not None and keys[index] is not None and keys[index] != key:
            key = keys[index]
            score.key_signatures.append(KeySignature(offset * scale, *key_signature(*key)))
        score.time_signatures.append(TimeSignature(offset * scale, segment.ts_num, segment.ts_den))
        score.tempos.append(Tempo(offset * scale, float(segment.tempo_qpm)))
        if markers is not None:
            score.markers.append(TextMeta(offset * scale, markers[index]))
        for n in segment.notes:
            track.notes.append(Note((offset + int(n["start"])) * scale, int(n["duration"]) * scale, int(n["pitch"]),
                                    int(n["velocity"])))
        offset += segment.length
    score.tracks.append(track)
    # the end of the last bar, so that a segment whose last bars are silent reads back with all its bars
    score.markers.append(TextMeta(offset * scale, END_MARKER))
    return score


def write_segment_midi(segment: Segment, path: str | Path) -> Path:
    path = Path(path)
    segment_to_score(segment).dump_midi(str(path))
    return path
