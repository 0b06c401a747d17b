"""engines/generation: every engine behind one Generator interface, the copy index, and verified generation."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.evaluation.diversity import note_similarity
from engines.generation import GENERATORS, Request
from engines.generation.copies import CopyIndex
from engines.generation.verify import MAX_ROUNDS, Verifier, draw
from engines.music.analyzer import MODES
from engines.music.notes import NOTE_DTYPE, Segment, transpose_notes
from engines.settings import settings_schema


def test_every_engine_has_a_tiny_checkpoint_for_these_tests(tiny_checkpoints):
    assert set(tiny_checkpoints) == set(GENERATORS)   # a new engine needs one in conftest.py's tiny_checkpoints


@pytest.fixture(scope="module")
def cfg():
    return load_config()


@pytest.fixture(scope="module")
def verifier(cfg):
    """The shipped judge and the copy index of the corpus' train split."""
    return Verifier.for_config(cfg)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GENERATORS))
def test_every_generator_loads_runs_and_repeats_itself_for_a_seed(name, tiny_checkpoints, cfg):
    generator = GENERATORS[name].load(tiny_checkpoints[name])
    settings = generator.settings_for(cfg, {"steps": 4} if name == "diffusion" else None)
    request = Request(engine=name, mode="BLUE", n=2, seed=7, settings=settings)
    first = generator.run(request)
    assert len(first) == 2 and all(isinstance(s, Segment) and s.notes.dtype == NOTE_DTYPE for s in first)
    for segment in first:
        assert 1 <= segment.num_bars <= 4 and segment.tempo_qpm > 0
        if len(segment.notes):
            assert segment.notes["pitch"].max() <= 127   # REMI's range reaches a semitone past the piano
            assert (segment.notes["duration"] > 0).all() and segment.notes["start"].max() < segment.length
    again = generator.run(request)
    assert [s.notes.tolist() for s in again] == [s.notes.tolist() for s in first]
    assert generator.Settings is type(settings) and settings.candidates == {"vae": 16}.get(name, 8)


@pytest.mark.parametrize("name", list(GENERATORS))
def test_every_settings_field_shown_in_the_studio_passes_its_own_check(name, cfg):
    settings = GENERATORS[name].settings_for(cfg)
    fields = {f.name: f for f in settings.__dataclass_fields__.values()}
    for spec in settings_schema(settings):
        predicate, _ = fields[spec["name"]].metadata.get("check", (lambda v: True, ""))
        assert predicate(spec["value"]), spec["name"]
        if spec["kind"] == "slider" and spec["value"] is None:   # left to the mode: each mode's value fits
            from engines.music.analyzer import MODES

            generator = GENERATORS[name].load(f"{cfg.model.checkpoints_dir}/{name}.pt")
            for mode in (*MODES, "WHITE"):
                value = getattr(generator.for_mode(settings, mode), spec["name"])
                assert predicate(value) and spec["minimum"] <= value <= spec["maximum"], (spec["name"], mode)
        elif spec["kind"] == "slider":
            assert spec["minimum"] <= spec["value"] <= spec["maximum"], spec["name"]


def test_the_live_view_shows_the_first_rows_of_a_batch(tiny_checkpoints, cfg, verifier):
    generator = GENERATORS["diffusion"].load(tiny_checkpoints["diffusion"])
    settings = generator.settings_for(cfg, {"steps": 3})
    previews = []
    result = draw(generator, Request(engine="diffusion", mode="RED", n=2, seed=1, candidates=3), settings,
                  verifier, on_step=lambda step, total, preview: previews.append((step, total, preview)) and False)
    rounds = len(result.raw) // 6     # 6 candidates a round; more rounds while the judge hears too few as RED
    assert len(result.raw) == 6 * rounds and [(s, t) for s, t, _ in previews] == [(0, 3), (1, 3), (2, 3)] * rounds
    assert all(p().sounding.shape == (2, 64, 88) and len(p().bar_steps) == 2 for _, _, p in previews)
    assert len(result.segments) == 2 and result.candidates == 3
    # a live view is built only when it is shown (issue 20, defect 5: at every GPT token it cost 4x the time)
    built = []
    plain_preview = generator.preview
    generator.preview = lambda state, rows: built.append(rows) or plain_preview(state, rows)
    try:
        draw(generator, Request(engine="diffusion", mode="RED", n=2, seed=1, candidates=1), settings, verifier,
             on_step=lambda step, total, preview: False)
        assert built == []
        draw(generator, Request(engine="diffusion", mode="RED", n=2, seed=1, candidates=1), settings, verifier,
             on_step=lambda step, total, preview: step == 1 and preview() is None)
        assert built == [2]                                        # the one step that looked
    finally:
        generator.preview = plain_preview


