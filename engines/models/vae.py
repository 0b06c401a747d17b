"""Conditional β-VAE over 4-bar piano rolls.

    encoder  roll (B, 2, T, P) -> strided 1-D convolutions over time, pitches as channels -> (B, H, T/4)
             + mode embedding -> mean and log-variance of q(z | x, mode)            (B, latent)
    decoder  z + mode embedding + attributes (config.attributes: rebracketing, temporal complexity and the
             five axes, each with a given flag; engines/models/conditioning.py)
             -> (B, H, T/4) -> transposed convolutions -> onset and sustain logits    (B, 2, T, P)
             + heads for the metre (class of METRES) and the log tempo
    adversary (config.adversary_weight > 0) reads the mode and the attributes from z through a gradient
             reversal (Fader networks, Lample et al. 2017): the encoder learns to leave them out of z, so the
             decoder must take them from the condition, and a sample follows what it is asked for

    prior    "conditional": a learned Gaussian p(z | mode) = N(mu_mode, I) per mode (and one for WHITE); the
             KL term pulls each mode's posteriors towards its own centre, so a draw from p(z | RED) lands
             where RED segments live. The variance stays 1: a learned scale could shrink posteriors and
             prior together at no cost in KL, and latent distances would stop meaning anything.
             "standard": N(0, I) for every mode.

Why this shape: a 4-bar roll is 64 steps x 88 pitches but holds ~20 notes, so convolving over time with
pitches as channels is cheap on a CPU (one segment decodes in a few ms) while every layer still sees
all pitches, which is what chords and voice leading need. The encoder is conditioned on the mode too, so
the KL term pushes mode information out of z and the decoder must take it from the label (see
MusicVAE's conditioning and Sohn et al.'s CVAE).
"""
from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.data.torch_dataset import METRES, WHITE_INDEX
from engines.models.conditioning import (CONDITION_ATTRIBUTES, GradientReversal, attribute_dropout,
                                         attribute_inputs, attribute_width)
from engines.models.vae_config import VAEConfig


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.GroupNorm(8, channels), nn.GELU(), nn.Conv1d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels), nn.GELU(), nn.Dropout(dropout), nn.Conv1d(channels, channels, 3, padding=1),
        )

    def forward(self, x):  # (B, C, T)
        return x + self.net(x)


