"""engines/data/prepare.py and cache.py: a MIDI folder -> shards -> segment cache, splits, labels, packing."""
import json
from pathlib import Path

import numpy as np
import pytest

from engines.config import load_config
from engines.data.cache import ARRAYS, FEATURE_NAMES, SPLITS, SegmentCache, pack, unpack
from engines.data.midi_io import read_midi_piece
from engines.data.prepare import corpus_stats, prepare, split_of
from engines.data.segmenting import segment_piece
from engines.errors import StudioError
from engines.music.analyzer import AXES, MODES, ChromaticAnalyzer
from engines.tokenizers.midi import encode_segment
from tests.conftest import scale_melody, write_midi

LABELLED = "waltz"  # the one file the conftest manifest names: INDIGO, rebracketing 0.9, valence -0.5


@pytest.fixture(scope="module")
def cache(prepared):
    return SegmentCache(prepared[3])


# Where each test file lies below the MIDI folder (the jig sits in a subfolder).
RELATIVE = {"quarters": "quarters", "waltz": "waltz", "jig": "sub/jig", "hymn": "hymn"}


def rows_of(cache, name):
    """Indices of the cache rows that come from the source file `name`.mid."""
    return [i for i in range(len(cache)) if cache.piece_of(i)["source"] == f"{RELATIVE[name]}.mid"]


def test_report_counts(prepared):
    _, _, report, out, _ = prepared
    assert report["sources"] == 5
    assert (report["parsed"], report["reused"], report["failed_now"]) == (4, 0, 1)
    assert report["failed_files"] == 1 and report["failure_reasons"] == {"StudioError": 1}
    assert report["pieces"] == 4 and report["segments"] == 10
    assert report["out"] == str(out)
    assert not Path(str(out) + ".building").exists()


def test_failure_is_recorded_with_its_reason(cache, prepared):
    (failure,) = cache.meta["failures"]
    assert failure["path"] == "garbage.mid"  # relative to the MIDI folder: the same on every machine
    assert "'garbage.mid' is not a MIDI file" in failure["reason"]


def test_cache_layout(cache, prepared):
    assert len(cache) == 10
    assert sorted(p["source"] for p in cache.pieces) == ["hymn.mid", "quarters.mid", "sub/jig.mid", "waltz.mid"]
    assert cache.collections == ["songs"]
    assert cache.meta["manifest"] is True and cache.meta["segment_bars"] == 4
    assert cache.meta["counts"]["segments"] == 10
    assert int(cache.segments["note_count"].sum()) == len(cache.notes)
    assert int(cache.segments["token_count"].sum()) == len(cache.tokens)
    assert cache.segments["features"].shape == (10, len(FEATURE_NAMES))


@pytest.mark.parametrize("name, metres, bar_starts", [
    ("quarters", {(4, 4)}, [0, 4]), ("waltz", {(3, 4)}, [0, 4]), ("jig", {(6, 8)}, [0, 4, 8]),
    ("hymn", {(4, 4), (2, 2)}, [0, 4, 8]),
])
def test_segments_equal_segmenting_the_source(cache, prepared, name, metres, bar_starts):
    files = prepared[1]
    piece = read_midi_piece(files[name], collection="songs")
    expected = segment_piece(piece, 4, 4, 4)
    indices = rows_of(cache, name)
    assert [cache.segment(i).bar_start for i in indices] == [s.bar_start for s in expected] == bar_starts
    assert {(s.ts_num, s.ts_den) for s in expected} == metres
    for i, seg in zip(indices, expected):
        got = cache.segment(i)
        assert np.array_equal(got.notes, seg.notes)
        assert (got.ts_num, got.ts_den, got.num_bars) == (seg.ts_num, seg.ts_den, seg.num_bars)
        assert got.tempo_qpm == pytest.approx(seg.tempo_qpm)
        assert got.piece_id == f"songs/{RELATIVE[name]}" and got.collection == "songs"
        assert np.array_equal(cache.segment_tokens(i), encode_segment(seg, "remi"))


def test_drum_track_left_out(cache):
    (index, *_) = rows_of(cache, "jig")
    assert 36 not in cache.segment_notes(index)["pitch"].tolist()


def test_analysis_rows_match_the_analyzer(cache):
    analyzer = ChromaticAnalyzer()
    for i in range(len(cache)):
        if cache.piece_of(i)["source"] == f"{LABELLED}.mid":
            continue
        row, result = cache.segments[i], analyzer.analyze(cache.segment(i))
        assert row["label_source"] == 0
        assert MODES[row["mode"]] == result.mode
        assert np.allclose(row["scores"], [result.scores[m] for m in MODES], atol=1e-6)
        assert np.allclose(row["axes"], [result.axes[a] for a in AXES], atol=1e-6)
        assert row["rebracketing"] == pytest.approx(result.rebracketing, abs=1e-6)


