"""Piece plans (engines/arrange/plan.py): what a section inherits, round trips, and the message bad input gets."""
import json

import pytest

from engines.arrange.plan import SectionPlan, load_plan, parse_key, piece_plan, plan_dict
from engines.errors import StudioError

PLAN = {"tempo": 96, "key": "D minor", "metre": "4/4", "title": "a note of our own",
        "sections": [{"bars": 8, "mode": "blue", "engine": "diffusion", "axes": {"energy": 0.3, "valence": -0.5}},
                     {"bars": 4, "mode": "RED", "engine": "autoregressive", "tempo": 120, "key": "A",
                      "rebracketing": 0.7},
                     {"bars": 16, "engine": "vae", "axes": {"intimacy": 0.9}, "metre": "3/4"}]}


def test_sections_keep_the_piece_and_previous_sections_tempo_key_and_metre_unless_they_set_their_own():
    plan = piece_plan(PLAN)
    first, second, third = plan.sections
    assert plan.bars == 28 and (plan.tempo, plan.key, plan.metre) == (96.0, "D minor", "4/4")
    assert plan.title == "a note of our own"
    assert first == SectionPlan(bars=8, engine="diffusion", mode="BLUE", axes={"energy": 0.3, "valence": -0.5},
                                tempo=96.0, tonic="D", scale="minor", metre="4/4")
    # its own tempo and tonic; a tonic alone leaves major or minor to the engine
    assert (second.tempo, second.key, second.metre, second.scale) == (120.0, "A", "4/4", None)
    assert second.attributes() == {"rebracketing": 0.7}
    # no mode: the axes decide; tempo and key from the section before, its own metre
    assert (third.mode, third.tempo, third.key, third.metre) == ("WHITE", 120.0, "A", "3/4")
    assert third.attributes() == {"intimacy": 0.9}


def test_a_plan_round_trips_through_json_and_a_file(tmp_path):
    plan = piece_plan(PLAN)
    assert piece_plan(json.loads(json.dumps(plan_dict(plan)))) == plan
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(PLAN))
    assert load_plan(path) == plan
    bare = piece_plan({"sections": [{"bars": 4, "engine": "vae", "mode": "GREEN"}]})
    assert (bare.tempo, bare.key, bare.metre, bare.sections[0].tempo) == (None, None, None, None)
    assert plan_dict(bare) == {"sections": [{"bars": 4, "engine": "vae", "mode": "GREEN"}]}


def test_keys_read_as_musicians_write_them():
    assert parse_key("Bb major", "x") == ("Bb", "major") and parse_key("f# MINOR", "x") == ("F#", "minor")
    assert parse_key("g", "x") == ("G", None) and parse_key("", "x") == (None, None)


@pytest.mark.parametrize("change, message", [
    ({"sections": []}, "a non-empty list of sections"),
    ({"sections": [{"bars": 5, "engine": "vae"}]}, "section 1: bars must be one of 4, 8, 16, got 5"),
    ({"sections": [{"bars": 4, "engine": "piano"}]}, "section 1: engine must be one of vae, diffusion"),
    ({"sections": [{"bars": 4, "engine": "vae", "mode": "PINK"}]}, "section 1: unknown mode 'PINK'"),
    ({"sections": [{"bars": 4, "engine": "vae", "axes": {"joy": 1}}]}, "section 1: unknown axis 'joy'"),
    ({"sections": [{"bars": 4, "engine": "vae", "axes": {"energy": 2}}]}, "section 1: energy must lie in 0..1"),
    ({"sections": [{"bars": 4, "engine": "vae", "axes": {"valence": "sad"}}]}, "valence must be a number in -1..1"),
    ({"sections": [{"bars": 4, "engine": "vae", "rebracketing": -0.1}]}, "rebracketing must lie in 0..1"),
    ({"sections": [{"bars": 4, "engine": "vae", "metre": "7/4"}]}, "section 1: unknown metre '7/4'"),
    ({"sections": [{"bars": 4, "engine": "vae", "key": "H minor"}]}, "section 1: unknown tonic 'H'"),
    ({"sections": [{"bars": 4, "engine": "vae", "key": "D dorian"}]}, "key must be a tonic and major or minor"),
    ({"tempo": 500, "sections": [{"bars": 4, "engine": "vae"}]}, "the piece: tempo must lie in 30..300"),
    ({"sections": [{"bars": 4, "engine": "vae"}] * 17}, "at most 16 sections"),
    ({"sections": ["BLUE"]}, "section 1 must be an object"),
])
def test_bad_plans_say_what_is_wrong(change, message):
    with pytest.raises(StudioError, match=message.replace("(", r"\(").replace(".", r"\.")):
        piece_plan(change)


def test_plan_files_that_cannot_be_read_say_why(tmp_path):
    with pytest.raises(StudioError, match="no plan file at"):
        load_plan(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{sections: [")
    with pytest.raises(StudioError, match="'bad.json' is not a JSON plan"):
        load_plan(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(StudioError, match="a plan must be an object"):
        load_plan(tmp_path / "list.json")