def test_a_cost_given_to_draw_takes_from_each_candidates_score(tiny_checkpoints, cfg, verifier):
    generator = GENERATORS["diffusion"].load(tiny_checkpoints["diffusion"])
    settings = generator.settings_for(cfg, {"steps": 3})
    request = Request(engine="diffusion", mode="RED", n=1, seed=4, candidates=6)
    plain = draw(generator, request, settings, verifier)
    # every candidate but the fewest-noted (the judge's last pick, most likely) costs a fortune
    fewest = min(range(len(plain.raw)), key=lambda i: (len(plain.raw[i].notes) == 0, len(plain.raw[i].notes)))
    wanted = plain.raw[fewest].notes.tolist()
    costed = draw(generator, request, settings, verifier,
                  cost=lambda candidates: [0.0 if c.notes.tolist() == wanted else 1e6 for c in candidates])
    assert [s.notes.tolist() for s in costed.raw[:6]] == [s.notes.tolist() for s in plain.raw[:6]]  # same draws
    assert costed.segments[0].notes.tolist() == wanted and costed.verifications[0].rank == 1


def test_without_a_judge_one_candidate_per_result_is_drawn_and_copies_are_replaced(tiny_checkpoints, cfg,
                                                                                  verifier):
    generator = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    settings = generator.settings_for(cfg)
    plain = Verifier(copies=verifier.copies)   # the copy index, no judge
    result = draw(generator, Request(engine="vae", mode="RED", n=3, seed=2), settings, plain)
    assert len(result.raw) == 3 and result.candidates == 1 and not result.judged   # nothing to rank by
    assert result.summary() == "3 candidates checked for copies, not ranked (no judge installed); showing 3."
    raw = draw(generator, Request(engine="vae", mode="RED", n=3, seed=2, candidates=1), settings, plain)
    # the same draws (an empty one is shown last)
    assert sorted(s.notes.tolist() for s in raw.segments) == sorted(s.notes.tolist() for s in result.segments)


def test_neighbouring_seeds_share_no_candidates(tiny_checkpoints, cfg, verifier):
    generator = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    settings = generator.settings_for(cfg)

    def drawn(seed):
        result = draw(generator, Request(engine="vae", mode="BLUE", n=2, seed=seed, candidates=4), settings, verifier)
        return {tuple(map(tuple, s.notes.tolist())) for s in result.raw if len(s.notes)}

    assert not drawn(0) & drawn(1)


def test_the_copy_index_finds_a_transposed_training_segment_at_once(cfg):
    cache = ensure_corpus_cache(cfg)
    index = CopyIndex.build(cache)
    row = int(index.rows[1234])
    copy = cache.segment(row)
    copy.notes = transpose_notes(copy.notes, 5, 21, 108)
    similarity, found = index.nearest(copy)
    assert similarity == 1.0 and note_similarity(copy, cache.segment(found)) == 1.0
    assert index.is_copy(copy)
    altered = replace(copy, notes=copy.notes[::2].copy())   # half its notes: no longer a copy
    assert not index.is_copy(altered)
    assert index.nearest(Segment(notes=np.zeros(0, NOTE_DTYPE))) == (0.0, None)


