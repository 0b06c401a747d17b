"""engines/data/segmenting.py: pieces -> segments of whole bars of one metre."""
import numpy as np
import pytest

from engines.data.segmenting import cut_notes, normalize_time_signature, segment_piece
from engines.music.notes import BAR_DTYPE, Piece, bar_ticks, make_notes
from tests.conftest import note_tuples


def bars_of(*runs, start=0):
    """runs of (count, num, den[, length]) -> consecutive BAR_DTYPE rows."""
    rows, position = [], start
    for count, num, den, *length in runs:
        size = length[0] if length else bar_ticks(num, den)
        for _ in range(count):
            rows.append((position, size, num, den))
            position += size
    return np.array(rows, BAR_DTYPE)


def piece_of(bars, rows, piece_id="test/piece"):
    return Piece(piece_id=piece_id, collection="test", notes=make_notes(rows), bars=bars, tempo_qpm=90.0)


def quarters(start, end, pitch=60):
    return [(t, 12, pitch + (t // 12) % 7, 80) for t in range(start, end, 12)]


@pytest.fixture
def pickup_piece():
    """A one-beat pickup, then 9 bars of 4/4; a long note crosses the first segment's end."""
    bars = np.concatenate([bars_of((1, 4, 4, 12)), bars_of((9, 4, 4), start=12)])
    rows = quarters(0, 12 + 9 * 48) + [(12 + 3 * 48 + 24, 48, 40, 70)]  # starts in bar 4, rings into bar 5
    return piece_of(bars, rows)


def test_pickup_then_nine_bars(pickup_piece):
    segments = segment_piece(pickup_piece, segment_bars=4, hop_bars=4, min_notes=4)
    assert [s.bar_start for s in segments] == [1, 5]
    assert all(s.num_bars == 4 and (s.ts_num, s.ts_den) == (4, 4) for s in segments)
    first, second = segments
    expected = [(t - 12, 12, p) for t, _, p, _ in quarters(0, 12 + 9 * 48) if 12 <= t < 12 + 192]
    expected.append((3 * 48 + 24, 24, 40))  # shifted to the segment start, cut at its end
    assert note_tuples(first.notes) == sorted(expected)
    assert note_tuples(second.notes) == sorted((t - 204, 12, p) for t, _, p, _ in quarters(204, 396))
    assert first.piece_id == "test/piece" and first.collection == "test" and first.tempo_qpm == 90.0
    assert int(first.notes["start"].min()) == 0 and all(
        int(n["start"]) + int(n["duration"]) <= s.length for s in segments for n in s.notes)


def test_source_notes_are_not_modified(pickup_piece):
    before = pickup_piece.notes.copy()
    segment_piece(pickup_piece)
    assert np.array_equal(pickup_piece.notes, before)


def test_time_signature_change_splits_runs():
    bars = np.concatenate([bars_of((6, 4, 4)), bars_of((5, 3, 4), start=6 * 48)])
    piece = piece_of(bars, quarters(0, 6 * 48 + 5 * 36))
    segments = segment_piece(piece, 4, 4, 4)
    assert [(s.bar_start, s.ts_num, s.ts_den) for s in segments] == [(0, 4, 4), (6, 3, 4)]
    assert note_tuples(segments[1].notes)[0][0] == 0 and segments[1].length == 4 * 36
    assert max(t + d for t, d, _ in note_tuples(segments[1].notes)) <= 4 * 36


def test_irregular_bar_ends_a_run():
    bars = np.concatenate([bars_of((3, 4, 4)), bars_of((1, 4, 4, 24), start=144), bars_of((4, 4, 4), start=168)])
    piece = piece_of(bars, quarters(0, 168 + 192))
    assert [s.bar_start for s in segment_piece(piece, 4, 4, 1)] == [4]


def test_gap_between_bars_ends_a_run():
    bars = np.concatenate([bars_of((2, 4, 4)), bars_of((4, 4, 4), start=2 * 48 + 12)])
    piece = piece_of(bars, quarters(0, 400))
    assert [s.bar_start for s in segment_piece(piece, 4, 4, 1)] == [2]


def test_hop_smaller_than_segment_overlaps():
    piece = piece_of(bars_of((8, 4, 4)), quarters(0, 8 * 48))
    segments = segment_piece(piece, segment_bars=4, hop_bars=2, min_notes=1)
    assert [s.bar_start for s in segments] == [0, 2, 4]


def test_allow_partial_gives_shorter_last_segment(pickup_piece):
    segments = segment_piece(pickup_piece, 4, 4, min_notes=1, allow_partial=True)
    assert [(s.bar_start, s.num_bars) for s in segments] == [(1, 4), (5, 4), (9, 1)]
    assert segments[-1].length == 48
    assert note_tuples(segments[-1].notes) == [(t - 396, 12, p) for t, _, p, _ in quarters(396, 444)]


def test_min_notes_filters():
    rows = quarters(0, 192) + [(192, 192, 60, 80)] + quarters(384, 576)  # bars 4-7 hold one note
    piece = piece_of(bars_of((12, 4, 4)), rows)
    assert [s.bar_start for s in segment_piece(piece, 4, 4, min_notes=4)] == [0, 8]
    assert [s.bar_start for s in segment_piece(piece, 4, 4, min_notes=1)] == [0, 4, 8]


def test_unusable_metre_gives_no_segment_and_respelled_metre_does():
    bars = np.concatenate([bars_of((4, 7, 16)), bars_of((4, 2, 1), start=4 * bar_ticks(7, 16))])
    rows = [(t, 3, 60, 80) for t in range(0, 4 * bar_ticks(7, 16), 3)] + quarters(84, 84 + 4 * 96)
    segments = segment_piece(piece_of(bars, rows), 4, 4, 4)
    assert [(s.bar_start, s.ts_num, s.ts_den) for s in segments] == [(4, 4, 2)]
    assert segments[0].length == 4 * 96  # 2/1 and 4/2 bars are equally long


@pytest.mark.parametrize("ts, expected", [
    ((2, 1), (4, 2)), ((3, 1), (6, 2)), ((6, 16), (3, 8)), ((12, 16), (6, 8)), ((7, 16), None), ((4, 4), (4, 4)),
    ((12, 8), (12, 8)), ((13, 4), None), ((3, 32), None), ((7, 1), None), ((0, 4), None),
])
def test_normalize_time_signature(ts, expected):
    assert normalize_time_signature(*ts) == expected
    if expected is not None:
        assert bar_ticks(*expected) == bar_ticks(*ts)  # a respelling, never a change of bar length


def test_cut_notes():
    notes = make_notes([(0, 60, 60, 80), (48, 100, 62, 80), (96, 12, 64, 80), (140, 12, 65, 80)])
    assert note_tuples(cut_notes(notes, 48, 144)) == [(0, 96, 62), (48, 12, 64), (92, 4, 65)]
