"""Diffusion through the studio's engine API: the stream of steps, Stop, a second request replacing a run,
a broken classifier file, the guidance lift in `evaluate`, and the shipped checkpoints fitting together."""
import pytest
import torch

from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.generation.diffusion import SUGGESTED_CLASSIFIER_SCALE
from engines.models.guidance_classifier import GuidanceTarget
from tests.helpers import TINY_DIFFUSION, arpeggio_segment

torch.set_num_threads(1)


# ---- through the studio's engine API ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tmp_path_factory, diffusion_cfg, guided_diffusion, classifier_run):
    import shutil

    from engines.api import StudioEngine
    from engines.training.common import save_checkpoint

    models = tmp_path_factory.mktemp("models")
    save_checkpoint(guided_diffusion.payload, models / "diffusion.pt")
    shutil.copyfile(classifier_run[0] / "best.pt", models / "guidance-classifier.pt")
    cfg = load_config(overrides=TINY_DIFFUSION + [f"model.checkpoints_dir={models}"])
    return StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=tmp_path_factory.mktemp("out"))


def test_stream_shows_every_step_then_the_results(studio):
    from engines.api import GenerationProgress, GenerationResult, Request

    request = Request(engine="diffusion", mode="RED", n=3, seed=1, settings={"steps": 6}, candidates=2)
    # this studio has no judge: nothing ranks candidates, so one is drawn per result (copies still replaced)
    items = list(studio.generate_stream(request, every=1e-9))
    progress, final = items[:-1], items[-1]
    assert [p.step for p in progress] == list(range(1, 7)) and all(p.total == 6 for p in progress)
    assert all(isinstance(p, GenerationProgress) and p.sounding.shape == (3, 64, 88) for p in progress)
    assert all(0 <= p.sounding.min() and p.sounding.max() <= 1 for p in progress)
    metres = studio.models.get("diffusion").model.metre_names("RED", 3, 1)
    # sixteenth steps; bars longer than 4 quarters use eighths (4/2, 3/2, 9/8, 6/4, 12/8, 5/4)
    steps_per_bar = {"2/4": 8, "6/8": 12, "4/4": 16, "4/2": 16, "3/4": 12, "2/2": 16, "3/8": 6, "3/2": 12,
                     "9/8": 9, "6/4": 12, "12/8": 12, "5/4": 10}
    assert progress[0].bar_steps == [steps_per_bar[m] for m in metres]
    assert isinstance(final, GenerationResult) and final.candidates == 1 and final.verification["drawn"] == 3
    assert "not ranked (no judge installed)" in final.summary
    assert len(final.views) == 3 and all(v.title.startswith("DIFFUSION · RED · seed 1") for v in final.views)


def test_stop_ends_the_run_early_with_that_steps_estimate(studio):
    from engines.api import GenerationProgress, Request

    params = Request(engine="diffusion", mode="RED", n=1, seed=1, settings={"steps": 50})
    seen = []
    for item in studio.generate_stream(params, run_id="me", every=1e-9):
        if isinstance(item, GenerationProgress):
            seen.append(item.step)
            if item.step == 3:
                assert studio.request_stop("me")
        else:
            final = item
    assert seen[-1] < 50 and len(final.views) == 1 and final.stopped
    assert not studio.request_stop("me")  # nothing runs under that id any more


def test_a_run_ending_leaves_a_newer_runs_stop_flag_alone(studio):
    from engines.api import GenerationResult, Request

    params = Request(engine="diffusion", mode="RED", n=1, seed=1, settings={"steps": 40})
    first = studio.generate_stream(params, run_id="tab", every=1e-9)
    next(first)
    second = studio.generate_stream(params, run_id="tab", every=1e-9)
    next(second)
    first.close()                          # the older run ends (its finally runs) ...
    assert studio.request_stop("tab")      # ... and Stop still reaches the newer one
    assert isinstance(list(second)[-1], GenerationResult)


def test_a_second_request_replaces_the_run_still_going(studio):
    """Issue 20, defect 1: a second Generate click while a run was going was silently ignored. Now the newer
    request of the same user stops the older, which ends with no results and says it was replaced."""
    from engines.api import GenerationProgress, GenerationResult, Request

    slow = Request(engine="diffusion", mode="RED", n=1, seed=1, settings={"steps": 100})
    first = studio.generate_stream(slow, run_id="tab", every=1e-9)
    assert isinstance(next(first), GenerationProgress)
    second = studio.generate_stream(Request(engine="diffusion", mode="BLUE", n=2, seed=2, settings={"steps": 5}),
                                    run_id="tab", every=1e-9)
    next(second)                                   # the newer run starts: the older one is told to stop
    older = list(first)
    assert isinstance(older[-1], GenerationResult)
    assert older[-1].replaced and older[-1].stopped and older[-1].views == []
    assert older[-1].summary == "Replaced by a newer request."
    assert all(i.step < 100 for i in older if isinstance(i, GenerationProgress))   # it did not run to its end
    newer = list(second)[-1]
    assert isinstance(newer, GenerationResult) and not newer.replaced and not newer.stopped
    assert len(newer.views) == 2 and newer.views[0].requested_mode == "BLUE"


