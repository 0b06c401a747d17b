"""The noise-aware guidance classifier (engines/models/guidance_classifier.py, training/guidance_trainer.py):
its targets, shapes, gradient, metric grids, training, card and checkpoint checks."""
import pytest
import torch

from engines.cli import main
from engines.errors import StudioError
from engines.models.denoiser import roll_to_unit
from engines.models.guidance_classifier import (GuidanceTarget, NoisyRollClassifier, TrainedGuidanceClassifier,
                                                classifier_loss, guidance_gradient)
from engines.sampling.diffusion import NoiseScheduler
from engines.training.guidance_trainer import high_rebracketing_threshold
from tests.helpers import TINY_DIFFUSION

torch.set_num_threads(1)


def tiny_classifier(diffusion_cfg) -> NoisyRollClassifier:
    torch.manual_seed(0)
    return NoisyRollClassifier(diffusion_cfg.model.guidance_classifier).eval()


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
def test_classifier_shapes_and_loss_counts(diffusion_cfg, diffusion_batch):
    model = tiny_classifier(diffusion_cfg)
    x = roll_to_unit(diffusion_batch["roll"])
    mode_logits, high_logit, attributes = model(x, torch.full((8,), 10), diffusion_batch["metre"],
                                                diffusion_batch["log_tempo"])
    assert mode_logits.shape == (8, 8) and high_logit.shape == (8,)
    assert attributes.shape == (8, 7) and 0 <= attributes.min() and attributes.max() <= 1
    loss, counts = classifier_loss(model, NoiseScheduler(100), diffusion_batch, 0.5, 1.0,
                                   torch.Generator().manual_seed(0))
    assert loss.item() > 0 and counts["n"] == 8 and 0 <= counts["mode_hits"] <= 8 and 0 <= counts["high_hits"] <= 8
    assert len(counts["attribute_error"]) == 7 and 0 < sum(counts["attribute_error"]) <= 8 * 7
    with pytest.raises(StudioError, match="reads the tempo; pass log_tempo"):
        model(x, torch.full((8,), 10), diffusion_batch["metre"])


def test_the_attribute_head_is_trained_toward_the_measured_attributes(diffusion_cfg, diffusion_batch):
    """The loss counts the head's squared error against the batch's conditions, weighted attribute_weight."""
    model = tiny_classifier(diffusion_cfg)
    scheduler, weight = NoiseScheduler(100), model.config.attribute_weight
    loss, _ = classifier_loss(model, scheduler, diffusion_batch, 0.5, 1.0, torch.Generator().manual_seed(0))
    model.config.attribute_weight = 0.0
    try:
        without, _ = classifier_loss(model, scheduler, diffusion_batch, 0.5, 1.0, torch.Generator().manual_seed(0))
    finally:
        model.config.attribute_weight = weight
    generator = torch.Generator().manual_seed(0)   # the same steps and noise as the loss drew
    t = torch.floor(torch.rand(8, generator=generator) * 100).long()
    noise = torch.randn(diffusion_batch["roll"].shape, generator=generator)
    with torch.no_grad():
        estimate = model(scheduler.add_noise(roll_to_unit(diffusion_batch["roll"]), noise, t), t,
                         diffusion_batch["metre"], diffusion_batch["log_tempo"])[2]
    error = (estimate - diffusion_batch["conditions"]).pow(2).mean()
    torch.testing.assert_close(loss - without, weight * error)


def test_attribute_gradient_moves_the_estimate_toward_the_aim(diffusion_cfg, diffusion_batch):
    model = tiny_classifier(diffusion_cfg)
    x = roll_to_unit(diffusion_batch["roll"])
    t, metre, tempo = torch.zeros(8, dtype=torch.long), diffusion_batch["metre"], diffusion_batch["log_tempo"]
    with torch.no_grad():
        estimate = model(x, t, metre, tempo)[2]
    energy = model.config.attributes.index("energy")
    values, given = torch.zeros(8, 7), torch.zeros(8, 7)
    values[:, energy] = (estimate[:, energy] + 0.3).clamp(max=1)   # more energy than the head reads now
    given[:, energy] = 1
    grad = guidance_gradient(model, x, t, metre, log_tempo=tempo, attributes=(values, given))
    with torch.no_grad():
        moved = model(x + 1e-2 * grad / grad.flatten(1).norm(dim=1)[:, None, None, None], t, metre, tempo)[2]
    assert ((moved[:, energy] - values[:, energy]).abs() < (estimate[:, energy] - values[:, energy]).abs()).all()
    nothing = guidance_gradient(model, x, t, metre, log_tempo=tempo, attributes=(values, torch.zeros_like(given)))
    assert torch.equal(nothing, torch.zeros_like(x))   # nothing given, no push


