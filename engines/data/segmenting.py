"""Piece -> segments of `segment_bars` whole bars of one time signature.

Pickup bars and bars of irregular length end a run of bars; windows never straddle a change of metre.
Notes belong to the segment they start in and are cut at its end.
"""
from __future__ import annotations

import numpy as np

from engines.music.notes import Piece, Segment, bar_ticks, effective_tempo
from engines.tokenizers.midi import TIME_SIGNATURES

# Bump when the way pieces are cut changes (the segment cache is rebuilt).
SEGMENTING_VERSION = 1


def normalize_time_signature(num: int, den: int) -> tuple[int, int] | None:
    """Spell metres so the tokenizer's beat has a fine enough grid: 2/1 -> 4/2, 6/16 -> 3/8; None if unusable."""
    if den == 1:
        num, den = num * 2, 2
    elif den == 16:
        if num % 2:
            return None
        num, den = num // 2, 8
    if num not in TIME_SIGNATURES.get(den, ()):  # the tokenizer's metres are the one list of what we accept
        return None
    return num, den


def cut_notes(notes: np.ndarray, start: int, end: int) -> np.ndarray:
    """Notes starting in [start, end), shifted to start at 0 and cut at `end`."""
    inside = notes[(notes["start"] >= start) & (notes["start"] < end)].copy()
    inside["start"] -= start
    inside["duration"] = np.minimum(inside["duration"], end - start - inside["start"])
    return inside


def segment_piece(piece: Piece, segment_bars: int = 4, hop_bars: int = 4, min_notes: int = 4,
                  allow_partial: bool = False) -> list[Segment]:
    """Cut a piece into segments. With allow_partial (user files), every full bar lands in some segment and
    the last window of a run may be shorter than segment_bars; pickup bars are never analysed."""
    bars = piece.bars
    segments = []
    run: list[int] = []

    def flush(run: list[int]) -> None:
        if not run:
            return
        first = 0
        while first < len(run):
            window = run[first:first + segment_bars]
            if len(window) < segment_bars and not (allow_partial and window):
                break
            b0 = bars[window[0]]
            ts = normalize_time_signature(int(b0["ts_num"]), int(b0["ts_den"]))
            start = int(b0["start"])
            end = start + len(window) * int(b0["length"])
            notes = cut_notes(piece.notes, start, end)
            if ts is not None and len(notes) >= min_notes:
                tempo = effective_tempo(piece.tempos, start, end, piece.tempo_qpm)
                segments.append(Segment(notes=notes, ts_num=ts[0], ts_den=ts[1], num_bars=len(window),
                                        tempo_qpm=tempo, piece_id=piece.piece_id,
                                        collection=piece.collection, bar_start=window[0],
                                        meta={"offset": start}))
            first += hop_bars if not allow_partial else len(window)

    for i, bar in enumerate(bars):
        nominal = bar_ticks(int(bar["ts_num"]), int(bar["ts_den"]))
        full = int(bar["length"]) == nominal
        same_metre = run and (bars[run[-1]]["ts_num"], bars[run[-1]]["ts_den"]) == (bar["ts_num"], bar["ts_den"])
        contiguous = run and int(bars[run[-1]]["start"]) + int(bars[run[-1]]["length"]) == int(bar["start"])
        if full and run and same_metre and contiguous:
            run.append(i)
            continue
        flush(run)
        run = [i] if full else []
    flush(run)
    return segments
