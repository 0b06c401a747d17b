"""Classifier guidance and inpainting of the diffusion engine: the noise-aware classifier (shapes, gradient,
training, checkpoint), its targets, guided sampling through TrainedDiffusion, and RePaint-style inpainting.
Tiny configs over a few dozen cache segments; one classifier run and one denoiser run per module."""
import numpy as np
import pytest
import torch

from engines.cli import main
from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.generation.diffusion import SUGGESTED_CLASSIFIER_SCALE
from engines.models.denoiser import roll_to_unit
from engines.models.guidance_classifier import (GuidanceTarget, NoisyRollClassifier, TrainedGuidanceClassifier,
                                                classifier_loss, guidance_gradient)
from engines.models.trained_diffusion import TrainedDiffusion
from engines.music.notes import NOTE_DTYPE, TICKS_PER_QUARTER, Segment
from engines.sampling.diffusion import Inpainting, NoiseScheduler, sample_loop
from engines.training.diffusion_trainer import train_diffusion
from engines.training.guidance_trainer import high_rebracketing_threshold, train_guidance_classifier
from tests.helpers import TINY_DIFFUSION

torch.set_num_threads(1)

TINY = TINY_DIFFUSION + ["model.diffusion.epochs=1", "model.guidance_classifier.base_channels=16",
                         "model.guidance_classifier.channel_mults=[1,2]", "model.guidance_classifier.embedding_dim=32",
                         "model.guidance_classifier.batch_size=16", "model.guidance_classifier.epochs=2"]
LIMIT = 48


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, tiny_cfg):
    out = tmp_path_factory.mktemp("classifier_run")
    best = train_guidance_classifier(tiny_cfg, out, limit=LIMIT, workers=0)
    return out, best


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_cfg, classifier_run):
    out = tmp_path_factory.mktemp("denoiser_run")
    train_diffusion(tiny_cfg, out, limit=LIMIT, workers=0)
    engine = TrainedDiffusion.load(out / "best.pt")
    engine.classifier = TrainedGuidanceClassifier.load(classifier_run[0] / "best.pt")
    return engine


def tiny_classifier(tiny_cfg) -> NoisyRollClassifier:
    torch.manual_seed(0)
    return NoisyRollClassifier(tiny_cfg.model.guidance_classifier).eval()


# ---- targets --------------------------------------------------------------------------------------------------
def test_targets_parse_and_name_bad_input():
    assert GuidanceTarget.parse(None) == GuidanceTarget(mode=True, rebracketing=None)
    assert GuidanceTarget.parse("rebracketing=high") == GuidanceTarget(mode=False, rebracketing="high")
    assert GuidanceTarget.parse(" mode , rebracketing=LOW") == GuidanceTarget(mode=True, rebracketing="low")
    assert GuidanceTarget.parse("mode,rebracketing=high").describe() == "mode,rebracketing=high"
    with pytest.raises(StudioError, match="unknown guidance target 'tempo=fast'"):
        GuidanceTarget.parse("tempo=fast")
    with pytest.raises(StudioError, match="unknown rebracketing target 'some'"):
        GuidanceTarget.parse("rebracketing=some")
    assert GuidanceTarget.parse("mode", "x_t").space == "x_t"
    with pytest.raises(StudioError, match="unknown classifier-guidance space 'latent'"):
        GuidanceTarget.parse("mode", "latent")
    white = torch.tensor([8, 8])
    assert not GuidanceTarget(mode=True).active(white) and GuidanceTarget(True, "high").active(white)
    assert GuidanceTarget(mode=True).active(torch.tensor([1, 1]))


# ---- the classifier -------------------------------------------------------------------------------------------
def test_classifier_shapes_and_loss_counts(tiny_cfg, batch):
    model = tiny_classifier(tiny_cfg)
    x = roll_to_unit(batch["roll"])
    mode_logits, high_logit = model(x, torch.full((8,), 10), batch["metre"])
    assert mode_logits.shape == (8, 8) and high_logit.shape == (8,)
    loss, counts = classifier_loss(model, NoiseScheduler(100), batch, 0.5, 1.0, torch.Generator().manual_seed(0))
    assert loss.item() > 0 and counts["n"] == 8 and 0 <= counts["mode_hits"] <= 8 and 0 <= counts["high_hits"] <= 8