def test_the_copy_index_agrees_with_an_exhaustive_search(prepared):
    from engines.data.cache import SegmentCache

    _, _, _, out, _ = prepared
    cache = SegmentCache(out)
    index = CopyIndex.build(cache, shortlist=len(cache))   # small corpus: the shortlist holds every match
    train = [int(r) for r in index.rows]
    for row in range(len(cache)):
        query = cache.segment(row)
        exhaustive = max(note_similarity(query, cache.segment(t)) for t in train)
        found = index.nearest(query)[0]
        assert found <= exhaustive + 1e-9
        if exhaustive >= 0.8:   # every near copy is found (training rows find themselves: 1.0)
            assert found == pytest.approx(exhaustive)


class CorpusEcho:
    """A stand-in generator for the verification tests: every candidate it draws is a training segment (a
    copy) but the sixth, which has every other note removed (half as similar)."""

    name, live, max_batch = "echo", False, 4
    Settings = type(None)

    def for_mode(self, settings, mode):   # nothing of its sampling depends on the mode
        return settings

    def __init__(self, cache, rows):
        self.cache, self.rows, self.drawn = cache, rows, 0

    def asked_mode(self, request, settings):
        return request.mode

    def candidates(self, request, settings):
        return request.candidates

    def diversify(self, settings, round_):
        return settings

    def run(self, request, on_step=None):
        out = []
        for _ in range(request.n):
            segment = self.cache.segment(int(self.rows[self.drawn % len(self.rows)]))
            if self.drawn == 5:
                segment.notes = segment.notes[::2].copy()
            out.append(segment)
            self.drawn += 1
        return out


def test_verification_never_returns_a_copy_and_counts_what_it_rejected(cfg, verifier):
    cache = ensure_corpus_cache(cfg)
    echo = CorpusEcho(cache, cache.split_indices("train")[:50])
    result = draw(echo, Request(engine="echo", mode="RED", n=2, seed=0, candidates=4), None, verifier)
    # one non-copy in the first 8: three more rounds of 8 are drawn looking for a second, all copies
    assert len(result.raw) == 8 * MAX_ROUNDS and result.rejected_copies == 8 * MAX_ROUNDS - 1
    assert len(result.segments) == 1 and result.segments[0] is result.raw[5]   # fewer results, never a copy
    assert result.verifications[0].copy_similarity < 0.8
    line = result.summary()
    assert f"{8 * MAX_ROUNDS - 1} rejected as copies of training segments" in line
    assert line.endswith("only 1 of the 2 asked for: every other candidate was a copy.")
    echo.drawn = 0
    unchecked = draw(echo, Request(engine="echo", mode="RED", n=2, seed=0, candidates=1), None, verifier)
    assert unchecked.rejected_copies == 0
    assert unchecked.summary() == "Unchecked: one candidate per result (the raw model)."


def test_verified_results_are_the_judges_best_candidates(tiny_checkpoints, cfg, verifier):
    generator = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    settings = generator.settings_for(cfg)
    result = draw(generator, Request(engine="vae", mode="GREEN", n=3, seed=2, candidates=8), settings, verifier)
    scores = verifier.scores(result.raw, "GREEN", None)["score"]
    chosen = [next(i for i, s in enumerate(result.raw) if s is segment) for segment in result.segments]
    assert chosen == list(np.argsort(-scores, kind="stable")[:3])        # the three the judge scores highest
    probabilities = [v.judge_score for v in result.verifications]
    assert probabilities == sorted(probabilities, reverse=True)
    # 24 candidates, and 24 more a round (at most 4) while the judge hears fewer than 3 of them as GREEN
    assert [v.rank for v in result.verifications] == [1, 2, 3] and len(result.raw) in (24, 48, 72, 96)
    assert result.heard >= 3 or len(result.raw) == 96
    assert all(v.candidates == 8 and v.analyzer_mode in MODES for v in result.verifications)
    line = result.summary()
    assert line.startswith(f"{result.heard} of {len(result.raw)} candidates heard as GREEN by the judge")
    assert line.endswith("showing the best 3.")