def test_manifest_overrides_only_the_file_it_names(cache):
    labelled = rows_of(cache, LABELLED)
    assert len(labelled) == 2
    analyzer = ChromaticAnalyzer()
    for i in range(len(cache)):
        row = cache.segments[i]
        if i in labelled:
            assert row["label_source"] == 1
            assert MODES[row["mode"]] == "INDIGO"
            assert row["scores"].tolist() == np.eye(len(MODES))[MODES.index("INDIGO")].tolist()
            assert row["rebracketing"] == pytest.approx(0.9)
            assert row["axes"][AXES.index("valence")] == pytest.approx(-0.5)
            own = analyzer.analyze(cache.segment(i))  # other columns keep the analyzer's values
            assert own.mode != "INDIGO" and own.rebracketing != pytest.approx(0.9)  # the label made a difference
            assert row["axes"][AXES.index("energy")] == pytest.approx(own.axes["energy"], abs=1e-6)
            assert row["temporal_complexity"] == pytest.approx(own.temporal_complexity, abs=1e-6)
        else:
            assert row["label_source"] == 0


def test_splits_hold_whole_pieces(cache, prepared):
    cfg = prepared[0]
    for piece_index, piece in enumerate(cache.pieces):
        splits = set(cache.segments["split"][cache.segments["piece"] == piece_index].tolist())
        assert splits == {split_of(piece["id"], cfg.data.validation_fraction, cfg.data.test_fraction)}
    assert sorted(np.concatenate([cache.split_indices(s) for s in SPLITS]).tolist()) == list(range(len(cache)))


def test_split_of_is_deterministic_and_proportional():
    ids = [f"collection/piece{i}" for i in range(4000)]
    first = [split_of(i, 0.1, 0.2) for i in ids]
    assert first == [split_of(i, 0.1, 0.2) for i in ids]
    counts = np.bincount(first, minlength=3) / len(ids)
    assert counts[1] == pytest.approx(0.1, abs=0.02) and counts[2] == pytest.approx(0.2, abs=0.02)
    assert split_of("bach/bwv1.6", 0.1, 0.1) == split_of("bach/bwv1.6", 0.1, 0.1)


def test_second_run_reuses_shards_and_is_byte_identical(prepared, tmp_path):
    cfg, _, _, out, manifest = prepared
    midi_dir = out.parent.parent / "songs"
    again = tmp_path / "again"
    report = prepare(cfg, midi_dir=str(midi_dir), manifest=str(manifest), out=str(again), workers=1)
    assert (report["parsed"], report["reused"], report["failed_now"]) == (0, 5, 0)
    assert report["failed_files"] == 1 and report["segments"] == 10
    for name in ARRAYS:
        assert (again / f"{name}.npy").read_bytes() == (out / f"{name}.npy").read_bytes(), name
    assert json.loads((again / "meta.json").read_text()) == json.loads((out / "meta.json").read_text())


def test_pack_unpack_round_trip(prepared, cache, tmp_path):
    out = prepared[3]
    pack(out, tmp_path / "a.npz")
    pack(out, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    unpack(tmp_path / "a.npz", tmp_path / "unpacked")
    copy = SegmentCache(tmp_path / "unpacked")
    for name in ARRAYS:
        assert np.array_equal(getattr(copy, name), getattr(cache, name)), name
        assert getattr(copy, name).dtype == ARRAYS[name]
    assert copy.meta == cache.meta
    assert not list((tmp_path / "unpacked").glob("*.tmp"))


def test_corpus_stats(cache):
    stats = corpus_stats(cache)
    assert {"segments", "pieces", "splits", "modes", "collections"} <= set(stats)
    assert stats["segments"] == 10 and stats["pieces"] == 4
    assert sum(stats["splits"].values()) == 10 and set(stats["splits"]) == set(SPLITS)
    assert sum(stats["modes"].values()) == 10 and set(stats["modes"]) == set(MODES)
    assert stats["modes"]["INDIGO"] >= 2
    assert stats["collections"] == {"songs": 10}
    assert stats["failed_files"] == 1 and stats["notes"] == len(cache.notes)
    assert sum(stats["mode_shares"].values()) == pytest.approx(1.0, abs=1e-3)


def test_cache_errors(cache, tmp_path):
    with pytest.raises(StudioError, match="no segment cache in"):
        SegmentCache(tmp_path / "nothing")
    with pytest.raises(StudioError, match="segment 10 does not exist; the cache holds 10 segments"):
        cache.segment(10)
    with pytest.raises(StudioError, match="unknown split 'dev'"):
        cache.split_indices("dev")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text(json.dumps({"cache_format": 0}))
    with pytest.raises(StudioError, match="older format"):
        SegmentCache(tmp_path / "old")


def test_prepare_errors(tmp_path):
    cfg = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    with pytest.raises(StudioError, match="MIDI folder '.*nowhere' does not exist"):
        prepare(cfg, midi_dir=str(tmp_path / "nowhere"), workers=1)
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "readme.txt").write_text("hi")
    with pytest.raises(StudioError, match="holds no .mid or .midi files"):
        prepare(cfg, midi_dir=str(tmp_path / "texts"), workers=1)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mid").write_bytes(b"MThd garbage")
    write_midi(tmp_path / "bad" / "short.mid", scale_melody(2))  # too short for a 4-bar segment
    with pytest.raises(StudioError, match="no segments could be made"):
        prepare(cfg, midi_dir=str(tmp_path / "bad"), out=str(tmp_path / "out"), workers=1)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.building").exists()


