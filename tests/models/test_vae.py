"""The conditional β-VAE network (engines/models/vae.py): shapes, the loss and its β schedules, the condition
(every attribute on its own, a mode's interior) and the adversary that keeps the mode out of z."""

import numpy as np
import pytest
import torch

from engines.data.torch_dataset import METRES, WHITE_INDEX
from engines.models.trained_vae import TrainedVAE
from engines.models.vae import (ChromaticVAE, beta_at, checkpoint_payload, model_from_checkpoint, vae_loss)
from engines.models.vae_config import VAEConfig
from engines.music.notes import Segment
from engines.training.common import save_checkpoint

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core


# ---- network -------------------------------------------------------------------------------------------------
def test_forward_shapes(vae_batch):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=16, hidden_dim=32, batch_size=8, epochs=2)
    model = ChromaticVAE(cfg)
    b = vae_batch["roll"].shape[0]
    assert vae_batch["roll"].shape == (b, 2, 64, 88)
    for train in (True, False):
        model.train(train)
        out = model(vae_batch, condition_dropout=0.5)
        assert out["onset"].shape == (b, 64, 88) and out["sustain"].shape == (b, 64, 88)
        assert out["metre"].shape == (b, len(METRES))
        assert out["log_tempo"].shape == (b,)
        assert out["mean"].shape == (b, 16) and out["logvar"].shape == (b, 16)
        assert all(torch.isfinite(v).all() for v in out.values())
    # In eval mode the latent is the posterior mean: the pass is deterministic.
    model.eval()
    torch.testing.assert_close(model(vae_batch)["onset"], model(vae_batch)["onset"])
    # Decoding without attributes (the "not given" flag) works and differs from decoding with them.
    z = torch.zeros(b, 16)
    with_attr = model.decode(z, vae_batch["mode"], model.batch_attributes(vae_batch))["onset"]
    without = model.decode(z, vae_batch["mode"])["onset"]
    assert with_attr.shape == without.shape and not torch.equal(with_attr, without)
    white = model.decode(z, torch.full((b,), WHITE_INDEX))["onset"]
    assert white.shape == (b, 64, 88)


def test_latent_512_builds_trains_a_step_and_samples(vae_batch, tmp_path):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=512, hidden_dim=32, batch_size=8, epochs=1)
    model = ChromaticVAE(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(vae_batch)
    assert out["mean"].shape == (vae_batch["roll"].shape[0], 512)
    loss = vae_loss(out, vae_batch, cfg, beta=0.2)["loss"]
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name in ("to_posterior.weight", "from_latent.weight", "metre_head.weight", "tempo_head.bias"):
        assert not torch.equal(before[name], after[name]), name
    # Sampling through the wrapper, and the same after a save/load round trip.
    path = save_checkpoint(checkpoint_payload(model, {"step": 1}), tmp_path / "big.pt")
    loaded = TrainedVAE.load(path)
    assert loaded.latent_dim == 512
    segments, z = loaded.sample("RED", n=2, seed=3)
    assert z.shape == (2, 512) and len(segments) == 2 and all(isinstance(s, Segment) for s in segments)
    again, _ = TrainedVAE(model, checkpoint_payload(model, {})).sample("RED", n=2, seed=3)
    for a, b in zip(segments, again):
        np.testing.assert_array_equal(a.notes, b.notes)


# ---- loss and β ----------------------------------------------------------------------------------------------
def _toy_out(b=2, t=64, p=88, latent=16, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"onset": torch.randn(b, t, p, generator=g), "sustain": torch.randn(b, t, p, generator=g),
            "metre": torch.randn(b, len(METRES), generator=g), "log_tempo": torch.randn(b, generator=g) + 4.8,
            "mean": torch.zeros(b, latent), "logvar": torch.zeros(b, latent)}


def _toy_batch(b=2, t=64, p=88, valid_steps=32, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    roll = torch.zeros(b, 2, t, p)
    roll[:, 0] = (torch.rand(b, t, p, generator=g) < 0.02).float()
    roll[:, 1] = (torch.rand(b, t, p, generator=g) < 0.05).float() * 0.6
    valid = torch.zeros(b, t, dtype=torch.bool)
    valid[:, :valid_steps] = True
    return {"roll": roll, "valid": valid, "mode": torch.zeros(b, dtype=torch.long),
            "attributes": torch.zeros(b, 2), "conditions": torch.zeros(b, 7), "metre": torch.zeros(b, dtype=torch.long),
            "log_tempo": torch.full((b,), 4.6)}


def test_vae_loss_parts_are_present_and_finite(vae_batch):
    cfg = VAEConfig(latent_dim=16, hidden_dim=32)
    torch.manual_seed(0)
    model = ChromaticVAE(cfg).train()
    parts = vae_loss(model(vae_batch), vae_batch, cfg, beta=0.2)
    assert set(parts) == {"loss", "onset", "sustain", "metre", "tempo", "kl"}
    for name, value in parts.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert parts["onset"] > 0 and parts["sustain"] > 0 and parts["kl"] >= 0
    parts["loss"].backward()  # the total is differentiable end to end
    assert model.encoder[0].weight.grad is not None


def test_vae_loss_free_bits():
    cfg = VAEConfig(latent_dim=16, free_bits=0.05)
    out, batch = _toy_out(), _toy_batch()
    zero, one = vae_loss(out, batch, cfg, beta=0.0), vae_loss(out, batch, cfg, beta=1.0)
    # The posterior equals the prior: no KL, but each dimension is charged its free bits.
    assert zero["kl"].item() == 0.0 and one["kl"].item() == 0.0
    # (float32 sums near 100 leave ~1e-5 of rounding in a difference of two losses)
    assert (one["loss"] - zero["loss"]).item() == pytest.approx(0.05 * 16 / 64, abs=5e-5)
    assert (vae_loss(out, batch, cfg, beta=2.0)["loss"] - zero["loss"]).item() == pytest.approx(2 * 0.05 * 16 / 64,
                                                                                                 abs=5e-5)
    # Above the free bits the real KL counts: mean 1 everywhere is 0.5 nats per dimension.
    out["mean"] = torch.ones(2, 16)
    shifted = vae_loss(out, batch, cfg, beta=1.0)
    assert shifted["kl"].item() == pytest.approx(0.5 * 16)
    assert (shifted["loss"] - vae_loss(out, batch, cfg, beta=0.0)["loss"]).item() == pytest.approx(0.5 * 16 / 64,
                                                                                                    abs=5e-5)


def test_vae_loss_ignores_invalid_steps():
    cfg = VAEConfig(latent_dim=16)
    out, batch = _toy_out(), _toy_batch(valid_steps=32)
    base = vae_loss(out, batch, cfg, beta=0.5)
    changed = {k: v.clone() for k, v in out.items()}
    changed["onset"][:, 32:] = 25.0
    changed["sustain"][:, 32:] = -25.0
    for k in ("loss", "onset", "sustain"):
        assert vae_loss(changed, batch, cfg, beta=0.5)[k].item() == pytest.approx(base[k].item(), rel=1e-6)
    # The same change inside the segment does move the loss.
    inside = {k: v.clone() for k, v in out.items()}
    inside["onset"][:, :32] = 25.0
    assert vae_loss(inside, batch, cfg, beta=0.5)["loss"].item() > base["loss"].item() + 1


def test_beta_constant():
    cfg = VAEConfig(beta=0.3, beta_schedule="constant", beta_warmup_epochs=10)
    assert [beta_at(cfg, e) for e in (0, 0.5, 7, 100)] == [0.3] * 4
    # No warm-up length means no schedule.
    assert beta_at(VAEConfig(beta=0.3, beta_schedule="linear", beta_warmup_epochs=0), 0) == 0.3


def test_beta_linear():
    cfg = VAEConfig(beta=0.2, beta_schedule="linear", beta_warmup_epochs=10)
    assert beta_at(cfg, 0) == 0.0
    assert beta_at(cfg, 2.5) == pytest.approx(0.05)
    assert beta_at(cfg, 5) == pytest.approx(0.1)
    assert beta_at(cfg, 10) == pytest.approx(0.2)
    assert beta_at(cfg, 37) == pytest.approx(0.2)


def test_beta_cyclical():
    cfg = VAEConfig(beta=0.2, beta_schedule="cyclical", beta_warmup_epochs=10)
    first = [beta_at(cfg, e) for e in (0, 2.5, 5, 7.5, 9.9)]
    assert first == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.2])
    second = [beta_at(cfg, e) for e in (10, 12.5, 15, 17.5, 19.9)]
    assert second == pytest.approx(first)  # each cycle repeats the first
    assert beta_at(cfg, 21) == pytest.approx(0.04)


