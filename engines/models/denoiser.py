"""The diffusion engine's denoiser: a 1-D U-Net over the 4-bar piano roll.

    x_t       (B, 2, T, P) noisy roll in [-1, 1] scale (onset and sustain channels; -1 = silent)
              -> pitches x channels become the convolution channels: (B, 2P, T)
    levels    residual blocks at T, T/2, T/4 (channels base x channel_mults), self-attention over the T/4
              steps at the bottom, skip connections back up
    condition timestep (sinusoidal -> MLP) + chromatic mode (WHITE = the null class, also used for classifier-
              free guidance) + attributes (engines/models/conditioning.py: each given or not) + metre, summed
              into one vector that scales and shifts every block's normalised activations (FiLM / AdaGN)
    output    (B, 2, T, P): x0 (default), epsilon or v, as the config's `prediction` says

It predicts x0 by default: a clean roll is sparse (~25 notes) and fits through the time-convolution's
width, while Gaussian noise over all 11,264 cells does not, so asked for epsilon or v the network would have
to reproduce dense noise cell by cell; the sampler derives epsilon from x0 and x_t. docs/diffusion.md gives
the measurement behind that choice and why the roll, not the VAE's latent, is what it denoises.

    model = RollDenoiser(DiffusionConfig(), steps=64, pitches=88)
    x0 = model(x_t, t, mode, values, given, metre)     # engines/models/trained_diffusion.py samples with it
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.data.torch_dataset import METRES, WHITE_INDEX
from engines.models.conditioning import CONDITION_ATTRIBUTES, attribute_dropout, attribute_inputs, attribute_width
from engines.models.diffusion_config import DiffusionConfig


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) step indices -> (B, dim) sinusoidal features (Vaswani et al.; DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FiLMBlock(nn.Module):
    """GroupNorm -> scale/shift from the condition -> SiLU -> conv, twice, plus a residual path."""

    def __init__(self, c_in: int, c_out: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv1d(c_in, c_out, 3, padding=1)
        self.film = nn.Linear(embedding_dim, 2 * c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv1d(c_out, c_out, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity: stable early training
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:  # x (B, C, T), cond (B, E)
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(cond)[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = self.norm(x).transpose(1, 2)                  # (B, T, C)
        return x + self.attn(h, h, h, need_weights=False)[0].transpose(1, 2)


class RollDenoiser(nn.Module):
    def __init__(self, config: DiffusionConfig, steps: int = 64, pitches: int = 88):
        super().__init__()
        levels = len(config.channel_mults)
        assert steps % 2 ** (levels - 1) == 0, f"the roll length must be divisible by {2 ** (levels - 1)}"
        self.config, self.steps, self.pitches = config, steps, pitches
        e = config.embedding_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.mode_embedding = nn.Embedding(WHITE_INDEX + 1, e)
        unknown = [a for a in config.attributes if a not in CONDITION_ATTRIBUTES]
        if unknown:
            raise ValueError(f"unknown diffusion attribute {unknown[0]!r}; known: {', '.join(CONDITION_ATTRIBUTES)}")
        self.attribute_columns = [CONDITION_ATTRIBUTES.index(a) for a in config.attributes]  # of batch["conditions"]
        self.attribute_mlp = nn.Linear(attribute_width(len(config.attributes), config.attribute_mask), e)
        self.metre_embedding = nn.Embedding(len(METRES), e)
        channels = [config.base_channels * m for m in config.channel_mults]
        self.stem = nn.Conv1d(2 * pitches, channels[0], 3, padding=1)
        # A learned vector per step: convolutions alone cannot tell a downbeat from an off-beat, and where an
        # onset falls in the bar is what metre, syncopation and the analyzer's rebracketing are about.
        self.position = nn.Parameter(torch.zeros(1, channels[0], steps))
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        c_prev, skips = channels[0], []
        for i, c in enumerate(channels):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(FiLMBlock(c_prev, c, e, config.dropout))
                c_prev = c
                skips.append(c)
            self.down.append(blocks)
            self.downsample.append(nn.Conv1d(c, c, 4, stride=2, padding=1) if i < levels - 1 else nn.Identity())
        self.mid1 = FiLMBlock(c_prev, c_prev, e, config.dropout)
        self.mid_attention = Attention(c_prev, config.attention_heads)
        self.mid2 = FiLMBlock(c_prev, c_prev, e, config.dropout)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, c in reversed(list(enumerate(channels))):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(FiLMBlock(c_prev + skips.pop(), c, e, config.dropout))
                c_prev = c
            self.up.append(blocks)
            self.upsample.append(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1) if i > 0 else nn.Identity())
        self.out = nn.Sequential(nn.GroupNorm(8, c_prev), nn.SiLU(), nn.Conv1d(c_prev, 2 * pitches, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def condition(self, t: torch.Tensor, mode: torch.Tensor, values: torch.Tensor | None, given: torch.Tensor | None,
                  metre: torch.Tensor) -> torch.Tensor:
        """(B,) step, (B,) mode (WHITE_INDEX = none), attribute values (B, k) in config.attributes order and unit
        scale (None: none given) with given flags (B, k) (None: all given), (B,) metre -> (B, E)."""
        b = t.shape[0]
        given = attribute_inputs(values, given, self.config.attribute_mask, len(self.config.attributes), b, t.device)
        time = self.time_mlp(timestep_embedding(t, self.config.embedding_dim))
        return time + self.mode_embedding(mode) + self.attribute_mlp(given) + self.metre_embedding(metre)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, mode: torch.Tensor, values: torch.Tensor | None,
                given: torch.Tensor | None, metre: torch.Tensor) -> torch.Tensor:
        """x_t (B, 2, T, P) -> the prediction (B, 2, T, P); the condition as `condition` takes it."""
        b = x_t.shape[0]
        cond = self.condition(t, mode, values, given, metre)
        h = self.stem(x_t.permute(0, 1, 3, 2).reshape(b, 2 * self.pitches, self.steps)) + self.position  # (B, C, T)
        skips = []
        for blocks, downsample in zip(self.down, self.downsample):
            for block in blocks:
                h = block(h, cond)
                skips.append(h)
            h = downsample(h)
        h = self.mid2(self.mid_attention(self.mid1(h, cond)), cond)
        for blocks, upsample in zip(self.up, self.upsample):
            for block in blocks:
                h = block(torch.cat([h, skips.pop()], dim=1), cond)
            h = upsample(h)
        return self.out(h).view(b, 2, self.pitches, self.steps).permute(0, 1, 3, 2)


def roll_to_unit(roll: torch.Tensor) -> torch.Tensor:
    """A dataset roll (B, 2, T, P) (onsets 0/1, velocity while sounding) -> diffusion space: onset and
    sustain as -1 (off) / +1 (on)."""
    return torch.stack([roll[:, 0] > 0.5, roll[:, 1] > 0], dim=1).float() * 2 - 1


def diffusion_loss(model: RollDenoiser, scheduler, batch: dict, condition_dropout: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean squared error of the prediction over the valid steps of a batch, at uniformly drawn steps.

    With probability `condition_dropout` a segment is trained as WHITE and, independently, without
    attributes: the unconditional model that classifier-free guidance contrasts with."""
    x0 = roll_to_unit(batch["roll"])
    b, device = x0.shape[0], x0.device
    # without a generator (training) the steps and noise are drawn on the batch's device (on CUDA: no CPU draw and
    # copy each step); a generator (validation's fixed CPU one) draws them on the CPU, the same on any device
    where = device if generator is None else None
    t = torch.randint(0, scheduler.num_steps, (b,), generator=generator, device=where).to(device)
    noise = torch.randn(x0.shape, generator=generator, device=where).to(device)
    config = model_config(model)
    mode, values = batch["mode"], batch["conditions"][:, unwrapped(model).attribute_columns]
    given = torch.ones_like(values)
    if model.training and condition_dropout > 0:
        drop = torch.rand(b, generator=generator, device=where).to(device) < condition_dropout
        mode = torch.where(drop, torch.full_like(mode, WHITE_INDEX), mode)
        if config.attribute_mask == "each":   # every subset of attributes is seen, and none (for CFG)
            given = attribute_dropout(b, values.shape[1], condition_dropout, config.attribute_dropout, device)
        else:
            kept = torch.rand(b, 1, generator=generator, device=where).to(device) >= condition_dropout
            given = kept.float().expand_as(values)
    prediction = model(scheduler.add_noise(x0, noise, t), t, mode, values, given, batch["metre"])
    errors, cells = row_errors(scheduler, prediction, x0, noise, t, batch["valid"], model_config(model).min_snr_gamma)
    return errors.sum() / cells.sum().clamp_min(1)


