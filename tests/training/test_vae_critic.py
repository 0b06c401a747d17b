"""Fine-tuning the VAE: a run that starts from an earlier run's weights (init_checkpoint), and the attribute-
consistency term (engines/training/vae_critic.py): what the critic reads, which weights its error trains, the
checks on the critic, and a training run that logs it."""
import math

import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.models.guidance_classifier import NoisyRollClassifier, classifier_payload
from engines.models.guidance_config import GuidanceClassifierConfig
from engines.models.vae import ChromaticVAE
from engines.models.vae_config import VAEConfig
from engines.sampling.diffusion import NoiseScheduler
from engines.training.common import MetricsLog
from engines.training.vae_critic import CRITIC_ONSET_THRESHOLD, critic_loss, load_critic, straight_through_roll
from engines.training.vae_trainer import train_vae
from tests.helpers import TINY_VAE, VAE_LIMIT

torch.set_num_threads(1)


def test_the_critic_reads_the_roll_sampling_writes_and_passes_the_probabilities_gradient():
    onset = torch.tensor([[[2.0, 1.0, -3.0]]], requires_grad=True)      # (1, T=1, P=3)
    sustain = torch.tensor([[[0.5, -0.5, 4.0]]], requires_grad=True)
    roll = straight_through_roll({"onset": onset, "sustain": sustain})
    # sigmoid(2) = 0.88 and sigmoid(1) = 0.73 against the 0.775 threshold; sustain above 1/2
    assert CRITIC_ONSET_THRESHOLD == 0.775
    assert torch.allclose(roll, torch.tensor([[[[1.0, -1.0, -1.0]], [[1.0, -1.0, 1.0]]]]), atol=1e-6)
    roll.sum().backward()
    expected = 2 * torch.sigmoid(onset) * (1 - torch.sigmoid(onset))
    assert torch.allclose(onset.grad, expected)


@pytest.fixture(scope="module")
def critic_path(classifier_run):
    return classifier_run[0] / "best.pt"


def test_its_error_trains_the_decoder_alone(vae_batch, critic_path):
    torch.manual_seed(0)
    model = ChromaticVAE(VAEConfig(latent_dim=16, hidden_dim=32)).train()
    critic = load_critic(str(critic_path), model, "cpu")
    out = model(vae_batch)
    loss = critic_loss(model, critic, vae_batch, out["mean"], torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and 0 <= loss.item() <= 1          # squared error of values in [0, 1]
    loss.backward()
    assert model.from_latent.weight.grad.abs().sum() > 0     # the decoder is asked to follow the condition
    assert model.to_posterior.weight.grad is None            # z is detached: the encoder is not
    assert all(p.grad is None for p in critic.model.parameters())   # the critic stays as trained


def test_a_critic_must_read_what_the_vae_is_conditioned_on(tmp_path):
    model = ChromaticVAE(VAEConfig(latent_dim=16, hidden_dim=32))
    config = GuidanceClassifierConfig(base_channels=16, channel_mults=[1, 2], embedding_dim=32, attributes=["energy"])
    path = tmp_path / "critic.pt"
    torch.save(classifier_payload(NoisyRollClassifier(config), NoiseScheduler(100), {}, 0.5), path)
    with pytest.raises(StudioError, match="model.vae.critic: .* reads no rebracketing .*reads: energy"):
        load_critic(str(path), model, "cpu")
    other_keys = ChromaticVAE(VAEConfig(latent_dim=16, hidden_dim=32, key_to_c=False, attributes=["energy"]))
    with pytest.raises(StudioError, match="key_to_c True.*key_to_c False"):
        load_critic(str(path), other_keys, "cpu")


def test_a_run_with_a_critic_logs_its_error(tmp_path, critic_path, corpus_cache):
    with_critic = ["model.vae.epochs=1", f"model.vae.critic={critic_path}", "model.vae.critic_weight=5"]
    cfg = load_config(overrides=TINY_VAE[:-1] + with_critic)
    train_vae(cfg, tmp_path, limit=VAE_LIMIT, workers=0, finalize=False)
    [row] = MetricsLog(tmp_path / "metrics.jsonl").rows()
    for key in ("train_critic", "val_critic"):
        assert math.isfinite(row[key]) and 0 <= row[key] <= 1, key


def test_a_run_starts_from_an_earlier_runs_weights(vae_run, tmp_path):
    """init_checkpoint: a fine-tune begins at the earlier run's weights (at a learning rate of 1e-12 it stays there),
    not at random ones; here it also adds an adversary the earlier run had none of."""
    init = vae_run[0] / "best.pt"
    fine_tune = ["model.vae.epochs=1", "model.vae.learning_rate=1e-12", f"model.vae.init_checkpoint={init}",
                 "model.vae.adversary_weight=1.0", "model.vae.select_by=last"]
    cfg = load_config(overrides=TINY_VAE[:-1] + fine_tune)
    train_vae(cfg, tmp_path, limit=VAE_LIMIT, workers=0, finalize=False)
    before = torch.load(init, weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "best.pt", weights_only=True)["state_dict"]
    assert set(after) - set(before) == {k for k in after if k.startswith("adversary.")} != set()
    for key, value in before.items():
        assert torch.allclose(after[key].float(), value.float(), atol=1e-6), key
    fresh = load_config(overrides=TINY_VAE[:-1] + ["model.vae.epochs=1", "model.vae.learning_rate=1e-12"])
    train_vae(fresh, tmp_path / "fresh", limit=VAE_LIMIT, workers=0, finalize=False)
    scratch = torch.load(tmp_path / "fresh" / "best.pt", weights_only=True)["state_dict"]
    assert not torch.allclose(scratch["from_latent.weight"], before["from_latent.weight"])


def test_init_checkpoint_names_what_does_not_fit(vae_run, tmp_path):
    init = vae_run[0] / "best.pt"
    wider = load_config(overrides=TINY_VAE[:-1] + ["model.vae.epochs=1", "model.vae.latent_dim=8",
                                                   f"model.vae.init_checkpoint={init}"])
    with pytest.raises(StudioError, match="does not fit this model's shape .*size mismatch"):
        train_vae(wider, tmp_path / "a", limit=VAE_LIMIT, workers=0, finalize=False)
    missing = load_config(overrides=TINY_VAE[:-1] + [f"model.vae.init_checkpoint={tmp_path / 'none.pt'}"])
    with pytest.raises(StudioError, match="init_checkpoint: no checkpoint at .*none.pt"):
        train_vae(missing, tmp_path / "b", limit=VAE_LIMIT, workers=0, finalize=False)