def test_gradient_points_uphill_in_log_probability(tiny_cfg, batch):
    model = tiny_classifier(tiny_cfg)
    x = roll_to_unit(batch["roll"])
    t, metre, mode = torch.full((8,), 20), batch["metre"], torch.arange(8)

    def log_p(x_in):
        mode_logits, high_logit = model(x_in, t, metre)
        return (torch.log_softmax(mode_logits, 1)[torch.arange(8), mode] + torch.nn.functional.logsigmoid(high_logit))

    grad = guidance_gradient(model, x, t, metre, mode, "high")
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with torch.no_grad():
        assert (log_p(x + 1e-2 * grad / grad.norm()) > log_p(x)).all()
    assert torch.equal(guidance_gradient(model, x, t, metre), torch.zeros_like(x))  # no target, no push
    low = guidance_gradient(model, x, t, metre, None, "low")
    high = guidance_gradient(model, x, t, metre, None, "high")
    assert (torch.nn.functional.cosine_similarity(low.flatten(1), high.flatten(1)) < 0).all()  # opposite ways


def test_metric_grids_mark_bars_beats_and_the_segment():
    from engines.data.torch_dataset import METRES
    from engines.models.guidance_classifier import metric_grids

    grids = metric_grids(64)
    assert grids.shape == (len(METRES), 4, 64)

    def steps(metre, channel):
        return torch.nonzero(grids[METRES.index(metre), channel])[:, 0].tolist()

    assert steps((4, 4), 0) == [0, 16, 32, 48] and steps((4, 4), 1) == list(range(0, 64, 4))
    assert steps((3, 4), 0) == [0, 12, 24, 36, 48, 60] and steps((3, 4), 3) == list(range(48))  # grid runs on
    assert steps((6, 8), 1) == list(range(0, 64, 6)) and steps((6, 8), 2) == list(range(0, 64, 3))  # dotted quarters
    assert steps((4, 2), 0) == [0, 16, 32, 48] and steps((4, 2), 1) == list(range(0, 64, 4))  # eighth-note steps
    assert steps((2, 4), 3) == list(range(32))


def test_low_noise_steps_are_drawn_more_often():
    from engines.models.guidance_classifier import draw_steps

    g = torch.Generator().manual_seed(0)
    uniform, skewed = draw_steps(20000, 1000, 1.0, g), draw_steps(20000, 1000, 2.0, g)
    assert uniform.min() >= 0 and skewed.max() <= 999
    assert (uniform < 250).float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert (skewed < 250).float().mean().item() == pytest.approx(0.5, abs=0.02)  # P(u^2 < 1/4) = 1/2


def test_high_threshold_is_the_quantile():
    attributes = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.5, 0.3], [1.0, 0.4]])
    assert high_rebracketing_threshold(attributes, 0.75) == pytest.approx(0.625)


def test_training_writes_checkpoints_and_accuracies(classifier_run, tiny_cfg):
    out, best = classifier_run
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "loss.png").is_file()
    assert {"val_mode_acc", "val_high_acc", "val_high_recall", "val_mode_acc_low_noise", "val_high_acc_low_noise",
            "val_high_recall_low_noise"} <= set(best)
    assert all(0 <= best[k] <= 1 for k in best if k.startswith("val_") and ("acc" in k or "recall" in k))
    loaded = TrainedGuidanceClassifier.load(out / "best.pt")
    assert (loaded.num_steps, loaded.noise_schedule) == (100, "cosine")
    assert 0 <= loaded.threshold <= 1
    loaded.check_compatible(100, "cosine", 64, 88)
    with pytest.raises(StudioError, match="trained for 100 cosine steps"):
        loaded.check_compatible(1000, "cosine", 64, 88)


def test_ship_writes_the_classifier_card(classifier_run, tmp_path):
    from engines.training.model_card import ship

    shipped = ship("guidance-classifier", classifier_run[0], tmp_path)
    assert (tmp_path / "guidance-classifier.pt").is_file() and shipped["size_mb"] < 15
    card = (tmp_path / "guidance-classifier.md").read_text()
    assert "| mode acc. | high-reb. acc. |" in card and "high rebracketing = above" in card
    assert "100 cosine steps" in card


def test_train_command_accepts_the_classifier(tmp_path, capsys):
    assert main(["train", "--engine", "guidance-classifier", "--limit", "16", "--workers", "0", "--out",
                 str(tmp_path), *[x for o in TINY for x in ("--set", o)],
                 "--set", "model.guidance_classifier.epochs=1"]) == 0
    assert (tmp_path / "best.pt").is_file() and '"val_mode_acc"' in capsys.readouterr().out