def test_same_name_in_two_subfolders(tmp_path):
    rows = scale_melody(4)
    for folder in ("a", "b"):
        (tmp_path / "songs" / folder).mkdir(parents=True)
    write_midi(tmp_path / "songs" / "a" / "theme.mid", rows)
    write_midi(tmp_path / "songs" / "b" / "theme.mid", [(s, d, p + 5, v) for s, d, p, v in rows])
    cfg = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    prepare(cfg, midi_dir=str(tmp_path / "songs"), out=str(tmp_path / "out"), workers=1)
    cache = SegmentCache(tmp_path / "out")
    assert len(cache) == 2
    lowest = sorted(int(cache.segment_notes(i)["pitch"].min()) for i in range(2))
    assert lowest == [60, 65]
    assert len({p["id"] for p in cache.pieces}) == 2


def test_editing_a_midi_file_in_place_is_noticed(tmp_path):
    """Same path, same byte size, other notes: the shard key follows the content, so prepare re-parses."""
    from symusic import Note, Score, Tempo, Track

    from engines.config import load_config
    from engines.data.prepare import prepare

    def write(offset):
        score = Score(480)
        score.tempos.append(Tempo(0, 120.0))
        track = Track()
        for q in range(32):
            track.notes.append(Note(q * 480, 480, 60 + offset + q % 5, 80))
        score.tracks.append(track)
        score.dump_midi(str(tmp_path / "songs" / "theme.mid"))

    (tmp_path / "songs").mkdir()
    cfg = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    write(0)
    first = prepare(cfg, midi_dir=str(tmp_path / "songs"), out=str(tmp_path / "out"), workers=1)
    size = (tmp_path / "songs" / "theme.mid").stat().st_size
    write(1)
    assert (tmp_path / "songs" / "theme.mid").stat().st_size == size
    second = prepare(cfg, midi_dir=str(tmp_path / "songs"), out=str(tmp_path / "out"), workers=1)
    assert (first["parsed"], second["parsed"]) == (1, 1)
    from engines.data.cache import SegmentCache

    assert int(SegmentCache(tmp_path / "out").segment_notes(0)["pitch"].min()) == 61


def test_relabel_gives_what_a_full_prepare_gives_and_refuses_a_manifest_cache(tmp_path, prepared):
    """`prepare --relabel` re-analyses a built cache when only the analyzer changed: byte for byte what a
    fresh prepare with the new analyzer writes, without parsing again."""
    from engines.data.prepare import relabel
    from tests.conftest import corpus_folder

    corpus_folder(tmp_path / "songs")
    cfg = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}"])
    prepare(cfg, midi_dir=str(tmp_path / "songs"), out=str(tmp_path / "old"), workers=1)
    changed = load_config(overrides=[f"data.cache_dir={tmp_path / 'cache'}", "analyzer.softmax_temperature=0.02",
                                     "analyzer.prototypes.RED=[0.9, 0.5, 0.5, 0.2, 0.9]"])
    prepare(changed, midi_dir=str(tmp_path / "songs"), out=str(tmp_path / "fresh"), workers=1)
    before = np.load(tmp_path / "old" / "segments.npy")
    report = relabel(changed, tmp_path / "old", workers=1)
    assert report["segments"] == len(before)
    for name in ARRAYS:
        relabelled, fresh = np.load(tmp_path / "old" / f"{name}.npy"), np.load(tmp_path / "fresh" / f"{name}.npy")
        assert relabelled.tobytes() == fresh.tobytes(), name
    assert not np.array_equal(before["scores"], np.load(tmp_path / "fresh" / "segments.npy")["scores"])
    meta = json.loads((tmp_path / "old" / "meta.json").read_text())
    assert meta["fingerprint"] == json.loads((tmp_path / "fresh" / "meta.json").read_text())["fingerprint"]
    with pytest.raises(StudioError, match="labelled by a manifest"):
        relabel(prepared[0], prepared[3], workers=1)
