"""Analysis of a user's MIDI file, segment by segment: what `analyze` prints and the studio's upload shows."""
from __future__ import annotations

from pathlib import Path

from engines.config import Config
from engines.data.midi_io import load_midi_score, score_to_piece
from engines.data.segmenting import segment_piece
from engines.errors import StudioError
from engines.music.analyzer import ChromaticAnalyzer
from engines.music.notes import Segment


def midi_file_segments(path: str | Path, cfg: Config):
    """Validated MIDI file -> (symusic Score, its segments). Every full bar lands in some segment."""
    score = load_midi_score(path, cfg.data.max_file_mb, cfg.data.max_notes, cfg.data.max_seconds)
    piece = score_to_piece(score, piece_id=Path(path).stem, collection="upload")
    segments = segment_piece(piece, cfg.data.segment_bars, cfg.data.segment_bars, min_notes=1, allow_partial=True)
    if not segments:
        raise StudioError(f"'{Path(path).name}' has no whole bar of notes in a usable time signature "
                          "(x/2, x/4 or x/8, up to 12 beats)")
    return score, segments


def analyze_segments(segments: list[Segment], cfg: Config, with_features: bool = False) -> list[dict]:
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    out = []
    for seg in segments:
        bars = (seg.bar_start + 1, seg.bar_start + seg.num_bars)  # 1-based, inclusive, as musicians count
        out.append(analyzer.analyze(seg).to_dict(bars=bars, with_features=with_features))
    return out


def analyze_midi_file(path: str | Path, cfg: Config, with_features: bool = False) -> list[dict]:
    """One entry per segment: {"bars": [start, end], "mode", "scores", "axes", "rebracketing", ...}."""
    _, segments = midi_file_segments(path, cfg)
    return analyze_segments(segments, cfg, with_features)