def test_a_denoiser_checkpoint_is_not_a_classifier(engine, tmp_path):
    with pytest.raises(StudioError, match="not a guidance classifier"):
        TrainedGuidanceClassifier(engine.payload)


# ---- guided sampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["x0", "x_t"])
def test_classifier_guidance_changes_the_sample_and_repeats(engine, space):
    target = GuidanceTarget(mode=True, rebracketing="high", space=space)
    plain, _ = engine.sample_rolls("RED", n=2, steps=8, seed=4)
    guided, _ = engine.sample_rolls("RED", n=2, steps=8, seed=4, classifier_scale=5.0, target=target)
    again, _ = engine.sample_rolls("RED", n=2, steps=8, seed=4, classifier_scale=5.0, target=target)
    assert not torch.allclose(plain, guided) and torch.equal(guided, again)


def test_x0_guidance_moves_the_estimate_by_the_scaled_gradient(engine):
    """In the x0 space, one denoising step's x0 is the (clipped) unguided x0 plus scale * grad log p(y | x0)."""
    from engines.models.guidance_classifier import guidance_gradient

    modes, metre = torch.tensor([1, 5]), torch.tensor([2, 2])
    x_t, t = torch.randn(2, 2, 64, 88, generator=torch.Generator().manual_seed(0)), torch.tensor([30, 30])
    plain = engine.denoiser(modes, None, metre, 3.0)(x_t, t)[0].clamp(-1, 1)
    target = GuidanceTarget(mode=True, rebracketing="high", space="x0")
    guided = engine.denoiser(modes, None, metre, 3.0, 2.0, target)(x_t, t)[0]
    grad = guidance_gradient(engine.classifier.model, plain, torch.zeros_like(t), metre, modes, "high")
    torch.testing.assert_close(guided, plain + 2.0 * grad)
    white, _ = engine.sample_rolls("WHITE", n=2, steps=8, seed=4, classifier_scale=5.0, target=GuidanceTarget())
    white_plain, _ = engine.sample_rolls("WHITE", n=2, steps=8, seed=4)
    assert torch.equal(white, white_plain)  # WHITE has no mode to steer toward


def test_guided_sampling_errors_name_the_input(engine):
    with pytest.raises(StudioError, match="classifier guidance strength must be >= 0"):
        engine.sample("RED", classifier_scale=-1, target=GuidanceTarget())
    classifier, engine.classifier = engine.classifier, None
    try:
        with pytest.raises(StudioError, match="needs a guidance classifier"):
            engine.sample("RED", steps=4, classifier_scale=1.0, target=GuidanceTarget())
    finally:
        engine.classifier = classifier


# ---- inpainting -----------------------------------------------------------------------------------------------
def test_renoise_is_the_forward_process():
    scheduler = NoiseScheduler(100)
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(scheduler.renoise(x0, -1, 40, noise),
                               scheduler.add_noise(x0, noise, torch.tensor([40, 40])), rtol=1e-6, atol=1e-6)
    # two jumps compose to one: variances add up to 1 - alpha_bar
    a = scheduler.alpha_bar
    ratio = float(a[60] / a[20])
    assert scheduler.renoise(torch.ones(1), 20, 60, torch.zeros(1)).item() == pytest.approx(ratio ** 0.5)


def test_resampling_keeps_the_known_part_and_takes_each_step_more_often():
    scheduler = NoiseScheduler(50)
    calls = []

    def denoise(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t), scheduler.eps_from_x0(torch.zeros_like(x_t), x_t, t)

    known = torch.ones(1, 4)
    mask = torch.tensor([[True, True, False, False]])
    out = sample_loop(scheduler, denoise, (1, 4), steps=5, inpainting=Inpainting(known, mask, resample=3),
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[mask], known[mask]) and torch.allclose(out[~mask], torch.zeros(2), atol=1e-5)
    assert len(calls) == 4 * 3 + 1  # every step three times but the last, which lands on x0
    with pytest.raises(StudioError, match="resample must be at least 1"):
        sample_loop(scheduler, denoise, (1, 4), steps=5, inpainting=Inpainting(known, mask, resample=0))


def _init_segment() -> Segment:
    """Four bars of 3/4 in G: a G major arpeggio per bar, one note per beat."""
    q = TICKS_PER_QUARTER
    rows = [(bar * 3 * q + beat * q, q, pitch, 80, 0)
            for bar in range(4) for beat, pitch in enumerate((67, 71, 74))]
    notes = np.array(rows, dtype=NOTE_DTYPE)
    return Segment(notes=notes, ts_num=3, ts_den=4, num_bars=4, tempo_qpm=88.0)


