"""The Arrange tab's engine API (engines/api/arrange.py) with the tiny engines: a piece written section by
section with progress, its roll, files and report; one section regenerated in place; plans read and saved."""
from __future__ import annotations

import json

import numpy as np
import pytest
from symusic import Score

from engines.api import ArrangementView, StudioEngine
from engines.config import load_config
from engines.errors import StudioError

pytestmark = pytest.mark.slow   # all three engines write a piece through the studio's API, several times

PLAN = {"title": "A test piece", "tempo": 120, "metre": "4/4",
        "sections": [{"bars": 4, "mode": "BLUE", "engine": "diffusion"},
                     {"bars": 8, "mode": "RED", "engine": "autoregressive"},
                     {"bars": 4, "mode": "VIOLET", "engine": "vae"}]}


@pytest.fixture(scope="module")
def engine(tiny_checkpoints, corpus_cache, tmp_path_factory):
    cfg = load_config(overrides=[f"model.checkpoints_dir={tiny_checkpoints['vae'].parent}",
                                 "generation.arrange.diffusion_steps=4", "generation.arrange.section_tries=1"])
    return StudioEngine(cfg, cache=corpus_cache, out_dir=tmp_path_factory.mktemp("arrange-out"))


@pytest.fixture(scope="module")
def streamed(engine):
    return list(engine.arrange_stream(PLAN, seed=2, candidates=2))


def test_a_piece_streams_each_section_as_it_is_written_then_the_whole(streamed):
    sections, (kind, view) = streamed[:-1], streamed[-1]
    assert [(u[0], u[1], u[2]) for u in sections] == [("section", 0, 3), ("section", 1, 3), ("section", 2, 3)]
    assert [u[3]["asked"] for u in sections] == ["BLUE", "RED", "VIOLET"]
    assert kind == "done" and isinstance(view, ArrangementView) and not view.stopped
    assert [s["bars"] for s in view.sections] == [4, 8, 4] and view.sections == [u[3] for u in sections]
    assert len(view.joins) == 2 and view.corpus_joins["axis_jump"]["median"] > 0
    # the roll: one region per section in its asked mode's colour, a bar line per bar, every note placed
    regions = view.notes.regions
    assert [(r["start"], r["end"], r["mode"]) for r in regions] == [(0, 16, "BLUE"), (16, 48, "RED"),
                                                                    (48, 64, "VIOLET")]
    assert view.notes.bar_lines == [4.0 * b for b in range(17)]
    assert len(view.notes.pitch) == sum(len(s.segment.notes) for s in view.piece.sections)


def test_the_piece_files_hold_its_sections_and_its_report(streamed):
    view = streamed[-1][1]
    score = Score(view.midi_path)
    assert [m.text for m in score.markers][:3] == ["1 BLUE diffusion", "2 RED autoregressive", "3 VIOLET vae"]
    assert [m.time for m in score.markers][:3] == [0, 4 * 4 * 480, 12 * 4 * 480]
    assert sum(len(t.notes) for t in score.tracks) == len(view.notes.pitch)
    report = json.loads(open(view.report_path).read())
    assert [s["asked"] for s in report["sections"]] == ["BLUE", "RED", "VIOLET"] and report["seed"] == 2
    assert report["plan"]["sections"][1]["engine"] == "autoregressive"
    assert json.loads(open(view.plan_path).read())["title"] == "A test piece"
    assert view.midi_path.endswith("piece.mid") and (view.wav_path is None) == (not view.notes.pitch)


def test_regenerating_the_middle_section_keeps_the_first_and_the_last_bars_of_the_third(engine, streamed):
    view = streamed[-1][1]
    edited = {**PLAN, "sections": [PLAN["sections"][0], {**PLAN["sections"][1], "mode": "YELLOW"}, PLAN["sections"][2]]}
    again = engine.arrange_regenerate(view, 1, edited, candidates=2)
    assert [s["asked"] for s in again.sections] == ["BLUE", "YELLOW", "VIOLET"] and again.regenerations == 1
    old, new = view.piece.sections, again.piece.sections
    assert np.array_equal(new[0].segment.notes, old[0].segment.notes)
    later = [n for n in new[2].segment.notes if n["start"] >= 2 * new[2].segment.bar_length]
    kept = [n for n in old[2].segment.notes if n["start"] >= 2 * old[2].segment.bar_length]
    assert [tuple(n) for n in later] == [tuple(n) for n in kept]         # only its opening 2 bars are rewritten
    assert again.midi_path != view.midi_path and again.seed == view.seed


def test_regenerating_says_why_it_cannot(engine, streamed):
    view = streamed[-1][1]
    moved = {**PLAN, "sections": [PLAN["sections"][0], PLAN["sections"][1], {**PLAN["sections"][2], "bars": 8}]}
    with pytest.raises(StudioError, match="section 3 changed since the piece was written"):
        engine.arrange_regenerate(view, 1, moved)
    with pytest.raises(StudioError, match="the number of sections changed"):
        engine.arrange_regenerate(view, 0, {**PLAN, "sections": PLAN["sections"][:2]})
    with pytest.raises(StudioError, match="there is no section 5"):
        engine.arrange_regenerate(view, 4, PLAN)
    with pytest.raises(StudioError, match="generate the piece first"):
        engine.arrange_regenerate(ArrangementView(**{**view.__dict__, "piece": None}), 0, PLAN)


def test_bad_plans_and_missing_engines_are_named_before_anything_is_written(engine, tmp_path):
    with pytest.raises(StudioError, match="section 2: bars must be one of 4, 8, 16"):
        list(engine.arrange_stream({"sections": [PLAN["sections"][0], {**PLAN["sections"][1], "bars": 5}]}))
    bare = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), cache=engine.cache,
                        out_dir=tmp_path / "out")
    with pytest.raises(StudioError, match="no autoregressive or diffusion or vae checkpoint is installed"):
        list(bare.arrange_stream(PLAN))
    with pytest.raises(StudioError, match="candidates per window must lie in 1..32"):
        list(engine.arrange_stream(PLAN, candidates=0))


def test_plans_load_from_the_examples_and_files_and_save_as_files(engine, tmp_path):
    examples = engine.example_plans()
    assert {"blue-to-red", "green-dance"} <= set(examples)
    for values in examples.values():   # each checks, and reads back as itself
        checked = engine.checked_plan(values)
        assert checked["title"] == values["title"] and engine.checked_plan(checked) == checked
    saved = engine.plan_file(PLAN)
    assert engine.read_plan(saved) == engine.checked_plan(PLAN)
    assert engine.checked_plan(PLAN)["title"] == "A test piece"
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(StudioError, match="'broken.json' is not a JSON plan"):
        engine.read_plan(str(broken))


def test_stop_ends_the_piece_after_the_section_being_written(engine):
    updates = engine.arrange_stream(PLAN, seed=3, candidates=1, run_id="stop-me")
    first = next(updates)
    assert first[:2] == ("section", 0) and engine.request_stop("stop-me")
    rest = list(updates)
    view = rest[-1][1]
    assert view.stopped and len(view.sections) < 3 and not engine.request_stop("stop-me")
