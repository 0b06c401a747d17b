"""Arranging a piece (engines/arrange/arranger.py, joins.py) with the tiny engines: sections written window by
window, each following the bars before it, the piece's MIDI, the joins and the command."""
import json

import numpy as np
import pytest

from engines.arrange import arranger as arranging
from engines.arrange.arranger import Arranger
from engines.arrange.joins import corpus_join_jumps, join_jump
from engines.arrange.plan import piece_plan
from engines.config import load_config
from engines.errors import StudioError
from engines.generation import GENERATORS
from engines.generation.verify import Verifier
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.music.notes import bars_window
from tests.conftest import segment

FAST = ["generation.arrange.diffusion_steps=4", "generation.arrange.section_tries=1"]   # the requests are counted
PLAN = {"tempo": 100, "key": "G major", "metre": "3/4",
        "sections": [{"bars": 8, "mode": "BLUE", "engine": "diffusion"},
                     {"bars": 4, "mode": "RED", "engine": "autoregressive"},
                     {"bars": 4, "mode": "VIOLET", "engine": "vae", "key": "E minor"}]}


@pytest.fixture(scope="module")
def generators(tiny_checkpoints):
    return {name: GENERATORS[name].load(tiny_checkpoints[name]) for name in GENERATORS}


@pytest.fixture(scope="module")
def arranged(generators):
    """The plan arranged with the raw tiny engines, and every request the arranger made."""
    requests = []
    draw = arranging.draw

    def recording(generator, request, *args, **kw):
        requests.append(request)
        return draw(generator, request, *args, **kw)

    arranging.draw = recording
    try:
        piece = Arranger(generators, load_config(overrides=FAST)).arrange(piece_plan(PLAN), seed=3)
    finally:
        arranging.draw = draw
    return piece, requests


def test_each_section_is_written_window_by_window_each_window_keeping_the_bars_before_it(arranged):
    piece, requests = arranged
    assert [s.segment.num_bars for s in piece.sections] == [8, 4, 4] and piece.plan.bars == 16
    assert all((s.segment.ts_num, s.segment.ts_den, s.segment.tempo_qpm) == (3, 4, 100.0) for s in piece.sections)
    # diffusion: a fresh window of 4 bars, then two that keep 2 bars and write 2; the GPT follows the diffusion
    # section's last 2 bars (2 windows); the VAE varies the last whole window before it (1 window)
    assert [s.windows for s in piece.sections] == [3, 2, 1]
    assert [(r.engine, r.keep_bars) for r in requests] == [("diffusion", None), ("diffusion", [1, 2]),
                                                           ("diffusion", [1, 2]), ("autoregressive", [1, 2]),
                                                           ("autoregressive", [1, 2]), ("vae", None)]
    first, gpt_first, vae = requests[0], requests[3], requests[5]
    assert first.init_midi is None and first.metre == "3/4" and (first.tonic, first.scale) == ("G", "major")
    last_two = bars_window(piece.sections[0].segment, 6, 2)
    assert gpt_first.init_midi.num_bars == 2 and np.array_equal(gpt_first.init_midi.notes, last_two.notes)
    assert vae.init_midi.num_bars == 4 and (vae.tonic, vae.scale) == ("E", "minor")
    assert [r.mode for r in requests] == ["BLUE"] * 3 + ["RED"] * 2 + ["VIOLET"]
    # generation.arrange.candidates: the GPT's 4 per window, the others their engine's own (None)
    assert [r.candidates for r in requests] == [None] * 3 + [4, 4] + [None]


def test_the_piece_is_one_midi_with_a_marker_and_its_key_at_each_section_start(arranged, tmp_path):
    import pretty_midi
    from symusic import Score

    piece, _ = arranged
    files = piece.write(tmp_path, render=True)
    score = Score(files["midi"])
    starts = [0, 8 * 3 * 480, 12 * 3 * 480]                      # bars of 3/4 at 480 ticks a quarter
    markers = [(m.time, m.text) for m in score.markers]
    assert markers[:3] == list(zip(starts, ["1 BLUE diffusion", "2 RED autoregressive", "3 VIOLET vae"]))
    assert [(k.time, k.key, k.tonality) for k in score.key_signatures] == [(0, 1, 0), (starts[2], 1, 1)]
    notes = sum(len(s.segment.notes) for s in piece.sections)
    assert sum(len(t.notes) for t in score.tracks) == notes
    midi = pretty_midi.PrettyMIDI(files["midi"])
    assert sum(len(i.notes) for i in midi.instruments) == notes
    assert [(ts.numerator, ts.denominator) for ts in midi.time_signature_changes] == [(3, 4)] * 3
    import soundfile

    audio, rate = soundfile.read(files["audio"])
    assert rate == 44100 and len(audio) / rate >= 16 * 3 * 60 / 100       # 16 bars of 3/4 at 100 BPM