def test_attribute_targets_move_the_ranking(tiny_checkpoints, cfg, verifier):
    generator = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    settings = generator.settings_for(cfg)
    low = draw(generator, Request(engine="vae", mode="WHITE", n=2, seed=4, candidates=16,
                                  attributes={"temporal_complexity": 0.0}), settings, verifier)
    high = draw(generator, Request(engine="vae", mode="WHITE", n=2, seed=4, candidates=16,
                                   attributes={"temporal_complexity": 1.0}), settings, verifier)
    assert all(v.judge_score is None for v in low.verifications)   # WHITE asks for no mode
    readings = verifier.judge_readings
    from engines.models.chromatic_judge import JUDGE_ATTRIBUTES

    column = JUDGE_ATTRIBUTES.index("temporal_complexity")
    assert readings(low.segments)[1][:, column].mean() < readings(high.segments)[1][:, column].mean()


def test_requests_that_cannot_run_say_why(tiny_checkpoints, cfg, verifier):
    vae = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    settings = vae.settings_for(cfg)
    with pytest.raises(StudioError, match="unknown mode 'PINK'"):
        draw(vae, Request(engine="vae", mode="PINK"), settings, verifier)
    with pytest.raises(StudioError, match="candidates per result must lie in 1..32"):
        draw(vae, Request(engine="vae", mode="RED", candidates=40), settings, verifier)
    with pytest.raises(StudioError, match="the VAE cannot keep bars"):
        draw(vae, Request(engine="vae", mode="RED", keep_bars=[1]), settings, verifier)
    gpt = GENERATORS["autoregressive"].load(tiny_checkpoints["autoregressive"])
    with pytest.raises(StudioError, match="the GPT continues after the first bars"):
        gpt.run(Request(engine="autoregressive", init_midi=Segment(notes=np.zeros(0, NOTE_DTYPE)), keep_bars=[2]))
    beam = gpt.settings_for(cfg, {"beam_width": 2})
    assert gpt.candidates(Request(engine="autoregressive", candidates=8), beam) == 1   # one deterministic result


def test_the_gpt_writes_in_the_tonic_asked_for(tiny_checkpoints, cfg):
    from engines.models.roll_decoding import segment_tonic

    gpt = GENERATORS["autoregressive"].load(tiny_checkpoints["autoregressive"])
    settings = gpt.settings_for(cfg, {"max_bars": 2})
    request = Request(engine="autoregressive", mode="RED", n=3, seed=5, settings=settings)
    written = [s for s in gpt.run(request) if len(s.notes)]
    assert written
    for tonic, pitch_class in (("G", 7), ("C", 0), ("Eb", 3)):
        moved = [s for s in gpt.run(replace(request, tonic=tonic)) if len(s.notes)]
        assert [segment_tonic(s) for s in moved] == [pitch_class] * len(written)
        for before, after in zip(written, moved):   # the same notes, moved by one interval
            shift = (after.notes["pitch"].astype(int) - before.notes["pitch"].astype(int)) % 12
            assert len(set(shift.tolist())) == 1
            assert np.array_equal(before.notes[["start", "duration"]], after.notes[["start", "duration"]])
    with pytest.raises(StudioError, match="unknown tonic 'H'"):
        gpt.run(replace(request, tonic="H"))


@pytest.mark.parametrize("name", list(GENERATORS))
def test_every_engine_writes_the_metre_tempo_instrument_and_dynamics_asked_for(name, tiny_checkpoints, cfg):
    generator = GENERATORS[name].load(tiny_checkpoints[name])
    settings = generator.settings_for(cfg, {"steps": 4} if name == "diffusion" else
                                      {"max_bars": 2} if name == "autoregressive" else {})
    for metre, num_den in (("3/4", (3, 4)), ("6/8", (6, 8))):
        request = Request(engine=name, mode="RED", n=3, seed=2, settings=settings, metre=metre, tempo=90,
                          instrument=41, dynamics="p")
        results = draw(generator, request, settings).segments
        assert [(s.ts_num, s.ts_den) for s in results] == [num_den] * 3
        assert {s.tempo_qpm for s in results} == {90.0} and {s.meta["program"] for s in results} == {40}
        for s in (s for s in results if len(s.notes) > 1):
            assert abs(s.notes["velocity"].mean() - 49) < 1.0


