"""The engine API the studio calls, on the shipped corpus cache; and the studio's build and import rules."""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engines.api import BrowseQuery, StudioEngine
from engines.config import load_config
from engines.data.prepare import corpus_stats, ensure_corpus_cache, fingerprint
from engines.errors import StudioError
from engines.music.analyzer import MODES
from tests.helpers import write_test_midi

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    cfg = load_config()
    return StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=tmp_path_factory.mktemp("renders"))


def test_shipped_cache_matches_the_code_that_reads_it():
    """If the analyzer, segmenting or tokenizer changes, the shipped archive must be rebuilt with
    `python -m engines prepare --pack assets/corpus/segment_cache.npz` (else a fresh clone re-parses)."""
    cfg = load_config()
    with zipfile.ZipFile(ROOT / cfg.data.shipped_cache) as zf:
        meta = json.loads(zf.read("meta.json"))
    assert meta["fingerprint"] == fingerprint(cfg)


def test_corpus_meets_the_size_and_balance_targets(engine):
    stats = corpus_stats(engine.cache)
    assert stats["segments"] >= 30_000
    assert min(stats["mode_shares"].values()) >= 0.04, stats["mode_shares"]
    assert sum(stats["splits"].values()) == stats["segments"]
    assert set(stats["modes"]) == set(MODES)
    # No piece in two splits.
    seg = engine.cache.segments
    pieces_by_split = [set(np.unique(seg["piece"][seg["split"] == s]).tolist()) for s in range(3)]
    assert not (pieces_by_split[0] & pieces_by_split[1]) and not (pieces_by_split[0] & pieces_by_split[2])
    assert not (pieces_by_split[1] & pieces_by_split[2])


def test_browse_filters_by_mode_collection_and_ranges(engine):
    seg = engine.cache.segments
    mode = int(seg["mode"][0])  # the first segment's own mode and collection surely match something
    collection = engine.cache.collections[engine.cache.pieces[int(seg["piece"][0])]["collection"]]
    rows, total = engine.browse(BrowseQuery(modes=[MODES[mode]], collections=[collection], limit=20,
                                            ranges={"rebracketing": (0.0, 0.9), "energy": (0.1, 1.0)}))
    assert 0 < len(rows) <= 20 and total >= len(rows)
    for row in rows:
        assert row["mode"] == MODES[mode] and row["collection"] == collection
        assert row["rebracketing"] <= 0.9 + 0.005 and row["energy"] >= 0.1 - 0.005
    narrower, _ = engine.browse(BrowseQuery(modes=[MODES[mode]], collections=[collection], limit=10_000,
                                            ranges={"energy": (0.5, 1.0)}))
    assert all(r["energy"] >= 0.5 - 0.005 for r in narrower)
    _, everything = engine.browse(BrowseQuery(limit=1))
    assert everything == len(engine.cache)
    rows, _ = engine.browse(BrowseQuery(text="BWV1.6", limit=50))
    assert rows and all("bwv1.6" in r["piece"].lower() for r in rows)


def test_browse_rejects_unknown_filters(engine):
    with pytest.raises(StudioError, match="unknown mode 'PINK'"):
        engine.browse(BrowseQuery(modes=["PINK"]))
    with pytest.raises(StudioError, match="cannot filter on 'loudness'"):
        engine.browse(BrowseQuery(ranges={"loudness": (0, 1)}))


def test_segment_view_renders_and_exports(engine):
    rows, _ = engine.browse(BrowseQuery(modes=["GREEN"], limit=1))
    view = engine.segment_view(rows[0]["index"])
    assert view.mode == "GREEN" and view.analysis["mode"] == "GREEN"
    assert abs(sum(view.analysis["scores"].values()) - 1) < 1e-3
    assert len(view.notes.pitch) == view.facts["notes"] > 0
    assert view.notes.bar_lines[0] == 0 and len(view.notes.bar_lines) == 5
    wav = engine.render_segment(view.index)
    audio, rate = soundfile.read(wav)
    seconds = engine.cache.segment(view.index).seconds
    assert rate == 44100 and abs(len(audio) / rate - (seconds + 1.0)) < 0.2
    assert np.sqrt(np.mean(audio ** 2)) > 1e-3
    assert Path(view.midi_path).read_bytes()[:4] == b"MThd"
    made = Path(wav).stat().st_mtime_ns
    assert engine.render_segment(view.index) == wav and Path(wav).stat().st_mtime_ns == made  # not rendered again


