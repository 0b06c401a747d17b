"""Analysis of a user's MIDI file, segment by segment: what `analyze` prints and the studio's upload shows."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from engines.config import Config
from engines.data.midi_io import read_midi_score, score_to_piece
from engines.data.segmenting import segment_piece
from engines.errors import StudioError
from engines.music.analyzer import ChromaticAnalyzer
from engines.music.notes import Piece, Segment


def midi_file_segments(path: str | Path, cfg: Config):
    """Validated MIDI file -> (symusic Score, its segments). Every full bar lands in some segment."""
    score, segments, _ = midi_file_excerpt(path, cfg)
    return score, segments


ALL_TRACKS, MELODY = "all", "melody"   # what an upload is analysed as, besides one track


def track_choices(score) -> list[tuple[str, str]]:
    """(label, value) of what a file can be analysed as: every pitched track merged (the default), and when it
    has several, the melody (the top line of all of them) and each pitched track on its own (value: its index
    in the file)."""
    tracks = [(i, t) for i, t in enumerate(score.tracks) if not t.is_drum and t.note_num()]
    choices = [(f"all {len(tracks)} tracks merged" if len(tracks) > 1 else "the whole file", ALL_TRACKS)]
    if len(tracks) > 1:
        choices.append(("the melody (the top line of every track)", MELODY))
        choices += [(f"track {i + 1}: {t.name.strip() or 'unnamed'} ({t.note_num():,} notes)", str(i))
                    for i, t in tracks]
    return choices


def top_line(notes: np.ndarray) -> np.ndarray:
    """The highest note at each onset (the "skyline": the line a listener follows in most textures), each
    ending where the next one starts."""
    order = np.lexsort((-notes["pitch"].astype(int), notes["start"]))
    ordered = notes[order]
    first = np.ones(len(ordered), dtype=bool)
    first[1:] = ordered["start"][1:] != ordered["start"][:-1]
    line = ordered[first].copy()
    if len(line) > 1:
        line["duration"][:-1] = np.minimum(line["duration"][:-1], np.diff(line["start"]))
    return line


def select_track(piece: Piece, choice: str | None) -> Piece:
    """The piece as `choice` (track_choices' values) asks: all tracks, the melody, or one track."""
    if choice in (None, "", ALL_TRACKS):
        return piece
    if choice == MELODY:
        return replace(piece, notes=top_line(piece.notes))
    try:
        index = int(choice)
    except (TypeError, ValueError):
        raise StudioError(f"unknown track '{choice}'; choose {ALL_TRACKS}, {MELODY} or a track number") from None
    notes = piece.notes[piece.notes["track"] == index]
    if not len(notes):
        raise StudioError(f"track {index + 1} of '{piece.piece_id}' holds no pitched notes")
    return replace(piece, notes=notes)


def midi_file_excerpt(path: str | Path, cfg: Config, track: str | None = ALL_TRACKS):
    """Validated MIDI file -> (symusic Score, its segments, None), or for a file longer than data.max_seconds
    (its first max_seconds, their segments, the whole file's length in seconds). `track`: what is analysed
    (track_choices)."""
    score, full_seconds = read_midi_score(path, cfg.data.max_file_mb, cfg.data.max_notes, cfg.data.max_seconds)
    piece = select_track(score_to_piece(score, piece_id=Path(path).stem, collection="upload"), track)
    segments = segment_piece(piece, cfg.data.segment_bars, cfg.data.segment_bars, min_notes=1, allow_partial=True)
    if not segments:
        raise StudioError(f"'{Path(path).name}' has no whole bar of notes in a usable time signature "
                          "(x/2, x/4 or x/8, up to 12 beats)")
    return score, segments, full_seconds


def excerpt_note(max_seconds: float, full_seconds: float | None) -> str:
    """What a user is told when only the start of a long file was analysed ("" when all of it was)."""
    if full_seconds is None:
        return ""
    return (f"The file lasts {full_seconds / 60:.1f} minutes: the first {max_seconds / 60:g} were analysed "
            f"(data.max_seconds).")


def analyze_segments(segments: list[Segment], cfg: Config, with_features: bool = False) -> list[dict]:
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    out = []
    for seg in segments:
        bars = (seg.bar_start + 1, seg.bar_start + seg.num_bars)  # 1-based, inclusive, as musicians count
        out.append(analyzer.analyze(seg).to_dict(bars=bars, with_features=with_features))
    return out


def analyze_midi_file(path: str | Path, cfg: Config, with_features: bool = False, on_excerpt=None) -> list[dict]:
    """One entry per segment: {"bars": [start, end], "mode", "scores", "axes", "rebracketing", ...}.
    `on_excerpt(note)` hears when only the start of a long file was analysed."""
    _, segments, full_seconds = midi_file_excerpt(path, cfg)
    if full_seconds is not None and on_excerpt is not None:
        on_excerpt(excerpt_note(cfg.data.max_seconds, full_seconds))
    return analyze_segments(segments, cfg, with_features)