def row_errors(scheduler, prediction: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
               valid: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's min-SNR-weighted squared error of `prediction` (B, 2, T, P) against the scheduler's target for
    x0 and noise at steps t, summed over its valid steps (valid (B, T)), and the cells summed (B,):
    diffusion_loss is their ratio over the batch."""
    target = scheduler.training_target(x0, noise, t)
    valid = valid[:, None, :, None].float()                                       # (B, 1, T, 1)
    weight = loss_weights(scheduler, t, gamma)[:, None, None, None]               # (B, 1, 1, 1)
    errors = (((prediction - target) ** 2) * valid * weight).sum(dim=(1, 2, 3))  # (B,)
    return errors, valid.sum(dim=(1, 2, 3)) * x0.shape[1] * x0.shape[3]


def unwrapped(model) -> "RollDenoiser":
    return model.module if hasattr(model, "module") else model   # DDP wraps the denoiser


def model_config(model) -> DiffusionConfig:
    return unwrapped(model).config


def loss_weights(scheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma weights (Hang et al. 2023), (B,), expressed for the scheduler's prediction target so that
    the implied x0 loss is weighted by min(SNR, gamma) / gamma. Steps with so much noise that x0 cannot be
    told (SNR << 1) would otherwise dominate an x0 loss with errors nothing can learn, while the fine detail
    (onsets, short notes) is decided at low noise; epsilon's plain loss (x0 weight SNR) errs the other way.
    gamma 0 = every step weighs 1 in the target's own loss."""
    if gamma <= 0:
        return torch.ones(t.shape[0], device=t.device)
    alpha_bar = scheduler.alpha_bar.to(t.device)[t].float()
    snr = alpha_bar / (1 - alpha_bar)
    x0_weight = torch.minimum(snr, torch.full_like(snr, gamma)) / gamma
    # the v loss is the x0 loss times (SNR + 1), the epsilon loss the x0 loss times SNR
    return {"x0": x0_weight, "v": x0_weight / (snr + 1), "epsilon": x0_weight / snr}[scheduler.prediction]


def checkpoint_payload(model: RollDenoiser, metrics: dict, extra: dict | None = None) -> dict:
    """What a diffusion checkpoint holds: enough to rebuild the model with nothing else."""
    return {"engine": "diffusion", "config": asdict(model.config), "steps": model.steps, "pitches": model.pitches,
            "metres": [list(m) for m in METRES], "state_dict": model.state_dict(), "metrics": metrics,
            **(extra or {})}


def model_from_checkpoint(payload: dict) -> RollDenoiser:
    # a checkpoint from before per-attribute flags conditions on two attributes that share one flag
    config = DiffusionConfig(**{"attributes": ["rebracketing", "temporal_complexity"], "attribute_mask": "shared",
                                "attribute_dropout": 0.0, **payload["config"]})
    model = RollDenoiser(config, payload["steps"], payload["pitches"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()
