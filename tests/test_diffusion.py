"""The diffusion engine: schedules and samplers (pure, against closed forms and an oracle denoiser), the
roll denoiser and its loss, training (resume, EMA checkpoint), the TrainedDiffusion wrapper, decoding and
the train / generate commands. A tiny config over a few dozen cache segments; one run per module."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch

from engines.cli import main
from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import METRES, WHITE_INDEX, RollDataset
from engines.errors import StudioError
from engines.models.denoiser import (RollDenoiser, checkpoint_payload, diffusion_loss, model_from_checkpoint,
                                     roll_to_unit)
from engines.models.roll_decoding import DEFAULT_VELOCITY
from engines.models.trained_diffusion import TrainedDiffusion
from engines.music.analyzer import MODES as MODES_ALL
from engines.sampling.diffusion import Inpainting, NoiseScheduler, guided_eps, make_betas, sample_loop
from engines.training.diffusion_trainer import mode_statistics, train_diffusion
from tests.helpers import TINY_DIFFUSION

torch.set_num_threads(1)

TINY = TINY_DIFFUSION
LIMIT = 48


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(overrides=TINY)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_cfg):
    out = tmp_path_factory.mktemp("diffusion_run")
    train_diffusion(tiny_cfg, out, limit=LIMIT, workers=0)
    return out


# ---- schedules --------------------------------------------------------------------------------------------------
def test_linear_schedule_matches_ddpm():
    scheduler = NoiseScheduler(1000, "linear", "epsilon")
    reference = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(scheduler.alpha_bar.numpy(), reference, rtol=1e-10)
    assert scheduler.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # DDPM's T = 1000 end point


def test_cosine_schedule_matches_its_closed_form():
    scheduler = NoiseScheduler(1000, "cosine", "v")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert scheduler.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert (scheduler.alpha_bar.diff() < 0).all() and 0 < scheduler.alpha_bar[-1] < 1e-4
    assert make_betas("cosine", 1000).max().item() == pytest.approx(0.999)  # the cap


def test_schedule_errors_name_the_input():
    with pytest.raises(StudioError, match="noise_schedule 'sigmoid'"):
        NoiseScheduler(1000, "sigmoid")
    with pytest.raises(StudioError, match="prediction 'score'"):
        NoiseScheduler(1000, "cosine", "score")
    with pytest.raises(StudioError, match=r"steps must lie in 1..100"):
        NoiseScheduler(100).timesteps(101)


def test_timesteps_run_from_pure_noise_down_to_zero():
    scheduler = NoiseScheduler(1000)
    assert scheduler.timesteps(1) == [999]
    grid = scheduler.timesteps(50)
    assert len(grid) == 50 and grid[0] == 999 and grid[-1] == 0 and grid == sorted(grid, reverse=True)
    assert scheduler.timesteps(1000) == list(range(999, -1, -1))


# ---- forward process and parameterisations ------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_split_inverts_the_training_target(prediction):
    scheduler = NoiseScheduler(1000, "cosine", prediction)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 8, 6, generator=g), torch.randn(4, 2, 8, 6, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = scheduler.add_noise(x0, noise, t)
    x0_back, eps_back = scheduler.split(scheduler.training_target(x0, noise, t), x_t, t)
    torch.testing.assert_close(eps_back, noise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_back[:3], x0[:3], atol=1e-4, rtol=1e-4)  # at t=999 x0 from eps is ill-posed


def test_add_noise_has_the_closed_form_statistics():
    scheduler = NoiseScheduler(1000, "linear")
    x0 = torch.ones(20000)
    t = torch.full((20000,), 300)
    x_t = scheduler.add_noise(x0[:, None], torch.randn(20000, 1, generator=torch.Generator().manual_seed(1)), t)
    a = scheduler.alpha_bar[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(a), abs=0.02)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - a), abs=0.02)


# ---- samplers -------------------------------------------------------------------------------------------------
def _oracle(scheduler, x0):
    """A perfect denoiser of a single known sample."""
    return lambda x_t, t: (x0, scheduler.eps_from_x0(x0, x_t, t))


@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 10, 0.0), ("ddim", 50, 1.0), ("ddpm", 25, 0.0),
                                               ("ddpm", 1000, 0.0), ("dpmsolver++", 10, 0.0)])
def test_samplers_land_on_the_sample_an_oracle_denoiser_knows(sampler, steps, eta):
    scheduler = NoiseScheduler(1000, "cosine", "v")
    x0 = torch.full((2, 2, 8, 6), -1.0)
    x0[:, 0, 3, 2] = 1
    out = sample_loop(scheduler, _oracle(scheduler, x0), x0.shape, steps, sampler, eta,
                      torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0)


def test_dpm_solver_converges_to_the_ode_solution_ddim_finds():
    """DPM-Solver++ and DDIM (eta 0) solve the same probability-flow ODE: with more steps the solver's sample
    approaches the fine (DDIM, 1000 steps) solution from the same noise."""
    scheduler = NoiseScheduler(1000, "cosine", "x0")

    def smooth(x_t, t):  # a posterior mean that depends on the noise level
        a = scheduler.alpha_bar[t].float().view(-1, 1)
        x0 = torch.tanh(a.sqrt() * x_t * 2)
        return x0, scheduler.eps_from_x0(x0, x_t, t)

    def run(sampler, steps):
        return sample_loop(scheduler, smooth, (64, 16), steps, sampler, generator=torch.Generator().manual_seed(3))

    fine = run("ddim", 1000)
    errors = [(run("dpmsolver++", n) - fine).abs().mean().item() for n in (5, 20, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    assert torch.equal(run("dpmsolver++", 20), run("dpmsolver++", 20))
    with pytest.raises(StudioError, match="not dpmsolver"):
        sample_loop(scheduler, smooth, (1, 4), 5, "dpmsolver++",
                    inpainting=Inpainting(torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), resample=2))


def test_ddim_step_follows_song_et_al():
    scheduler = NoiseScheduler(1000, "linear")
    x0, eps = torch.tensor([0.5]), torch.tensor([-0.3])
    a, a_prev = scheduler.alpha_bar[600].item(), scheduler.alpha_bar[400].item()
    expected = math.sqrt(a_prev) * 0.5 + math.sqrt(1 - a_prev) * -0.3
    assert scheduler.ddim_step(x0, eps, 600, 400).item() == pytest.approx(expected, rel=1e-6)
    # eta = 1: DDPM's posterior variance, drawn from the noise given
    sigma = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    got = scheduler.ddim_step(x0, eps, 600, 400, eta=1.0, noise=torch.tensor([1.0])).item()
    assert got == pytest.approx(math.sqrt(a_prev) * 0.5 + math.sqrt(1 - a_prev - sigma ** 2) * -0.3 + sigma, rel=1e-6)


def test_ddpm_step_is_the_posterior_of_ho_et_al():
    scheduler = NoiseScheduler(1000, "linear")
    t = 500
    beta, a, a_prev = scheduler.betas[t].item(), scheduler.alpha_bar[t].item(), scheduler.alpha_bar[t - 1].item()
    x0, x_t = torch.tensor([0.2]), torch.tensor([0.7])
    mean = math.sqrt(a_prev) * beta / (1 - a) * 0.2 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * 0.7
    variance = beta * (1 - a_prev) / (1 - a)
    got = scheduler.ddpm_step(x0, x_t, t, t - 1, noise=torch.tensor([2.0])).item()
    assert got == pytest.approx(mean + 2 * math.sqrt(variance), rel=1e-6)


def test_deterministic_ddim_repeats_and_seeds_differ():
    scheduler = NoiseScheduler(100)
    denoise = lambda x_t, t: scheduler.split(0.5 * x_t, x_t, t)  # noqa: E731  (any fixed function)
    run = lambda seed: sample_loop(scheduler, denoise, (1, 4), 10, "ddim", 0.0, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_inpainting_keeps_the_known_part_and_on_step_can_stop():
    scheduler = NoiseScheduler(100, "cosine", "epsilon")
    known = torch.linspace(-1, 1, 8).view(1, 8)
    mask = torch.tensor([[True] * 4 + [False] * 4])
    denoise = lambda x_t, t: (torch.zeros_like(x_t), scheduler.eps_from_x0(torch.zeros_like(x_t), x_t, t))  # noqa: E731
    out = sample_loop(scheduler, denoise, (1, 8), 20, "ddpm", generator=torch.Generator().manual_seed(0),
                      inpainting=Inpainting(known, mask))
    torch.testing.assert_close(out[mask], known[mask])
    torch.testing.assert_close(out[~mask], torch.zeros(4))  # the denoiser's answer where nothing is kept
    seen = []
    sample_loop(scheduler, denoise, (1, 8), 20, on_step=lambda i, n, x0: seen.append((i, n)) or i == 4)
    assert seen == [(i, 20) for i in range(5)]


def test_classifier_guidance_shifts_eps_against_the_gradient():
    scheduler = NoiseScheduler(1000, "linear")
    eps, grad = torch.zeros(2, 3), torch.ones(2, 3)
    t = torch.tensor([100, 900])
    out = guided_eps(eps, grad, scheduler, t, scale=2.0)
    for row, step in enumerate(t.tolist()):
        expected = -2.0 * math.sqrt(1 - scheduler.alpha_bar[step].item())
        torch.testing.assert_close(out[row], torch.full((3,), expected, dtype=out.dtype))


def test_sampler_errors_name_the_input():
    scheduler = NoiseScheduler(100)
    with pytest.raises(StudioError, match="sampler 'euler'"):
        sample_loop(scheduler, None, (1, 2), 5, "euler")
    with pytest.raises(StudioError, match="eta must lie"):
        sample_loop(scheduler, None, (1, 2), 5, "ddim", eta=2.0)


# ---- the denoiser ---------------------------------------------------------------------------------------------
def test_denoiser_shapes_and_identity_start(tiny_cfg, batch):
    model = RollDenoiser(tiny_cfg.model.diffusion, 64, 88)
    x = torch.randn(8, 2, 64, 88)
    values = batch["conditions"][:, model.attribute_columns]
    out = model(x, torch.arange(8), batch["mode"], values, None, batch["metre"])
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: training starts from "predict 0"
    assert model(x[:2], torch.tensor([1, 2]), torch.tensor([0, WHITE_INDEX]), None, None,
                 torch.tensor([0, 1])).shape == (2, 2, 64, 88)
    # every attribute is given or not on its own: the condition differs with each subset
    t, mode, metre = torch.arange(8), batch["mode"], batch["metre"]
    given = torch.zeros_like(values)
    given[:, 2] = 1                                                        # energy alone
    alone = model.condition(t, mode, values, given, metre)
    assert not torch.allclose(alone, model.condition(t, mode, None, None, metre))
    assert not torch.allclose(alone, model.condition(t, mode, values, None, metre))


def test_a_first_diffusion_checkpoint_with_one_shared_flag_still_loads(tiny_cfg):
    from dataclasses import replace

    from engines.models.denoiser import checkpoint_payload, model_from_checkpoint

    old = RollDenoiser(replace(tiny_cfg.model.diffusion, attributes=["rebracketing", "temporal_complexity"],
                               attribute_mask="shared"), 64, 88)
    payload = checkpoint_payload(old, {})
    for key in ("attributes", "attribute_mask", "attribute_dropout"):      # as the first checkpoints were
        payload["config"].pop(key)
    loaded = model_from_checkpoint(payload)
    assert loaded.config.attribute_mask == "shared" and loaded.attribute_mlp.in_features == 3


def test_roll_to_unit_marks_onsets_and_sustain(batch):
    unit = roll_to_unit(batch["roll"])
    assert set(unit.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(unit[:, 0] > 0, batch["roll"][:, 0] > 0.5)
    assert torch.equal(unit[:, 1] > 0, batch["roll"][:, 1] > 0)


def test_loss_falls_when_fitting_one_batch(tiny_cfg, batch):
    torch.manual_seed(0)
    config = tiny_cfg.model.diffusion
    model = RollDenoiser(config, 64, 88)
    scheduler = NoiseScheduler(config.num_steps, config.noise_schedule, config.prediction)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    generator = torch.Generator().manual_seed(5)
    model.eval()
    before = diffusion_loss(model, scheduler, batch, 0.0, torch.Generator().manual_seed(9)).item()
    model.train()
    for _ in range(40):
        loss = diffusion_loss(model, scheduler, batch, 0.1, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = diffusion_loss(model, scheduler, batch, 0.0, torch.Generator().manual_seed(9)).item()
    assert after < 0.7 * before


def test_checkpoint_round_trip(tiny_cfg, tmp_path):
    model = RollDenoiser(tiny_cfg.model.diffusion, 64, 88)
    torch.save(checkpoint_payload(model, {"val_loss": 1.0}), tmp_path / "d.pt")
    back = model_from_checkpoint(torch.load(tmp_path / "d.pt", weights_only=True))
    assert back.config == model.config
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)


# ---- training ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_writes_metrics_checkpoints_and_resumes(run_dir, tiny_cfg):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert (run_dir / "loss.png").stat().st_size > 0
    payload = torch.load(run_dir / "best.pt", weights_only=True)
    assert payload["engine"] == "diffusion" and payload["metrics"]["val_loss"] == min(r["val_loss"] for r in rows)
    assert payload["metre_counts"].shape == (WHITE_INDEX + 1, len(METRES)) and payload["tempo"].shape == (WHITE_INDEX + 1,)
    more = load_config(overrides=TINY + ["model.diffusion.epochs=3"])
    train_diffusion(more, run_dir, resume=True, limit=LIMIT, workers=0)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["step"] > rows[1]["step"]


def test_mode_statistics_count_metres_per_mode(tiny_cfg):
    cache = ensure_corpus_cache(tiny_cfg)
    data = RollDataset.for_config(cache, cache.split_indices("train")[:200], tiny_cfg.data)
    stats = mode_statistics(data)
    counts = stats["metre_counts"]
    assert counts[WHITE_INDEX].sum() == 200 and torch.equal(counts[:WHITE_INDEX].sum(0), counts[WHITE_INDEX])
    assert (stats["tempo"] > 20).all()


# ---- the wrapper and decoding -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(run_dir):
    return TrainedDiffusion.load(run_dir / "best.pt")


def test_sample_gives_segments_in_the_asked_metre_and_tonic(engine):
    segments = engine.sample("BLUE", n=2, steps=4, guidance_scale=2.0, seed=1, metre="3/4")
    assert len(segments) == 2 and all((s.ts_num, s.ts_den) == (3, 4) for s in segments)
    again = engine.sample("BLUE", n=2, steps=4, guidance_scale=2.0, seed=1, metre="3/4")
    assert [s.notes.tolist() for s in segments] == [s.notes.tolist() for s in again]
    drawn = engine.sample("RED", n=3, steps=2, seed=2, sampler="ddpm")
    assert all((s.ts_num, s.ts_den) in METRES for s in drawn)


def test_to_segments_decodes_a_known_roll(engine):
    x0 = torch.full((1, 2, 64, 88), -1.0)
    x0[0, 0, 4, 60 - 21] = 1.0          # onset of middle C at step 4 (beat 2 of 4/4) ...
    x0[0, 1, 4:8, 60 - 21] = 1.0        # ... held for a beat
    (segment,) = engine.to_segments(x0, [METRES.index((4, 4))], "BLUE")
    notes = [(int(n["pitch"]), int(n["start"]), int(n["duration"]), int(n["velocity"])) for n in segment.notes]
    assert notes == [(60, 4 * 3, 4 * 3, DEFAULT_VELOCITY)]  # 3 ticks a sixteenth step (TICKS_PER_QUARTER 12)
    (up,) = engine.to_segments(x0, [METRES.index((4, 4))], "BLUE", tonic="D")
    assert int(up.notes["pitch"][0]) == 62


def test_decoding_starts_held_notes_and_drops_specks():
    from engines.models.roll_decoding import probabilities_to_segments

    onset, sustain = torch.zeros(1, 64, 88), torch.zeros(1, 64, 88)
    sustain[0, 0:8, 60 - 21] = 1.0           # C held two beats with no onset written
    onset[0, 4, 60 - 21] = 1.0               # ... and re-struck at step 4: two notes
    sustain[0, 10, 64 - 21] = 1.0            # E for one step, no onset: a speck
    four = [METRES.index((4, 4))]

    def notes(**options):
        (segment,) = probabilities_to_segments(onset, sustain, four, [100.0], **options)
        return [(int(n["pitch"]), int(n["start"]) // 3, int(n["duration"]) // 3) for n in segment.notes]

    assert notes() == [(60, 4, 4)]                                  # onsets only: the unstruck start is lost
    assert notes(sustain_onsets=True) == [(60, 0, 4), (60, 4, 4), (64, 10, 1)]
    assert notes(sustain_onsets=True, min_steps=2) == [(60, 0, 4), (60, 4, 4)]


def test_training_calibrates_the_onset_threshold(run_dir):
    from engines.training.diffusion_finalize import CANDIDATES

    payload = torch.load(run_dir / "best.pt", weights_only=True)
    calibration = payload["onset_calibration"]
    assert payload["config"]["onset_threshold"] == calibration["onset_threshold"] in CANDIDATES
    counts = [calibration["notes_by_threshold"][str(c)] for c in CANDIDATES]
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # a stricter threshold never sounds more notes
    best = abs(calibration["notes_per_segment"] - calibration["corpus_notes_per_segment"])
    assert all(best <= abs(c - calibration["corpus_notes_per_segment"]) for c in counts)


def test_sample_errors_name_the_input(engine):
    with pytest.raises(StudioError, match="unknown metre '7/4'"):
        engine.sample("BLUE", steps=2, metre="7/4")
    with pytest.raises(StudioError, match="n must lie"):
        engine.sample("BLUE", n=0, steps=2)
    with pytest.raises(StudioError, match="unknown mode 'PURPLE'"):
        engine.sample("PURPLE", steps=2)
    with pytest.raises(StudioError, match="steps must lie"):
        engine.sample("BLUE", steps=5000)


def test_generate_command_writes_midi(run_dir, tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["generate", "--engine", "diffusion", "--mode", "GREEN", "--n", "2", "--steps", "3",
                     "--guidance", "1.5", "--checkpoint", str(run_dir / "best.pt"), "--out", str(tmp_path)]
                    + [arg for key in TINY for arg in ("--set", key)])
    assert code == 0
    summary = json.loads(stdout.getvalue())
    assert summary["engine"] == "diffusion" and len(summary["files"]) == 2
    assert all((tmp_path / f"diffusion-green-0-{i}.mid").is_file() for i in range(2))


def test_generate_command_inpaints_and_names_bad_bars(run_dir, tmp_path, capsys):
    from engines.data.midi_io import write_segment_midi
    from engines.music.notes import NOTE_DTYPE, Segment

    init = tmp_path / "init.mid"
    notes = np.array([(bar * 48 + beat * 12, 12, 60 + 2 * beat, 80, 0) for bar in range(4) for beat in range(4)],
                     dtype=NOTE_DTYPE)
    write_segment_midi(Segment(notes=notes), init)
    common = ["generate", "--engine", "diffusion", "--mode", "RED", "--n", "1", "--steps", "3", "--checkpoint",
              str(run_dir / "best.pt"), "--init", str(init), "--out", str(tmp_path / "out")]
    common += [arg for key in TINY for arg in ("--set", key)]
    assert main(common + ["--keep-bars", "1,4"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["analysis"] is not None  # bars 1 and 4 are there at least
    assert main(common + ["--keep-bars", "one"]) == 2
    assert "--keep-bars takes bar numbers" in capsys.readouterr().err
    assert main(common) == 2
    assert "needs both --init FILE.mid and --keep-bars" in capsys.readouterr().err
    plain = [arg for arg in common if arg not in ("--init", str(init))]
    assert main(plain + ["--classifier-guidance", "2", "--classifier", str(tmp_path / "none.pt")]) == 2
    assert "no guidance classifier at" in capsys.readouterr().err


def test_generate_without_a_checkpoint_says_how_to_train_one(tmp_path, capsys):
    assert main(["generate", "--engine", "diffusion", "--out", str(tmp_path),
                 "--set", f"model.checkpoints_dir={tmp_path}"]) == 2
    assert "train one with `python -m engines train --engine diffusion" in capsys.readouterr().err


# ---- evaluation, bench and model card -----------------------------------------------------------------------
def test_frechet_distance_known_answers():
    from engines.evaluation.frechet import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # shifted mean: |mu|^2; scaled by 2: Tr(I + 4I - 2 * 2I) = 3 per unit variance
    assert frechet_distance(a, rng.normal(size=(20000, 3)) + [1.0, 0, 0]) == pytest.approx(1.0, abs=0.06)
    assert frechet_distance(a, 2 * rng.normal(size=(20000, 3))) == pytest.approx(3.0, abs=0.15)
    singular = np.zeros((50, 3))
    singular[:, 0] = rng.normal(size=50)  # rank-one covariance: still finite
    assert math.isfinite(frechet_distance(singular, a[:50]))
    with pytest.raises(ValueError, match="need two"):
        frechet_distance(a[:, :2], a)


@pytest.mark.slow
def test_evaluate_reports_the_issue_keys(run_dir, tiny_cfg):
    from engines.evaluation.diffusion_eval import evaluate_diffusion

    report = evaluate_diffusion(str(run_dir / "best.pt"), tiny_cfg, n_per_mode=2, table_per_mode=1, real_count=40)
    assert report["engine"] == "diffusion" and report["n"] == 16
    assert set(report["consistency"]["per_mode"]) == set(MODES_ALL) and 0 <= report["consistency"]["overall"] <= 1
    distance = report["frechet"]["distance"]  # None where a barely trained model writes < 2 non-empty segments
    assert (distance is None or distance >= 0) and report["frechet"]["real_baseline"] > 0
    rows = report["steps_table"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100),
                                                          ("dpmsolver++", 10), ("dpmsolver++", 20)]
    assert all(r["seconds_per_segment"] > 0 and 0 <= r["consistency"] <= 1 and "frechet" in r for r in rows)
    assert report["latency_ms"] > 0


def test_bench_row_and_model_card(run_dir, tmp_path):

    from engines.bench import bench_diffusion
    from engines.training.model_card import ship

    cfg = load_config(overrides=TINY + [f"model.checkpoints_dir={tmp_path}"])
    assert bench_diffusion(cfg, repeats=1) is None
    shipped = ship("diffusion", run_dir, tmp_path)
    assert (tmp_path / "diffusion.pt").is_file() and shipped["size_mb"] < 30
    card = (tmp_path / "diffusion.md").read_text()
    # the card holds what the run measured and the shipped weights' own config, not prose to match
    import json

    from engines.training.common import MetricsLog

    payload = torch.load(tmp_path / "diffusion.pt", weights_only=True)
    config_line = next(line for line in card.splitlines() if line.startswith("- **Config:**"))
    assert json.loads(config_line.split("`")[1]) == payload["config"]
    for row in MetricsLog(run_dir / "metrics.jsonl").rows():
        assert f"| {row['epoch']} | {row['minutes']} | {row['train_loss']:.4f} | {row['val_loss']:.4f} |" in card
    calibration = payload.get("onset_calibration")
    assert calibration is None or f"threshold {calibration['onset_threshold']} on the x0 scale" in card
    row = bench_diffusion(cfg, repeats=1)
    assert row["steps"] == 50 and row["seconds_one_segment"] > 0 and row["seconds_batch8"] > 0


def test_studio_engine_generates_with_diffusion(run_dir, tmp_path):
    import shutil
    from pathlib import Path

    from engines.api import Request, StudioEngine

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(run_dir / "best.pt", models / "diffusion.pt")
    cfg = load_config(overrides=TINY + [f"model.checkpoints_dir={models}"])
    engine = StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=tmp_path / "out")
    assert engine.engines_available() == ["diffusion"]
    params = Request(engine="diffusion", mode="BLUE", n=2, seed=3, settings={"steps": 4, "guidance_scale": 2.0})
    views = engine.generate(params)
    assert len(views) == 2 and all(Path(v.midi_path).read_bytes()[:4] == b"MThd" for v in views)
    assert [v.notes.pitch for v in engine.generate(params)] == [v.notes.pitch for v in views]
    with pytest.raises(StudioError, match="generation.sampling.diffusion.steps' = 5000 is not allowed"):
        engine.generate(Request(engine="diffusion", mode="BLUE", settings={"steps": 5000}))
    with pytest.raises(StudioError, match=r"steps must lie in 1..100 \(the model's training steps\)"):
        engine.generate(Request(engine="diffusion", mode="BLUE", settings={"steps": 200}))
    with pytest.raises(StudioError, match="no VAE checkpoint"):
        engine.generate(Request(engine="vae", mode="BLUE"))