def test_the_report_says_per_section_what_was_asked_and_heard_and_how_each_join_moves(arranged):
    piece, _ = arranged
    report = piece.report()
    assert [(s["asked"], s["bars"], s["engine"]) for s in report["sections"]] == [
        ("BLUE", 8, "diffusion"), ("RED", 4, "autoregressive"), ("VIOLET", 4, "vae")]
    heard = [ChromaticAnalyzer().analyze(s.segment).mode if len(s.segment.notes) else None for s in piece.sections]
    assert [s["heard"] for s in report["sections"]] == heard            # the analyzer on each whole section
    assert [j["after_section"] for j in report["joins"]] == [1, 2]
    assert all(j["axis_jump"] >= 0 and j["density_jump"] >= 0 for j in report["joins"])
    assert report["bars"] == 16 and report["seconds"] >= sum(s["seconds"] for s in report["sections"]) * 0.99


def _recorded(arranger, call):
    """call(arranger)'s result and every request it drew."""
    requests, plain = [], arranging.draw

    def recording(generator, request, *args, **kw):
        requests.append(request)
        return plain(generator, request, *args, **kw)

    arranging.draw = recording
    try:
        return call(arranger), requests
    finally:
        arranging.draw = plain


def test_regenerating_a_section_rewrites_it_and_the_opening_after_it_and_keeps_the_rest(arranged, generators):
    piece, _ = arranged
    arranger = Arranger(generators, load_config(overrides=FAST))
    edited = piece_plan({**PLAN, "sections": [{**PLAN["sections"][0], "mode": "GREEN"}, *PLAN["sections"][1:]]})
    again, requests = _recorded(arranger, lambda a: a.regenerate(piece, 0, seed=41, section=edited.sections[0]))
    first, gpt, vae = again.sections
    assert again.plan.sections[0].mode == "GREEN" and first.plan.mode == "GREEN" and first.segment.num_bars == 8
    assert [(r.engine, r.mode) for r in requests] == [("diffusion", "GREEN")] * 3 + [("autoregressive", "RED")]
    # the GPT section's opening 2 bars follow the new ending; its last 2 bars and the VAE section stay
    assert np.array_equal(requests[-1].init_midi.notes, bars_window(first.segment, 6, 2).notes)
    assert requests[-1].keep_bars == [1, 2] and gpt.segment.num_bars == 4 and gpt.windows == 3
    assert np.array_equal(bars_window(gpt.segment, 2, 2).notes, bars_window(piece.sections[1].segment, 2, 2).notes)
    assert vae is piece.sections[2] and again.report()["sections"][1]["heard"] == gpt.heard
    with pytest.raises(StudioError, match="there is no section 4"):
        arranger.regenerate(piece, 3, seed=1)


def test_a_diffusion_opening_is_rejoined_between_the_new_ending_and_its_own_next_bar(generators):
    arranger = Arranger(generators, load_config(overrides=FAST))
    plan = piece_plan({"metre": "4/4", "sections": [{"bars": 4, "mode": "RED", "engine": "vae"},
                                                    {"bars": 4, "mode": "BLUE", "engine": "diffusion"}]})
    piece = arranger.arrange(plan, seed=2)
    again, requests = _recorded(arranger, lambda a: a.regenerate(piece, 0, seed=9))
    window = requests[-1].init_midi       # [the VAE's new last bar | 2 bars to write | the diffusion bar 3]
    assert requests[-1].engine == "diffusion" and requests[-1].keep_bars == [1, 4] and window.num_bars == 4
    assert np.array_equal(bars_window(window, 0, 1).notes, bars_window(again.sections[0].segment, 3, 1).notes)
    assert np.array_equal(bars_window(window, 3, 1).notes, bars_window(piece.sections[1].segment, 2, 1).notes)
    assert np.array_equal(bars_window(again.sections[1].segment, 2, 2).notes,
                          bars_window(piece.sections[1].segment, 2, 2).notes)