def test_a_segment_to_start_from_keeps_its_metre(tiny_checkpoints, cfg):
    diffusion = GENERATORS["diffusion"].load(tiny_checkpoints["diffusion"])
    settings = diffusion.settings_for(cfg, {"steps": 4})
    kept = Segment(notes=np.array([(0, 12, 60, 80, 0)], NOTE_DTYPE), ts_num=4, ts_den=4)
    with pytest.raises(StudioError, match="the segment to start from is in 4/4 and keeps its metre"):
        draw(diffusion, Request(engine="diffusion", mode="RED", n=1, init_midi=kept, keep_bars=[1], metre="3/4",
                                settings=settings), settings)
    assert draw(diffusion, Request(engine="diffusion", mode="RED", n=1, init_midi=kept, keep_bars=[1], metre="4/4",
                                   settings=settings), settings).segments[0].ts_num == 4


def test_evaluate_settings_name_sections_shared_keys_and_candidates(cfg):
    from engines.api.evaluation import with_settings

    changed = with_settings(cfg, {"candidates": 4, "temperature": 0.9, "diffusion": {"steps": 20, "metre": "3/4"}})
    assert changed.generation.verify.candidates == 4 and changed.generation.sampling.temperature == 0.9
    assert changed.generation.sampling.diffusion.steps == 20 and changed.generation.sampling.diffusion.metre == "3/4"
    assert changed.generation.sampling.diffusion.sampler == cfg.generation.sampling.diffusion.sampler
    with pytest.raises(StudioError, match="'generation.sampling.guidance_scale' has moved"):
        with_settings(cfg, {"guidance_scale": 2})


def test_the_vae_varies_a_segment_to_start_from_by_slerping_toward_its_latent(tiny_checkpoints, corpus_cache):
    vae = GENERATORS["vae"].load(tiny_checkpoints["vae"])
    start = corpus_cache.segment(int(corpus_cache.split_indices("test")[0]))
    ask = dict(mode="RED", n=3, seed=4, metre=f"{start.ts_num}/{start.ts_den}")
    free = vae.run(Request("vae", settings={"follow": 0.0}, init_midi=start, **ask))
    assert [s.notes.tolist() for s in free] == [s.notes.tolist() for s in vae.run(Request("vae", **ask))]
    own = vae.run(Request("vae", settings={"follow": 1.0}, init_midi=start, **ask))   # the segment's own latent
    assert own[0].notes.tolist() == own[1].notes.tolist() == own[2].notes.tolist()
    with pytest.raises(StudioError, match="the VAE cannot keep bars"):
        vae.run(Request("vae", init_midi=start, keep_bars=[1], **ask))
    with pytest.raises(StudioError, match="varies 4-bar segments"):
        vae.run(Request("vae", init_midi=replace(start, num_bars=2), **ask))
    with pytest.raises(StudioError, match="follow"):
        vae.run(Request("vae", settings={"follow": 1.5}, init_midi=start, **ask))


def test_the_vae_draws_asked_axes_without_a_mode_from_its_attribute_prior(vae_checkpoint):
    vae = GENERATORS["vae"].load(vae_checkpoint[0])   # the tiny run, finalized
    attributes = {"energy": 0.2, "motion": 0.9}
    got = vae.run(Request("vae", mode="WHITE", n=2, seed=6, attributes=attributes))
    z = vae.model.neighbourhood_latents(attributes, 2, 1.0, 6)
    expected = vae.model.decode(z, "WHITE", attributes, onset_threshold=vae.model.sampling_threshold("fitted"))
    assert [s.notes.tolist() for s in got] == [s.notes.tolist() for s in expected]
    # with a mode asked too, the mode's own prior, at its calibrated temperature
    asked_mode = vae.run(Request("vae", mode="RED", n=2, seed=6, attributes=attributes))
    red = vae.model.sample("RED", 2, vae.model.temperature_for("RED"), 6, attributes=attributes)[0]
    assert [s.notes.tolist() for s in asked_mode] == [s.notes.tolist() for s in red]
