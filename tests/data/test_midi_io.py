"""engines/data/midi_io.py: validating user MIDI files, Score -> Piece, and writing segments back."""
import pytest

from engines.data.midi_io import load_midi_score, read_midi_piece, score_to_piece, segment_to_score, write_segment_midi
from engines.errors import StudioError
from engines.music.notes import BAR_DTYPE
from tests.conftest import note_tuples, scale_melody, segment, write_midi


@pytest.fixture
def song(tmp_path):
    return write_midi(tmp_path / "song.mid", scale_melody(4, step=6))  # 32 eighth notes


def load_error(path, **kwargs) -> str:
    with pytest.raises(StudioError) as info:
        load_midi_score(path, **kwargs)
    return str(info.value)


def test_loads_a_good_file(song):
    score = load_midi_score(song)
    assert score.ticks_per_quarter == 480
    assert sum(t.note_num() for t in score.tracks) == 32


def test_missing_file(tmp_path):
    assert load_error(tmp_path / "ghost.mid") == "'ghost.mid' does not exist"


def test_not_midi(tmp_path):
    path = tmp_path / "noise.mid"
    path.write_bytes(bytes((i * 37 + 11) % 256 for i in range(500)))
    message = load_error(path)
    assert "'noise.mid'" in message and "not a MIDI file" in message