class ChromaticVAE(nn.Module):
    def __init__(self, config: VAEConfig, steps: int = 64, pitches: int = 88):
        super().__init__()
        assert steps % 4 == 0, "the roll length must be divisible by 4 (two stride-2 stages)"
        self.config, self.steps, self.pitches = config, steps, pitches
        h, latent = config.hidden_dim, config.latent_dim
        self.reduced = steps // 4
        self.mode_embedding = nn.Embedding(WHITE_INDEX + 1, config.mode_embedding)
        # Residual blocks run at T/2 and T/4 only: full-resolution layers cost most and add little.
        self.encoder = nn.Sequential(
            nn.Conv1d(2 * pitches, h, 4, stride=2, padding=1), ResidualBlock(h, config.dropout),
            nn.Conv1d(h, h, 4, stride=2, padding=1), ResidualBlock(h, config.dropout),
            nn.GroupNorm(8, h), nn.GELU(),
        )
        self.to_posterior = nn.Linear(h * self.reduced + config.mode_embedding, 2 * latent)
        unknown = [a for a in config.attributes if a not in CONDITION_ATTRIBUTES]
        if unknown:
            raise ValueError(f"unknown VAE attribute {unknown[0]!r}; known: {', '.join(CONDITION_ATTRIBUTES)}")
        # columns of the dataset's `conditions` this model reads, in its own order
        self.attribute_columns = [CONDITION_ATTRIBUTES.index(a) for a in config.attributes]
        n_attr = attribute_width(len(config.attributes), config.attribute_mask)
        self.from_latent = nn.Linear(latent + config.mode_embedding + n_attr, h * self.reduced)
        self.decoder = nn.Sequential(
            ResidualBlock(h, config.dropout),
            nn.ConvTranspose1d(h, h, 4, stride=2, padding=1), ResidualBlock(h, config.dropout),
            nn.GroupNorm(8, h), nn.GELU(),
            nn.ConvTranspose1d(h, 2 * pitches, 4, stride=2, padding=1),
        )
        # Mean of p(z | mode) per mode; zeros = N(0, I), which "standard" keeps frozen.
        self.prior = nn.Embedding(WHITE_INDEX + 1, latent)
        nn.init.zeros_(self.prior.weight)
        self.prior.weight.requires_grad_(config.prior == "conditional")
        self.metre_head = nn.Linear(latent + config.mode_embedding, len(METRES))
        self.tempo_head = nn.Linear(latent + config.mode_embedding, 1)
        self.adversary = nn.Sequential(nn.Linear(latent, 256), nn.GELU(), nn.Linear(256, WHITE_INDEX +
                                       len(config.attributes))) if config.adversary_weight > 0 else None

    # ---- the two halves ------------------------------------------------------------------------------
    def encode(self, roll: torch.Tensor, mode: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roll (B, 2, T, P), mode (B,) -> mean, log-variance, each (B, latent)."""
        b = roll.shape[0]
        x = roll.permute(0, 1, 3, 2).reshape(b, 2 * self.pitches, self.steps)   # (B, 2P, T)
        h = self.encoder(x).flatten(1)                                          # (B, H * T/4)
        stats = self.to_posterior(torch.cat([h, self.mode_embedding(mode)], dim=1))
        mean, logvar = stats.chunk(2, dim=1)
        return mean, logvar.clamp(-12, 8)

    def prior_mean(self, mode: torch.Tensor) -> torch.Tensor:
        """mode (B,) -> mean of p(z | mode), (B, latent); the prior's variance is 1 in every dimension."""
        return self.prior(mode)

    def metre_logits(self, z: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
        """z (B, latent), mode (B,) -> the metre head's logits (B, len(METRES)) alone, without the roll: cheap
        enough to screen many latents for a metre (TrainedVAE.latents_in_metre)."""
        return self.metre_head(torch.cat([z, self.mode_embedding(mode)], dim=1))

    def decode(self, z: torch.Tensor, mode: torch.Tensor, values: torch.Tensor | None = None,
               given: torch.Tensor | None = None) -> dict:
        """z (B, latent), mode (B,), attribute values (B, k) in config.attributes order and unit scale (None:
        none given), given flags (B, k) (None: all given) -> logits dict.

        onset/sustain (B, T, P) logits, metre (B, len(METRES)) logits, log_tempo (B,).
        """
        b = z.shape[0]
        condition = attribute_inputs(values, given, self.config.attribute_mask, len(self.config.attributes),
                                     b, z.device)
        m = self.mode_embedding(mode)
        h = self.from_latent(torch.cat([z, m, condition], dim=1)).view(b, -1, self.reduced)
        logits = self.decoder(h).view(b, 2, self.pitches, self.steps).permute(0, 1, 3, 2)  # (B, 2, T, P)
        zm = torch.cat([z, m], dim=1)
        return {"onset": logits[:, 0], "sustain": logits[:, 1], "metre": self.metre_head(zm),
                "log_tempo": self.tempo_head(zm).squeeze(1) + 4.8}  # 4.8 = log(120): start near a common tempo

    def batch_attributes(self, batch: dict) -> torch.Tensor:
        """A training or evaluation batch's attribute values (B, k), in this model's order."""
        return batch["conditions"][:, self.attribute_columns]

    def forward(self, batch: dict, condition_dropout: float = 0.0) -> dict:
        """Training pass: posterior sample (reparameterised) -> reconstruction. Returns decode() + mean, logvar,
        and the adversary's logits when there is one."""
        mode, values = batch["mode"], self.batch_attributes(batch)
        given = torch.ones_like(values)
        if self.training and condition_dropout > 0:
            drop = torch.rand(mode.shape[0], device=mode.device) < condition_dropout
            mode = torch.where(drop, torch.full_like(mode, WHITE_INDEX), mode)
            if self.config.attribute_mask == "each":
                given = attribute_dropout(mode.shape[0], values.shape[1], condition_dropout,
                                          self.config.attribute_dropout, mode.device)
            elif torch.rand(()) < condition_dropout:
                given = torch.zeros_like(values)
        mean, logvar = self.encode(batch["roll"], mode)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar) if self.training else mean
        out = self.decode(z, mode, values, given)
        out.update(mean=mean, logvar=logvar, prior_mean=self.prior_mean(mode))
        if self.adversary is not None:   # what it should read from z: the true mode and attribute values
            out.update(adversary=self.adversary(GradientReversal.apply(z, 1.0)), attributes=values)
        return out


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(prior_mean, I)) per dimension, (B, D); prior_mean None = 0."""
    offset = mean if prior_mean is None else mean - prior_mean
    return 0.5 * (offset ** 2 + logvar.exp() - 1 - logvar)


def vae_loss(out: dict, batch: dict, config: VAEConfig, beta: float) -> dict:
    """Reconstruction (onset and sustain BCE over valid steps, metre CE, tempo MSE) + beta * KL with free bits.

    Returns the total `loss` and its parts (floats for logging are taken by the caller with .item()).
    """
    valid = batch["valid"][:, :, None].float()                            # (B, T, 1)
    target_onset = batch["roll"][:, 0]
    target_sustain = (batch["roll"][:, 1] > 0).float()
    pos_weight = torch.tensor(config.onset_pos_weight, device=valid.device)
    per_step = lambda logits, target: F.binary_cross_entropy_with_logits(  # noqa: E731
        logits, target, pos_weight=pos_weight, reduction="none")
    # Everything per time step: BCE summed over pitches and averaged over valid steps; the KL of a whole
    # segment is spread over its T steps so that beta means the same at any roll length.
    n_valid = valid.sum().clamp_min(1)
    onset = (per_step(out["onset"], target_onset) * valid).sum() / n_valid
    sustain = (per_step(out["sustain"], target_sustain) * valid).sum() / n_valid
    metre = F.cross_entropy(out["metre"], batch["metre"])
    tempo = F.mse_loss(out["log_tempo"], batch["log_tempo"])
    kl_per_dim = gaussian_kl(out["mean"], out["logvar"], out.get("prior_mean")).mean(0)  # (latent,)
    kl_penalised = torch.clamp(kl_per_dim, min=config.free_bits).sum()
    loss = onset + sustain + metre + tempo + beta * kl_penalised / out["onset"].shape[1]
    parts = {"onset": onset, "sustain": sustain, "metre": metre, "tempo": tempo, "kl": kl_per_dim.sum()}
    if "adversary" in out:
        # the adversary reads the true mode and attributes from z; through the gradient reversal the same
        # loss teaches the encoder to leave them out (the weight scales both)
        guess = out["adversary"]
        adversary = F.cross_entropy(guess[:, :WHITE_INDEX], batch["mode"]) + \
            F.mse_loss(torch.sigmoid(guess[:, WHITE_INDEX:]), out["attributes"])
        loss = loss + config.adversary_weight * adversary
        parts["adversary"] = adversary
    return {"loss": loss, **parts}


def beta_at(config: VAEConfig, epoch: float) -> float:
    """β after `epoch` (fractional) epochs: constant, linear warm-up, or cyclical (ramp over the first half
    of each cycle, hold for the second; Fu et al. 2019)."""
    if config.beta_schedule == "constant" or config.beta_warmup_epochs <= 0:
        return config.beta
    if config.beta_schedule == "linear":
        return config.beta * min(1.0, epoch / config.beta_warmup_epochs)
    phase = (epoch % config.beta_warmup_epochs) / config.beta_warmup_epochs
    return config.beta * min(1.0, 2 * phase)


def checkpoint_payload(model: ChromaticVAE, metrics: dict, extra: dict | None = None) -> dict:
    """What a checkpoint file holds: enough to rebuild the model with nothing else."""
    return {"engine": "vae", "config": asdict(model.config), "steps": model.steps, "pitches": model.pitches,
            "metres": [list(m) for m in METRES], "state_dict": model.state_dict(), "metrics": metrics,
            **(extra or {})}


def model_from_checkpoint(payload: dict) -> ChromaticVAE:
    # a checkpoint from before per-attribute flags: its two attributes share one flag
    config = VAEConfig(**{"attribute_mask": "shared", "attribute_dropout": 0.0, **payload["config"]})
    model = ChromaticVAE(config, payload["steps"], payload["pitches"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