def test_segment_view_of_a_missing_index_is_a_clear_error(engine):
    with pytest.raises(StudioError, match="does not exist"):
        engine.segment_view(len(engine.cache) + 5)


def test_upload_is_analysed_per_segment_and_rendered(engine, tmp_path):
    view = engine.analyze_upload(write_test_midi(tmp_path / "tune.mid", bars=10))
    assert [s["bars"] for s in view.segments] == [[1, 4], [5, 8], [9, 10]]
    assert [r["mode"] for r in view.notes.regions] == [s["mode"] for s in view.segments]
    assert view.notes.regions[1]["start"] == 16.0
    audio, rate = soundfile.read(view.wav_path)
    assert len(audio) / rate > 10 * 4 * 60 / 110  # the whole file, not a segment


def test_a_file_of_several_tracks_is_analysed_merged_as_its_melody_or_track_by_track(engine, tmp_path):
    """Issue 20, defect 8: a multi-track song was read as one line on one piano, and nothing said so."""
    path = write_test_midi(tmp_path / "tune.mid", bars=8)             # a melody in eighths over a half-note bass
    merged = engine.analyze_upload(path)
    assert [value for _, value in merged.tracks] == ["all", "melody", "0", "1"] and merged.track == "all"
    assert merged.tracks[0][0] == "all 2 tracks merged" and merged.tracks[3][0].startswith("track 2: bass (")
    bass = engine.analyze_upload(path, "1")
    melody = engine.analyze_upload(path, "0")
    top = engine.analyze_upload(path, "melody")
    assert max(bass.notes.pitch) < min(melody.notes.pitch)            # the bass alone, below the tune
    assert len(bass.notes.pitch) + len(melody.notes.pitch) == len(merged.notes.pitch)
    assert top.notes.pitch == melody.notes.pitch and top.track == "melody"   # the top line is the tune
    assert bass.segments[0]["mode"] in {r["mode"] for r in bass.notes.regions}
    with pytest.raises(StudioError, match="unknown track 'drums'"):
        engine.analyze_upload(path, "drums")
    with pytest.raises(StudioError, match="track 8 of 'tune' holds no pitched notes"):
        engine.analyze_upload(path, "7")


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"RIFF....WAVEfmt ", "not a MIDI file"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01", "could not be read as MIDI"),
])
def test_bad_uploads_raise_studio_errors(engine, tmp_path, content, message):
    path = tmp_path / "bad.mid"
    path.write_bytes(content)
    with pytest.raises(StudioError, match=message):
        engine.analyze_upload(path)


@pytest.mark.slow
def test_studio_builds_and_imports_no_torch(engine):
    from studio.app import build_app

    demo = build_app(engine)
    assert demo.title == "Chromatic Segment Studio"
    code = "import sys, studio.app; assert 'torch' not in sys.modules, 'studio imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_random_match_draws_from_every_match_not_only_the_first_page(engine):
    query = BrowseQuery(modes=["BLUE"], limit=5)
    shown = {r["index"] for r in engine.browse(query)[0]}
    picks = {engine.random_match(query, seed) for seed in range(40)}
    assert all(MODES[engine.cache.segments["mode"][i]] == "BLUE" for i in picks)
    assert picks - shown, "random picks never left the first page"
    with pytest.raises(StudioError, match="no segment matches"):
        engine.random_match(BrowseQuery(text="no piece is called this"))


def test_renders_of_two_engines_never_share_files(tmp_path):
    cfg = load_config()
    cache = ensure_corpus_cache(cfg)
    first, second = StudioEngine(cfg, cache=cache), StudioEngine(cfg, cache=cache)
    # a file is made once per name and then served from disk: were the folders shared, the second engine
    # would hand out the first one's file
    made = [engine._file("result-1", ".txt", lambda path, text=text: path.write_text(text))
            for engine, text in ((first, "first"), (second, "second"))]
    assert [path.read_text() for path in made] == ["first", "second"]
    assert first._file("result-1", ".txt", lambda path: path.write_text("again")).read_text() == "first"