def test_a_sections_opening_is_ranked_by_how_smoothly_it_joins(generators):
    """With candidates to choose from, the window that opens a section costs join_weight x its join_cost."""
    from engines.arrange.joins import join_cost

    plan = piece_plan({"metre": "4/4", "sections": [{"bars": 4, "mode": "BLUE", "engine": "diffusion"},
                                                    {"bars": 4, "mode": "RED", "engine": "diffusion"}]})
    costs = []
    plain = arranging.draw

    def recording(generator, request, settings, verifier=None, cost=None, **kw):
        result = plain(generator, request, settings, verifier, cost=cost, **kw)
        costs.append(None if cost is None else (cost(result.raw), result.raw))
        return result

    arranging.draw = recording
    try:
        cfg = load_config(overrides=FAST + ["generation.arrange.join_weight=2", "generation.arrange.section_tries=1"])
        piece = Arranger(generators, cfg, Verifier.for_config(cfg), candidates=3).arrange(plan, seed=5)
    finally:
        arranging.draw = plain
    # section 1's one window, then section 2's two (it keeps 2 bars of section 1 and writes 2, twice): only the
    # window that opens section 2 is charged
    assert [c is None for c in costs] == [True, False, True]
    charged, raw = costs[1]
    before = piece.sections[0].segment
    assert charged == pytest.approx([2 * join_cost(before, bars_window(c, 2, 2)) for c in raw])


def test_with_fade_a_longer_sections_opening_moves_from_the_mode_before(generators):
    plan = piece_plan({"metre": "4/4", "sections": [{"bars": 4, "mode": "BLUE", "engine": "diffusion"},
                                                    {"bars": 8, "mode": "RED", "engine": "diffusion"},
                                                    {"bars": 4, "mode": "GREEN", "engine": "diffusion"}]})
    # windows: BLUE 1, RED 4 (each keeps 2 bars and writes 2), GREEN 2
    for fade, expected in ((False, [None] * 7), (True, [None, "BLUE", None, None, None, None, None])):
        cfg = load_config(overrides=FAST + [f"generation.arrange.fade={str(fade).lower()}"])
        _, requests = _recorded(Arranger(generators, cfg), lambda a: a.arrange(plan, seed=2))
        # a 4-bar section has no room to move: GREEN's opening does not fade
        assert [r.fade_from for r in requests] == expected


def test_a_sections_opening_aims_between_the_bars_before_and_its_modes_interior(generators):
    """With generation.arrange.bridge, the window that opens a section after another aims every axis the section
    leaves free at the last bars' reading moved that far toward the engine's target for the mode; the section's
    own axes stay as asked, and every other window aims where any request does."""
    from engines.music.analyzer import AXES

    diffusion = generators["diffusion"]
    target = diffusion.axis_target("RED")
    assert sorted(target) == sorted(AXES) and -1 <= target["valence"] <= 1
    assert target["energy"] == pytest.approx(diffusion.model.mode_targets["RED"]["energy"], abs=1e-4)
    assert generators["vae"].axis_target("RED") == {}    # the base: an engine aims at no axis target of its own
    plan = piece_plan({"metre": "4/4", "sections": [{"bars": 4, "mode": "BLUE", "engine": "diffusion"},
                                                    {"bars": 4, "mode": "RED", "engine": "diffusion",
                                                     "axes": {"energy": 0.9}}]})
    for bridge in ("null", "0.0", "0.5"):
        cfg = load_config(overrides=FAST + [f"generation.arrange.bridge={bridge}"])
        piece, requests = _recorded(Arranger(generators, cfg), lambda a: a.arrange(plan, seed=4))
        # windows: BLUE 1, RED 2; only RED's opening bridges
        assert [r.attributes for r in requests[::2]] == [None, {"energy": 0.9}]
        if bridge == "null":
            assert requests[1].attributes == {"energy": 0.9}
            continue
        last = bars_window(piece.sections[0].segment, 2, 2)
        heard = ChromaticAnalyzer().analyze(last).axes
        expected = {axis: heard[axis] + float(bridge) * (target[axis] - heard[axis]) for axis in AXES}
        expected["energy"] = 0.9
        assert requests[1].attributes == pytest.approx(expected, abs=1e-4)


class HearsOnly:
    """A judge that hears every segment in one mode."""

    data = {"segment_bars": 4}

    def __init__(self, mode: str):
        self.mode = mode

    def run(self, segments):
        probabilities = np.zeros((len(segments), len(MODES)))
        probabilities[:, MODES.index(self.mode)] = 1.0
        return probabilities, np.zeros((len(segments), 7)), np.zeros((len(segments), 4))