def test_truncated(song, tmp_path):
    data = song.read_bytes()
    cut = tmp_path / "cut.mid"
    cut.write_bytes(data[:len(data) // 2])
    message = load_error(cut)
    assert "'cut.mid'" in message and "truncated or corrupt" in message


def test_header_only_is_too_short(song, tmp_path):
    cut = tmp_path / "stub.mid"
    cut.write_bytes(song.read_bytes()[:10])
    assert "'stub.mid' could not be read as MIDI" in load_error(cut)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.mid"
    path.write_bytes(b"")
    assert load_error(path) == "'empty.mid' is empty (0 bytes)"


def test_no_notes(tmp_path):
    path = write_midi(tmp_path / "silent.mid", [])
    assert load_error(path) == "'silent.mid' holds no notes"


@pytest.mark.parametrize("qpm", [5000.0, 5.0])
def test_absurd_tempo(tmp_path, qpm):
    path = write_midi(tmp_path / "tempo.mid", scale_melody(1), tempo=qpm)
    message = load_error(path)
    assert "'tempo.mid'" in message and f"absurd tempo of {qpm:g}" in message and "10..1000" in message


def test_file_too_big(song):
    message = load_error(song, max_file_mb=0.0001)
    assert "'song.mid'" in message and "the limit is 0.0001 MB" in message


def test_too_many_notes(song):
    assert load_error(song, max_notes=10) == "'song.mid' holds 32 notes; the limit is 10"
    assert load_midi_score(song, max_notes=32) is not None


def test_score_to_piece_rescales_and_skips_drums(tmp_path):
    rows = [(0, 12, 60, 80), (6, 3, 64, 90), (13, 1, 67, 100)]
    path = write_midi(tmp_path / "band.mid", rows, drum_rows=[(0, 3, 36, 120), (12, 3, 38, 120)])
    from symusic import Score

    score = Score(str(path))
    assert score.tracks[0].notes[1].time == 240  # 480 per quarter on disk
    piece = score_to_piece(score, "band")
    assert note_tuples(piece.notes, velocity=True) == sorted(rows)  # 480 -> 12 ticks per quarter
    assert set(piece.notes["track"].tolist()) == {0}
    assert piece.tempo_qpm == pytest.approx(120.0)


def test_score_to_piece_other_resolution(tmp_path):
    rows = [(0, 6, 60, 80), (6, 6, 62, 80), (12, 24, 64, 80)]
    piece = read_midi_piece(write_midi(tmp_path / "coarse.mid", rows, tpq=96), collection="mine")
    assert note_tuples(piece.notes) == [(0, 6, 60), (6, 6, 62), (12, 24, 64)]
    assert piece.piece_id == "mine/coarse" and piece.collection == "mine"


def test_only_drums(tmp_path):
    path = write_midi(tmp_path / "drums.mid", [], drum_rows=[(0, 3, 36, 100)])
    score = load_midi_score(path)  # drum notes are notes: the file itself is valid
    with pytest.raises(StudioError) as info:
        read_midi_piece(path, collection="x")
    assert str(info.value) == "'x/drums' holds only drum notes; the analyzer needs pitched notes"
    with pytest.raises(StudioError, match="^'drums' holds only drum notes"):
        score_to_piece(score, "drums")


def test_bars_from_time_signatures(tmp_path):
    rows = [(t, 12, 60, 80) for t in range(0, 96 + 3 * 36, 12)]
    path = write_midi(tmp_path / "metres.mid", rows, signatures=((0, 4, 4), (96, 3, 4)))
    piece = read_midi_piece(path)
    assert piece.bars.dtype == BAR_DTYPE
    assert piece.bars.tolist() == [(0, 48, 4, 4), (48, 48, 4, 4), (96, 36, 3, 4), (132, 36, 3, 4), (168, 36, 3, 4)]


def test_missing_time_signature_means_4_4_and_missing_tempo_120(tmp_path):
    path = write_midi(tmp_path / "bare.mid", [(0, 100, 60, 80)], signatures=(), tempo=None)
    piece = read_midi_piece(path)
    assert piece.bars.tolist() == [(0, 48, 4, 4), (48, 48, 4, 4), (96, 48, 4, 4)]
    assert piece.tempo_qpm == 120.0


def test_late_first_time_signature_gets_4_4_before_it(tmp_path):
    path = write_midi(tmp_path / "late.mid", [(0, 120, 60, 80)], signatures=((48, 6, 8),))
    assert read_midi_piece(path).bars.tolist() == [(0, 48, 4, 4), (48, 36, 6, 8), (84, 36, 6, 8)]


def test_write_segment_midi_round_trip(tmp_path):
    rows = [(0, 18, 60, 100), (0, 36, 64, 70), (18, 6, 62, 90), (24, 12, 67, 64), (36, 108, 48, 50),
            (100, 44, 72, 127)]
    seg = segment(rows, ts=(6, 8), tempo=84.0, piece_id="bach/test")
    path = write_segment_midi(seg, tmp_path / "seg.mid")
    score = load_midi_score(path)
    assert score.ticks_per_quarter == 480
    assert [(ts.numerator, ts.denominator) for ts in score.time_signatures] == [(6, 8)]
    assert score.tempos[0].qpm == pytest.approx(84.0, abs=0.01)
    assert score.tracks[0].name == "bach/test"
    piece = score_to_piece(score, "seg")
    assert note_tuples(piece.notes, velocity=True) == note_tuples(seg.notes, velocity=True)
    assert set(map(tuple, piece.bars[["ts_num", "ts_den"]].tolist())) == {(6, 8)}
    assert len(piece.bars) == 4


def test_segment_to_score_program():
    score = segment_to_score(segment([(0, 12, 60, 80)]), program=41)
    assert score.tracks[0].program == 41 and score.tracks[0].notes[0].duration == 480


def test_header_with_zero_ticks_per_quarter_is_a_clear_error(tmp_path):
    from tests.helpers import write_test_midi

    path = write_test_midi(tmp_path / "ok.mid", bars=2)
    data = bytearray(path.read_bytes())
    data[12:14] = b"\x00\x00"                     # division field of the MThd chunk
    bad = tmp_path / "zero_division.mid"
    bad.write_bytes(bytes(data))
    with pytest.raises(StudioError, match="ticks per quarter|could not be read"):
        load_midi_score(bad)


def test_a_file_that_lasts_too_long_is_analysed_in_part(tmp_path):
    """Issue 20, defect 7: a long piece is read up to max_seconds and says so, not refused."""
    from symusic import Note, Score, Tempo, Track

    from engines.analysis import analyze_midi_file, excerpt_note, midi_file_excerpt
    from engines.config import load_config
    from engines.data.midi_io import read_midi_score, tick_at_seconds

    score = Score(480)
    score.tempos.append(Tempo(0, 120.0))
    score.tempos.append(Tempo(480 * 8, 60.0))                   # 4 s at 120, then one quarter a second
    track = Track()
    for beat in range(0, 2 * 60 * 20, 2):                        # a note every other beat for ~20 minutes
        track.notes.append(Note(480 * beat, 480, 60 + beat % 12, 80))
    score.tracks.append(track)
    path = tmp_path / "long.mid"
    score.dump_midi(str(path))
    assert tick_at_seconds(score, 2.0) == 480 * 4                 # 120 qpm: 4 quarters in 2 s
    assert tick_at_seconds(score, 14.0) == 480 * (8 + 10)         # then 10 s at 60 qpm
    cut, full = read_midi_score(path, max_seconds=900)
    assert full == pytest.approx(score.to("second").end(), abs=0.01) and full > 900
    assert 895 < cut.to("second").end() <= 900.01                 # nothing sounds past the cut
    assert 0 < cut.note_num() < score.note_num()
    whole, none = read_midi_score(path, max_seconds=full + 60)
    assert none is None and whole.note_num() == score.note_num()
    cfg = load_config(overrides=["data.max_seconds=60"])
    _, segments, seconds = midi_file_excerpt(path, cfg)
    assert seconds == pytest.approx(full, abs=0.01) and segments
    notes = []
    results = analyze_midi_file(path, cfg, on_excerpt=notes.append)
    assert len(results) == len(segments)
    assert notes == [excerpt_note(60, seconds)] and "the first 1 were analysed" in notes[0]
    silent = Score(480)
    late = Track()
    late.notes.append(Note(480 * 2 * 60 * 20, 480, 62, 80))      # its only note 20 minutes in
    silent.tracks.append(late)
    silent.dump_midi(str(tmp_path / "late.mid"))
    with pytest.raises(StudioError, match="holds no notes in its first 15 minutes"):
        load_midi_score(tmp_path / "late.mid", max_seconds=900)


def test_out_of_range_pitches_fold_by_octaves(tmp_path):
    from symusic import Note, Score, Tempo, Track

    score = Score(480)
    score.tempos.append(Tempo(0, 120.0))
    track = Track()
    for i, pitch in enumerate((0, 12, 20, 110, 127)):
        track.notes.append(Note(i * 480, 480, pitch, 80))
    score.tracks.append(track)
    piece = score_to_piece(score, "folded")
    assert sorted(piece.notes["pitch"].tolist()) == sorted([24, 24, 32, 98, 103])


def test_a_tempo_change_gives_each_segment_its_own_tempo(tmp_path):
    from symusic import Note, Score, Tempo, TimeSignature, Track

    from engines.data.segmenting import segment_piece

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, 60.0))
    score.tempos.append(Tempo(480 * 16, 240.0))      # bar 5 on: four times faster
    track = Track()
    for q in range(32):
        track.notes.append(Note(q * 480, 480, 60 + q % 12, 80))
    score.tracks.append(track)
    first, second = segment_piece(score_to_piece(score, "tempo"), 4, 4, 1)
    assert first.tempo_qpm == pytest.approx(60.0) and second.tempo_qpm == pytest.approx(240.0)
    assert second.seconds == pytest.approx(4.0)