def test_a_broken_classifier_file_leaves_the_engine_usable(guided_diffusion, classifier_run, tmp_path):
    from engines.registry import ModelRegistry
    from engines.training.common import load_checkpoint, save_checkpoint

    save_checkpoint(guided_diffusion.payload, tmp_path / "diffusion.pt")
    broken = load_checkpoint(classifier_run[0] / "best.pt")
    save_checkpoint({**broken, "state_dict": {}}, tmp_path / "guidance-classifier.pt")  # loads, then fails
    loaded = ModelRegistry(tmp_path).get("diffusion")
    assert loaded.model.classifier is None and len(loaded.model.sample("RED", steps=3)) == 1


def test_api_steers_with_the_shipped_classifier_and_inpaints(studio, tmp_path):
    from engines.api import Request
    from engines.data.midi_io import write_segment_midi

    plain = studio.generate(Request(engine="diffusion", mode="VIOLET", n=2, seed=5, settings={"steps": 6}))
    steered = studio.generate(Request(engine="diffusion", mode="VIOLET", n=2, seed=5, settings={
        "steps": 6, "classifier_scale": 8.0, "classifier_target": "rebracketing=high"}))
    assert studio.models.get("diffusion").model.classifier is not None  # attached by the registry
    assert [v.notes.pitch for v in plain] != [v.notes.pitch for v in steered]
    init = tmp_path / "init.mid"
    write_segment_midi(arpeggio_segment(), init)
    views = studio.generate(Request(engine="diffusion", mode="RED", n=2, seed=5, settings={"steps": 6},
                                    init_midi=str(init), keep_bars=[2]))
    assert all("inpainted" in v.title for v in views)
    bar = 3.0  # quarters in a bar of 3/4
    for v in views:
        kept = sorted((s, p) for s, p in zip(v.notes.start, v.notes.pitch) if bar <= s < 2 * bar)
        assert kept == [(3.0, 67), (4.0, 71), (5.0, 74)]
    with pytest.raises(StudioError, match="at least one bar to keep"):
        studio.generate(Request(engine="diffusion", mode="RED", settings={"steps": 6}, init_midi=str(init),
                                keep_bars=[]))
    with pytest.raises(StudioError, match="unknown guidance target"):
        studio.generate(Request(engine="diffusion", mode="RED", settings={"steps": 6, "classifier_scale": 1,
                                                                         "classifier_target": "loud"}))


@pytest.mark.slow
def test_evaluate_reports_the_guidance_lift(diffusion_cfg, guided_diffusion, classifier_run, tmp_path):
    from engines.evaluation.diffusion_eval import evaluate_diffusion
    from engines.training.common import save_checkpoint

    save_checkpoint(guided_diffusion.payload, tmp_path / "diffusion.pt")
    report = evaluate_diffusion(str(tmp_path / "diffusion.pt"), diffusion_cfg, n_per_mode=1, real_count=30,
                                with_table=False, classifier=str(classifier_run[0] / "best.pt"))
    guidance = report["guidance"]
    assert guidance["target"] == "mode,rebracketing=high" and guidance["classifier_scale"] == 3.0
    assert guidance["space"] == "x0"
    assert guidance["rebracketing_lift"] == pytest.approx(guidance["rebracketing_guided"]
                                                          - guidance["rebracketing_unguided"], abs=1e-3)
    assert 0 <= guidance["consistency_guided"] <= 1 and len(guidance["consistency_guided_per_mode"]) == 8


def test_the_shipped_checkpoints_load_fit_together_and_generate():
    """assets/checkpoints: the diffusion engine and its classifier load with weights_only, agree on the forward
    process, and give segments with and without classifier guidance (a few steps: this checks wiring, the
    bars are measured by `evaluate`)."""
    from engines.registry import ModelRegistry

    cfg = load_config()
    engine = ModelRegistry(cfg.model.checkpoints_dir).get("diffusion").model
    assert engine.classifier is not None and engine.num_steps == 1000
    assert engine.metre_tempo is not None and "onset_calibration" in engine.payload
    for scale in (0.0, SUGGESTED_CLASSIFIER_SCALE):
        segments = engine.sample("GREEN", n=2, steps=5, seed=1, classifier_scale=scale,
                                 target=GuidanceTarget(mode=True, rebracketing="high"))
        assert len(segments) == 2 and all(len(s.notes) > 0 for s in segments)
