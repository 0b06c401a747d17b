"""The noise-aware guidance classifier p(y | x_t, t): which chromatic mode a noisy roll is in, and whether its
rebracketing is high. Its gradient steers the diffusion sampler (classifier guidance, Dhariwal & Nichol 2021).

    x_t       (B, 2, T, P) a roll noised to step t by the diffusion forward process (engines/sampling/diffusion.py)
              -> pitches x channels as convolution channels (B, 2P, T), plus a learned position per step (so
              an onset knows where the beat is: rebracketing is about metric position)
    levels    FiLM residual blocks (the denoiser's) at T, T/2, T/4, T/8, conditioned on the step and the metre
    pool      mean and max over time (max: one syncopated onset is enough to count)
    heads     mode logits (B, 8) and a "high rebracketing" logit (B,): rebracketing above the training split's
              75th percentile (the analyzer's reading, or a manifest's label)

It is a separate model from the learned chromatic judge of the evaluation suite: it is trained on noisy rolls
of every noise level, because during sampling it must read x_t, not a clean segment.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.data.torch_dataset import METRES
from engines.errors import StudioError
from engines.models.denoiser import FiLMBlock, roll_to_unit, timestep_embedding
from engines.models.guidance_config import GuidanceClassifierConfig
from engines.music.analyzer import MODES

REBRACKETING_TARGETS = ("high", "low")


@dataclass(frozen=True)
class GuidanceTarget:
    """What classifier guidance steers toward: the requested mode (`mode`) and/or high or low rebracketing.

    Parsed from the CLI's `--target`: "mode", "rebracketing=high", "mode,rebracketing=low"."""
    mode: bool = True
    rebracketing: str | None = None

    def __post_init__(self):
        if self.rebracketing is not None and self.rebracketing not in REBRACKETING_TARGETS:
            raise StudioError(f"unknown rebracketing target '{self.rebracketing}'; choose one of "
                              f"{', '.join(REBRACKETING_TARGETS)}")

    @classmethod
    def parse(cls, text: str | None) -> "GuidanceTarget":
        """None or "" = the mode only."""
        if not text:
            return cls()
        mode, rebracketing = False, None
        for part in (p.strip().lower() for p in str(text).split(",") if p.strip()):
            if part == "mode":
                mode = True
            elif part.startswith("rebracketing="):
                rebracketing = part.split("=", 1)[1]
            else:
                raise StudioError(f"unknown guidance target '{part}'; use mode, rebracketing=high or "
                                  "rebracketing=low (comma-separated)")
        return cls(mode=mode, rebracketing=rebracketing)

    def active(self, mode: torch.Tensor) -> bool:
        """Anything to steer toward: a rebracketing target, or the mode when one other than WHITE is asked."""
        return self.rebracketing is not None or (self.mode and bool((mode < len(MODES)).all()))

    def describe(self) -> str:
        parts = (["mode"] if self.mode else []) + ([f"rebracketing={self.rebracketing}"] if self.rebracketing else [])
        return ",".join(parts)