def test_a_checkpoint_from_before_the_attribute_head_still_loads(diffusion_cfg, tmp_path):
    from dataclasses import asdict, replace

    from engines.models.guidance_classifier import LEGACY_CONFIG, classifier_payload
    from engines.training.common import save_checkpoint

    old = NoisyRollClassifier(replace(diffusion_cfg.model.guidance_classifier, **LEGACY_CONFIG))
    payload = classifier_payload(old, NoiseScheduler(100), {}, 0.5)
    payload["config"] = {k: v for k, v in asdict(old.config).items() if k not in LEGACY_CONFIG}   # as it was saved
    save_checkpoint(payload, tmp_path / "old.pt")
    loaded = TrainedGuidanceClassifier.load(tmp_path / "old.pt")
    assert loaded.attributes == () and loaded.model.tempo_projection is None


def test_gradient_points_uphill_in_log_probability(diffusion_cfg, diffusion_batch):
    model = tiny_classifier(diffusion_cfg)
    x = roll_to_unit(diffusion_batch["roll"])
    t, metre, mode = torch.full((8,), 20), diffusion_batch["metre"], torch.arange(8)

    def log_p(x_in):
        mode_logits, high_logit, _ = model(x_in, t, metre, diffusion_batch["log_tempo"])
        return (torch.log_softmax(mode_logits, 1)[torch.arange(8), mode] + torch.nn.functional.logsigmoid(high_logit))

    grad = guidance_gradient(model, x, t, metre, mode, "high", diffusion_batch["log_tempo"])
    assert grad.shape == x.shape and grad.abs().sum() > 0
    with torch.no_grad():
        assert (log_p(x + 1e-2 * grad / grad.norm()) > log_p(x)).all()
    assert torch.equal(guidance_gradient(model, x, t, metre), torch.zeros_like(x))  # no target, no push
    low = guidance_gradient(model, x, t, metre, None, "low", diffusion_batch["log_tempo"])
    high = guidance_gradient(model, x, t, metre, None, "high", diffusion_batch["log_tempo"])
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


def test_training_writes_checkpoints_and_accuracies(classifier_run, diffusion_cfg):
    out, best = classifier_run
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file() and (out / "loss.png").is_file()
    assert {"val_mode_acc", "val_high_acc", "val_high_recall", "val_mode_acc_low_noise", "val_high_acc_low_noise",
            "val_high_recall_low_noise"} <= set(best)
    assert all(0 <= best[k] <= 1 for k in best if k.startswith("val_") and ("acc" in k or "recall" in k))
    assert 0 < best["val_axes_mae_low_noise"] < 1
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
    assert "axes MAE t < T/10 |" in card and "attribute head" in card
    assert "100 cosine steps" in card


def test_train_command_accepts_the_classifier(tmp_path, capsys):
    assert main(["train", "--engine", "guidance-classifier", "--limit", "16", "--workers", "0", "--out",
                 str(tmp_path), *[x for o in TINY_DIFFUSION for x in ("--set", o)],
                 "--set", "model.guidance_classifier.epochs=1"]) == 0
    assert (tmp_path / "best.pt").is_file() and '"val_mode_acc"' in capsys.readouterr().out


def test_a_denoiser_checkpoint_is_not_a_classifier(guided_diffusion, tmp_path):
    with pytest.raises(StudioError, match="not a guidance classifier"):
        TrainedGuidanceClassifier(guided_diffusion.payload)