# ---- the condition: every attribute on its own, a mode's interior, an adversary on z ------------------------
def test_a_first_checkpoint_with_one_shared_attribute_flag_still_loads_and_decodes(vae_batch):
    old = ChromaticVAE(VAEConfig(latent_dim=16, hidden_dim=32, attributes=["rebracketing", "temporal_complexity"],
                                 attribute_mask="shared"))
    payload = checkpoint_payload(old, {})
    for key in ("attribute_mask", "attribute_dropout", "adversary_weight"):   # as the first checkpoints were
        payload["config"].pop(key)
    loaded = model_from_checkpoint(payload)
    assert loaded.config.attribute_mask == "shared" and loaded.from_latent.in_features == 16 + 16 + 3
    z = torch.zeros(2, 16)
    values = torch.tensor([[0.5, 0.2], [0.5, 0.2]])
    assert torch.equal(loaded.decode(z, torch.zeros(2, dtype=torch.long), values)["onset"],
                       old.eval().decode(z, torch.zeros(2, dtype=torch.long), values)["onset"])


def test_the_adversary_learns_to_read_z_while_the_encoder_learns_to_hide_the_mode(vae_batch):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=16, hidden_dim=32, adversary_weight=1.0)
    model = ChromaticVAE(cfg).eval()                      # z = the posterior mean: both passes see the same z
    parts = vae_loss(model(vae_batch), vae_batch, cfg, beta=0.2)
    assert "adversary" in parts and torch.isfinite(parts["adversary"])
    parts["adversary"].backward()
    through_reversal = (model.adversary[0].weight.grad.clone(), model.to_posterior.weight.grad.clone())
    model.zero_grad()
    mean, _ = model.encode(vae_batch["roll"], vae_batch["mode"])
    guess = model.adversary(mean)
    direct = torch.nn.functional.cross_entropy(guess[:, :8], vae_batch["mode"]) + torch.nn.functional.mse_loss(
        torch.sigmoid(guess[:, 8:]), vae_batch["conditions"][:, model.attribute_columns])
    direct.backward()
    # the adversary learns to read z as it would without the reversal; the encoder gets the opposite push
    assert torch.allclose(model.adversary[0].weight.grad, through_reversal[0], atol=1e-6)
    assert torch.allclose(model.to_posterior.weight.grad, -through_reversal[1], atol=1e-6)
    assert through_reversal[1].abs().sum() > 0