class NoisyRollClassifier(nn.Module):
    def __init__(self, config: GuidanceClassifierConfig, steps: int = 64, pitches: int = 88):
        super().__init__()
        self.config, self.steps, self.pitches = config, steps, pitches
        e = config.embedding_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.metre_embedding = nn.Embedding(len(METRES), e)
        channels = [config.base_channels * m for m in config.channel_mults]
        self.stem = nn.Conv1d(2 * pitches, channels[0], 3, padding=1)
        self.position = nn.Parameter(torch.zeros(1, channels[0], steps))
        self.blocks, self.downsample = nn.ModuleList(), nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.blocks.append(FiLMBlock(c_prev, c, e, config.dropout))
            self.downsample.append(nn.Conv1d(c, c, 4, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
            c_prev = c
        self.norm = nn.GroupNorm(8, c_prev)
        self.head = nn.Sequential(nn.Linear(2 * c_prev, c_prev), nn.SiLU(), nn.Dropout(config.dropout),
                                  nn.Linear(c_prev, len(MODES) + 1))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, metre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t (B, 2, T, P), t (B,), metre (B,) -> mode logits (B, 8), high-rebracketing logit (B,)."""
        b = x_t.shape[0]
        cond = self.time_mlp(timestep_embedding(t, self.config.embedding_dim)) + self.metre_embedding(metre)
        h = self.stem(x_t.permute(0, 1, 3, 2).reshape(b, 2 * self.pitches, self.steps)) + self.position  # (B, C, T)
        for block, downsample in zip(self.blocks, self.downsample):
            h = downsample(block(h, cond))
        h = F.silu(self.norm(h))
        logits = self.head(torch.cat([h.mean(2), h.amax(2)], dim=1))     # (B, 9)
        return logits[:, :len(MODES)], logits[:, len(MODES)]


def classifier_loss(model: NoisyRollClassifier, scheduler, batch: dict, threshold: float, rebracketing_weight: float,
                    generator: torch.Generator | None = None, max_step: int | None = None) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the mode plus weighted BCE of "high rebracketing", on rolls noised to steps drawn
    uniformly from 0..max_step-1 (default: all). Returns the loss and counts for accuracy:
    {"mode_hits", "high_hits", "n"}."""
    x0 = roll_to_unit(batch["roll"])
    b, device = x0.shape[0], x0.device
    t = torch.randint(0, max_step or scheduler.num_steps, (b,), generator=generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    mode_logits, high_logit = model(scheduler.add_noise(x0, noise, t), t, batch["metre"])
    high = (batch["attributes"][:, 0] > threshold).float()
    loss = F.cross_entropy(mode_logits, batch["mode"]) + rebracketing_weight * \
        F.binary_cross_entropy_with_logits(high_logit, high)
    counts = {"mode_hits": (mode_logits.argmax(1) == batch["mode"]).sum().item(),
              "high_hits": ((high_logit > 0).float() == high).sum().item(), "n": b}
    return loss, counts


def guidance_gradient(model: NoisyRollClassifier, x_t: torch.Tensor, t: torch.Tensor, metre: torch.Tensor,
                      mode: torch.Tensor | None = None, rebracketing: str | None = None) -> torch.Tensor:
    """grad_x log p(y | x_t, t) for the targets asked for, (B, 2, T, P): log p(mode) when `mode` (B,) is given,
    plus log p(high) or log p(not high) when `rebracketing` is "high" or "low"."""
    if mode is None and rebracketing is None:
        return torch.zeros_like(x_t)
    if rebracketing is not None and rebracketing not in REBRACKETING_TARGETS:
        raise StudioError(f"unknown rebracketing target '{rebracketing}'; choose one of {', '.join(REBRACKETING_TARGETS)}")
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        mode_logits, high_logit = model(x, t, metre)
        log_p = torch.zeros(x.shape[0], device=x.device)
        if mode is not None:
            log_p = log_p + F.log_softmax(mode_logits, 1).gather(1, mode[:, None])[:, 0]
        if rebracketing is not None:
            log_p = log_p + F.logsigmoid(high_logit if rebracketing == "high" else -high_logit)
        (grad,) = torch.autograd.grad(log_p.sum(), x)
    return grad


def classifier_payload(model: NoisyRollClassifier, scheduler, metrics: dict, threshold: float) -> dict:
    """What a classifier checkpoint holds: the model, the forward process it was trained on, its threshold."""
    return {"engine": "guidance-classifier", "config": asdict(model.config), "steps": model.steps,
            "pitches": model.pitches, "num_steps": scheduler.num_steps, "noise_schedule": scheduler.schedule,
            "metres": [list(m) for m in METRES], "modes": list(MODES), "high_rebracketing_threshold": float(threshold),
            "state_dict": model.state_dict(), "metrics": metrics}


class TrainedGuidanceClassifier:
    """A loaded classifier with what sampling needs: the model (eval mode) and its threshold."""

    def __init__(self, payload: dict, device: str | torch.device = "cpu"):
        if payload.get("engine") != "guidance-classifier":
            raise StudioError("this checkpoint is not a guidance classifier (train one with "
                              "`python -m engines train --engine guidance-classifier`)")
        self.model = NoisyRollClassifier(GuidanceClassifierConfig(**payload["config"]), payload["steps"],
                                         payload["pitches"])
        self.model.load_state_dict(payload["state_dict"])
        self.model.to(device).eval().requires_grad_(False)
        self.threshold = payload["high_rebracketing_threshold"]
        self.num_steps, self.noise_schedule = payload["num_steps"], payload["noise_schedule"]
        self.metrics = payload.get("metrics", {})

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "TrainedGuidanceClassifier":
        from engines.training.common import load_checkpoint

        return cls(load_checkpoint(path, map_location=device), device)

    def check_compatible(self, num_steps: int, noise_schedule: str, steps: int, pitches: int) -> None:
        mine = (self.num_steps, self.noise_schedule, self.model.steps, self.model.pitches)
        if mine != (num_steps, noise_schedule, steps, pitches):
            raise StudioError(
                f"the guidance classifier was trained for {self.num_steps} {self.noise_schedule} steps on "
                f"{self.model.steps}x{self.model.pitches} rolls, the diffusion model uses {num_steps} "
                f"{noise_schedule} steps on {steps}x{pitches}; retrain the classifier with the same "
                "model.diffusion settings")

    def gradient(self, x_t, t, metre, mode=None, rebracketing=None) -> torch.Tensor:
        return guidance_gradient(self.model, x_t, t, metre, mode, rebracketing)