def test_inpainting_keeps_the_chosen_bars_exactly(engine):
    init = _init_segment()
    out = engine.inpaint(init, keep_bars=[1, 3], mode="BLUE", n=2, steps=6, seed=2)
    bar = init.bar_length
    for segment in out:
        assert (segment.ts_num, segment.ts_den, segment.tempo_qpm) == (3, 4, 88.0)
        for b in (0, 2):  # kept bars: the very notes of the init, in its key
            kept = segment.notes[(segment.notes["start"] >= b * bar) & (segment.notes["start"] < (b + 1) * bar)]
            original = init.notes[(init.notes["start"] >= b * bar) & (init.notes["start"] < (b + 1) * bar)]
            assert kept[["start", "duration", "pitch"]].tolist() == original[["start", "duration", "pitch"]].tolist()
        assert segment.notes["start"].max(initial=0) < 4 * bar
    again = engine.inpaint(init, keep_bars=[1, 3], mode="BLUE", n=2, steps=6, seed=2)
    assert [s.notes.tolist() for s in again] == [s.notes.tolist() for s in out]
    (solver,) = engine.inpaint(init, keep_bars=[1, 3], mode="BLUE", steps=6, seed=2, sampler="dpmsolver++")
    kept = solver.notes[solver.notes["start"] < bar]
    assert kept[["start", "pitch"]].tolist() == init.notes[init.notes["start"] < bar][["start", "pitch"]].tolist()


def test_inpainting_a_short_segment_and_notes_never_overlap(engine):
    init = _init_segment()
    short = Segment(notes=init.notes[init.notes["start"] < 2 * init.bar_length], ts_num=3, ts_den=4, num_bars=2,
                    tempo_qpm=88.0)
    for segment in engine.inpaint(short, keep_bars=[1], mode="RED", n=3, steps=6, seed=4):
        notes = segment.notes
        first = notes[notes["start"] < init.bar_length]
        assert first[["start", "pitch"]].tolist() == init.notes[:3][["start", "pitch"]].tolist()
        for pitch in set(notes["pitch"].tolist()):  # MIDI cannot hold two overlapping notes of one pitch
            same = np.sort(notes[notes["pitch"] == pitch], order="start")
            assert (same["start"][1:] >= same["start"][:-1] + same["duration"][:-1]).all()


def test_inpainting_errors_name_the_bars(engine):
    init = _init_segment()
    with pytest.raises(StudioError, match=r"bars to keep must lie in 1..4, got 5"):
        engine.inpaint(init, keep_bars=[5])
    short = Segment(notes=init.notes[init.notes["start"] < init.bar_length], ts_num=3, ts_den=4, num_bars=1)
    with pytest.raises(StudioError, match="has only 1 bar"):
        engine.inpaint(short, keep_bars=[2])
    with pytest.raises(StudioError, match="not 5/8"):
        engine.inpaint(Segment(notes=init.notes[:0], ts_num=5, ts_den=8), keep_bars=[1])


# ---- through the studio's engine API ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_cfg, engine, classifier_run):
    import shutil

    from engines.api import StudioEngine
    from engines.training.common import save_checkpoint

    models = tmp_path_factory.mktemp("models")
    save_checkpoint(engine.payload, models / "diffusion.pt")
    shutil.copyfile(classifier_run[0] / "best.pt", models / "guidance-classifier.pt")
    cfg = load_config(overrides=TINY + [f"model.checkpoints_dir={models}"])
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


def test_a_broken_classifier_file_leaves_the_engine_usable(engine, classifier_run, tmp_path):
    from engines.registry import ModelRegistry
    from engines.training.common import load_checkpoint, save_checkpoint

    save_checkpoint(engine.payload, tmp_path / "diffusion.pt")
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
    write_segment_midi(_init_segment(), init)
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
def test_evaluate_reports_the_guidance_lift(tiny_cfg, engine, classifier_run, tmp_path):
    from engines.evaluation.diffusion_eval import evaluate_diffusion
    from engines.training.common import save_checkpoint

    save_checkpoint(engine.payload, tmp_path / "diffusion.pt")
    report = evaluate_diffusion(str(tmp_path / "diffusion.pt"), tiny_cfg, n_per_mode=1, real_count=30,
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