def test_guarded_handlers_turn_any_failure_into_a_message():
    from studio.widgets import guarded

    @guarded(lambda message: ("failed", message))
    def handler(kind):
        if kind == "user":
            raise StudioError("'x.mid' is not a MIDI file")
        raise ZeroDivisionError("division by zero")

    assert handler("user") == ("failed", "<div class='studio-error' role='alert'>⚠️ 'x.mid' is not a MIDI file</div>")
    status, message = handler("bug")
    assert status == "failed" and "ZeroDivisionError" in message and "carries on" in message


def test_caption_thresholds_follow_the_corpus_the_analyzer_labels(engine):
    """The GPT's captions say "high rebracketing" above the corpus's 75th percentile and name temporal
    complexity by its tertiles: constants that must move when the analyzer does (engines/data/captions.py)."""
    from engines.data.captions import REBRACKETING_HIGH, TEMPORAL_TERTILES

    seg = engine.cache.segments
    assert np.quantile(seg["rebracketing"], 0.75) == pytest.approx(REBRACKETING_HIGH, abs=0.02)
    assert np.quantile(seg["temporal_complexity"], [1 / 3, 2 / 3]) == pytest.approx(TEMPORAL_TERTILES, abs=0.02)


def test_starred_results_zip_with_their_settings_and_only_the_studios_own_files(engine, tmp_path):
    segment = engine.cache.segment(int(engine.cache.split_indices("test")[0]))
    made = [engine.segment_result(segment, f"zip-test-{k}", f"RED-vae-seed{k}-1") for k in range(2)]
    results = [{"midi": m["midi_path"], "wav": m["wav_path"], "settings": {"engine": "vae", "seed": k, "tempo": 90}}
               for k, m in enumerate(made)]
    path = Path(engine.export_zip(results))
    assert path.name == "starred-results.zip"
    archive = zipfile.ZipFile(path)
    assert sorted(archive.namelist()) == ["RED-vae-seed0-1.mid", "RED-vae-seed0-1.wav", "RED-vae-seed1-1.mid",
                                          "RED-vae-seed1-1.wav", "settings.json"]
    assert json.loads(archive.read("settings.json")) == [
        {"midi": f"RED-vae-seed{k}-1.mid", "wav": f"RED-vae-seed{k}-1.wav", "engine": "vae", "seed": k, "tempo": 90}
        for k in range(2)]
    assert archive.read("RED-vae-seed0-1.mid") == Path(made[0]["midi_path"]).read_bytes()
    with pytest.raises(StudioError, match="star a result first"):
        engine.export_zip([])
    outside = tmp_path / "secret.mid"
    outside.write_bytes(b"MThd")
    with pytest.raises(StudioError, match="'secret.mid' is not a file this studio made"):
        engine.export_zip([{"midi": str(outside), "wav": None, "settings": {}}])
    with pytest.raises(StudioError, match="is not a file this studio made"):
        engine.export_zip([{"midi": str(engine.out_dir / ".." / "x.mid"), "wav": None, "settings": {}}])


def test_a_phrase_played_in_becomes_a_four_bar_midi_file_and_bad_notes_are_named(engine):
    from engines.data.midi_io import read_midi_score

    notes = [[60, 0, 2], [64, 2, 2], [67, 4, 4], [72, 16, 8], [48, 0, 16]]
    path = Path(engine.phrase_midi(notes, tempo=90))
    assert path.name == "played-phrase.mid"
    score = read_midi_score(path)[0]
    assert round(score.tempos[0].qpm) == 90
    played = sorted((n.time // 120, n.duration // 120, n.pitch) for n in score.tracks[0].notes)   # 120 = a 16th
    assert played == sorted((start, steps, pitch) for pitch, start, steps in notes)
    view = engine.analyze_upload(path)
    assert [s["bars"] for s in view.segments] == [[1, 4]]
    for bad, message in (([], "the phrase is empty"), ([[60, 70, 2]], "lies outside the phrase"),
                         ([[200, 0, 2]], "lies outside the phrase"), ([[60, "x", 2]], r"is \[pitch, start step")):
        with pytest.raises(StudioError, match=message):
            engine.phrase_midi(bad)