def test_a_section_the_analyzer_hears_in_another_mode_is_written_again_and_the_report_keeps_the_first(generators):
    plan = piece_plan({"metre": "4/4", "sections": [{"bars": 4, "mode": "RED", "engine": "vae"}]})
    cfg = load_config(overrides=FAST + ["generation.arrange.section_tries=3"])
    deaf = Arranger(generators, cfg, Verifier(judge=HearsOnly("RED")), candidates=1)
    first = deaf._written(plan.sections[0], None, 1)
    deaf._heard = lambda segment: "BLACK"   # the analyzer hears another mode in every one written
    piece, requests = _recorded(deaf, lambda a: a.arrange(plan, seed=1))
    assert [r.seed for r in requests] == [1, 101, 201] and piece.sections[0].tries == 3
    # none heard as asked, and the judge rates all three alike: the first is kept
    assert np.array_equal(piece.sections[0].segment.notes, first.segment.notes)
    report = piece.report()["sections"][0]
    assert report["tries"] == 3 and report["heard_first_try"] == report["heard"] == "BLACK"
    assert len(report["verifications"]) == 3
    # heard as asked at the second: it is kept and no third is written, though the judge rates them alike
    heard = iter(["BLACK", "RED"])
    second = Arranger(generators, cfg, Verifier(judge=HearsOnly("RED")), candidates=1)
    second._heard = lambda segment: next(heard)
    piece, requests = _recorded(second, lambda a: a.arrange(plan, seed=1))
    assert [r.seed for r in requests] == [1, 101] and piece.sections[0].tries == 2
    assert not np.array_equal(piece.sections[0].segment.notes, first.segment.notes)
    assert piece.report()["sections"][0]["heard_first_try"] == "BLACK" and piece.sections[0].heard == "RED"
    # the judge ranks the tries the analyzer heard in another mode: the one it hears as asked wins
    scores = iter([-5.0, -1.0, -3.0])
    ranked = Arranger(generators, cfg, Verifier(judge=HearsOnly("RED")), candidates=1)
    ranked._heard = lambda segment: "BLACK"
    ranked._judge_score = lambda segment, mode: next(scores)
    middle = ranked._written(plan.sections[0], None, 101)
    piece, _ = _recorded(ranked, lambda a: a.arrange(plan, seed=1))
    assert np.array_equal(piece.sections[0].segment.notes, middle.segment.notes)


def test_a_join_measures_how_far_the_bars_on_either_side_move():
    calm = segment([(i * 24, 24, (60, 64)[i % 2], 60) for i in range(8)], bars=4)    # the same two half notes a bar
    busy = segment([(i * 3, 3, 72 + i % 7, 110) for i in range(64)], bars=4)         # 16ths, loud and high
    assert join_jump(calm, calm) == {"axis_jump": 0.0, "density_jump": 0.0}
    jump = join_jump(calm, busy)
    assert jump["density_jump"] == pytest.approx(4.0 - 0.5) and jump["axis_jump"] > 0.05   # notes per quarter


def test_the_corpus_measures_the_same_at_its_own_phrase_boundaries(corpus_cache):
    real = corpus_join_jumps(corpus_cache, pairs=40, seed=1)
    assert real["pairs"] == 40 and real["split"] == "test"
    for key in ("axis_jump", "density_jump"):
        assert 0 <= real[key]["p25"] <= real[key]["median"] <= real[key]["p75"]
    assert real == corpus_join_jumps(corpus_cache, pairs=40, seed=1)


def test_a_plan_that_needs_an_engine_not_installed_says_so(generators):
    plan = piece_plan({"sections": [{"bars": 4, "mode": "RED", "engine": "vae"}]})
    with pytest.raises(StudioError, match="no vae checkpoint is installed"):
        Arranger({"diffusion": generators["diffusion"]}, load_config()).arrange(plan)


@pytest.mark.slow
def test_the_arrange_command_writes_the_piece_and_its_report(tiny_checkpoints, tmp_path, capsys):
    from engines.cli import main

    plan = tmp_path / "plan.json"
    sections = [{"bars": 4, "mode": "GREEN", "engine": "diffusion"}, {"bars": 4, "mode": "RED", "engine": "vae"}]
    plan.write_text(json.dumps({"metre": "4/4", "sections": sections}))
    folder = tiny_checkpoints["vae"].parent
    assert main(["arrange", "--plan", str(plan), "--out", str(tmp_path / "piece"), "--json", "--candidates", "2",
                 "--set", f"model.checkpoints_dir={folder}", "--set", "generation.arrange.diffusion_steps=4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [s["asked"] for s in report["sections"]] == ["GREEN", "RED"] and len(report["joins"]) == 1
    assert all(v.get("candidates") == 2 for s in report["sections"] for v in s["verifications"])
    assert json.loads((tmp_path / "piece" / "report.json").read_text())["sections"] == report["sections"]
    assert (tmp_path / "piece" / "piece.mid").stat().st_size > 0 and report["files"]["audio"] is None
    assert main(["arrange", "--plan", str(tmp_path / "none.json"), "--out", str(tmp_path / "x")]) == 2
    assert "no plan file at" in capsys.readouterr().err
