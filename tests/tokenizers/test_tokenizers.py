"""engines/tokenizers/midi.py: REMI and CPWord round trips, on hand-made segments and real corpus segments."""
import numpy as np
import pytest

from engines.errors import StudioError
from engines.music.notes import bar_ticks
from engines.tokenizers.midi import KINDS, decode_tokens, encode_segment, get_tokenizer, vocabulary_size
from tests.conftest import note_tuples, segment

METRES = [(4, 4), (3, 4), (6, 8), (2, 2), (4, 2), (12, 8)]

# Small corpus files covering 4/4, 2/2, 9/8, 3/2, 4/2, 6/8, 3/4 and 2/4 (each parses in well under a second).
CORPUS_SAMPLE = [
    ("bach", "bach/bwv1.6.mxl"),
    ("ryansMammoth", "ryansMammoth/PaddyMilesFricasseeReel.abc"),
    ("ryansMammoth", "ryansMammoth/TwoPennyPostmansJig.abc"),
    ("palestrina", "palestrina/Credo_67_c.krn"),
    ("palestrina", "palestrina/Gloria_74_c.krn"),
    ("trecento", "trecento/PMFC_13_02-Kyrie-Questa-fanciulla.mxl"),
    ("essenFolksong", "essenFolksong/teste.abc"),
]


def metre_rows(ts):
    """Chords, sixteenths, eighth triplets, a dotted rhythm, repeated pitches, and long notes that ring to the
    segment's end (starting on a beat, so their length is on the coarse grid used beyond 8 beats)."""
    bar = bar_ticks(*ts)
    length = 4 * bar
    unit = 48 // ts[1]  # the denominator's note in ticks
    rows = [(0, length, 36, 70),                      # the whole segment
            (unit, length - unit, 43, 60),            # from beat 2 to the end
            (0, 3, 60, 100), (3, 3, 62, 90), (6, 3, 64, 80), (9, 3, 65, 70),
            (12, 4, 67, 100), (16, 4, 69, 90), (20, 4, 71, 80),
            (24, 9, 72, 110), (33, 3, 74, 50),
            (bar, 12, 60, 90), (bar, 12, 64, 90), (bar, 12, 67, 90),
            (bar + 12, 6, 60, 80), (bar + 18, 6, 60, 80),  # the same pitch twice in a row
            (2 * bar, bar, 79, 64), (3 * bar + unit, bar - unit, 84, 120)]
    return rows


def assert_round_trip(seg, kind):
    ids = encode_segment(seg, kind)
    assert ids.dtype == np.int32
    assert ids.ndim == (1 if kind == "remi" else 2)
    assert 0 <= ids.min() and ids.max() < vocabulary_size(kind)
    back = decode_tokens(ids, kind)
    assert note_tuples(back.notes) == note_tuples(seg.notes), f"{seg.piece_id} bar {seg.bar_start} {kind}"
    assert (back.ts_num, back.ts_den) == (seg.ts_num, seg.ts_den)
    assert back.num_bars <= seg.num_bars
    return back


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("ts", METRES, ids=lambda ts: f"{ts[0]}-{ts[1]}")
def test_round_trip_by_metre(ts, kind):
    seg = segment(metre_rows(ts), ts=ts, tempo=96.0)
    back = assert_round_trip(seg, kind)
    assert back.num_bars == 4
    assert back.tempo_qpm == pytest.approx(96.0, rel=0.03)  # tempos are log-quantised in 48 steps
    velocities = dict(((int(n["start"]), int(n["pitch"])), int(n["velocity"])) for n in back.notes)
    for n in seg.notes:  # 32 velocity bins: within half a bin
        assert abs(velocities[int(n["start"]), int(n["pitch"])] - int(n["velocity"])) <= 2


@pytest.mark.parametrize("kind", KINDS)
def test_decode_uses_given_tempo(kind):
    seg = segment([(0, 12, 60, 80), (12, 12, 64, 80)], tempo=140.0)
    assert decode_tokens(encode_segment(seg, kind), kind, tempo_qpm=73.0).tempo_qpm == 73.0


@pytest.mark.parametrize("kind", KINDS)
def test_long_note_off_the_coarse_grid_stays_close(kind):
    """Beyond 8 beats durations are held at quarter-beat precision (documented), so only nearly exact."""
    seg = segment([(0, 12, 60, 80), (50, 142, 59, 80)])
    back = decode_tokens(encode_segment(seg, kind), kind)
    (_, duration, _), = [t for t in note_tuples(back.notes) if t[2] == 59]
    assert abs(duration - 142) <= 1.5


@pytest.mark.parametrize("kind", KINDS)
def test_long_note_never_rounds_past_segment_end(kind):
    seg = segment([(0, 24, 60, 80), (98, 286, 59, 80)], ts=(4, 2))
    back = decode_tokens(encode_segment(seg, kind), kind)
    assert back.num_bars == 4
    assert int((back.notes["start"] + back.notes["duration"]).max()) <= seg.length


def test_unknown_kind():
    with pytest.raises(StudioError, match="unknown tokenizer 'bpe'; choose one of remi, cpword"):
        get_tokenizer("bpe")
    with pytest.raises(StudioError, match="unknown tokenizer"):
        encode_segment(segment([(0, 12, 60, 80)]), "octuple")


def test_vocabularies():
    assert vocabulary_size("remi") > 200 and vocabulary_size("cpword") > 200
    assert get_tokenizer("remi") is get_tokenizer("remi")  # cached


def test_encoding_is_deterministic():
    seg = segment(metre_rows((3, 4)), ts=(3, 4))
    assert np.array_equal(encode_segment(seg, "remi"), encode_segment(seg, "remi"))


@pytest.fixture(scope="module")
def corpus_segments():
    from engines.data.music21_import import corpus_root, parse_source
    from engines.data.segmenting import segment_piece

    root = corpus_root()
    segments = []
    for collection, rel in CORPUS_SAMPLE:
        for piece in parse_source(collection, str(root / rel)):
            segments += segment_piece(piece, 4, 4, 4)
    return segments


def test_corpus_sample_covers_the_metres(corpus_segments):
    metres = {(s.ts_num, s.ts_den) for s in corpus_segments}
    assert {(4, 4), (2, 2), (9, 8), (3, 2), (4, 2), (6, 8), (3, 4), (2, 4)} <= metres
    assert {s.collection for s in corpus_segments} == {c for c, _ in CORPUS_SAMPLE}


@pytest.mark.parametrize("kind", KINDS)
def test_corpus_segments_round_trip(corpus_segments, kind):
    for seg in corpus_segments:
        assert_round_trip(seg, kind)