def test_a_folder_is_not_a_midi_file(tmp_path):
    with pytest.raises(StudioError, match="is a folder"):
        load_midi_score(tmp_path)


def test_a_segment_with_silent_last_bars_reads_back_with_all_its_bars(tmp_path):
    """A 4-bar result whose notes all lie in bar 1 (a sparse generation) is still 4 bars when read back,
    e.g. to inpaint bars 2-4 of it: the file marks where its last bar ends."""
    from engines.analysis import midi_file_segments
    from engines.config import Config
    from engines.data.midi_io import END_MARKER, read_midi_piece, segment_to_score, write_segment_midi
    from engines.music.notes import Segment, make_notes

    sparse = Segment(notes=make_notes([(0, 12, 60, 80), (12, 12, 64, 80), (24, 24, 67, 80)]), ts_num=3, ts_den=4,
                     num_bars=4, tempo_qpm=90.0)
    path = write_segment_midi(sparse, tmp_path / "sparse.mid")
    assert [m.text for m in segment_to_score(sparse).markers] == [END_MARKER]
    piece = read_midi_piece(path)
    assert len(piece.bars) == 4 and int(piece.bars["length"][0]) == 36
    (segment,) = midi_file_segments(path, Config())[1]
    assert segment.num_bars == 4 and len(segment.notes) == 3
