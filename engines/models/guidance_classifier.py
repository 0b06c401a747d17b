"""The noise-aware guidance classifier p(y | x_t, t): which chromatic mode a noisy roll is in, and whether its
rebracketing is high. Its gradient steers the diffusion sampler (classifier guidance, Dhariwal & Nichol 2021).

    x_t       (B, 2, T, P) a roll noised to step t by the diffusion forward process (engines/sampling/diffusion.py)
              -> pitches x channels as convolution channels (B, 2P, T), with the metre's grid beside them
              (B, 4, T): bar lines, beats, half beats and the steps inside the segment (rebracketing is about
              where onsets and held notes fall against bar and beat, and where those are depends on the
              metre: a bar is 8 steps in 2/4, 12 in 3/4 and 6/8, 16 in 4/4), plus a learned vector per step
    levels    FiLM residual blocks (the denoiser's) at T, T/2, T/4, T/8, conditioned on the step and the metre
    pool      mean and max over time (max: one syncopated onset is enough to count)
    heads     mode logits (B, 8) and a "high rebracketing" logit (B,): rebracketing above the training split's
              75th percentile (the analyzer's reading, or a manifest's label); and the attribute head (B, k):
              the analyzer's reading of the clean roll on `config.attributes` (unit scale, sigmoid), which
              steers samples toward asked axes. The tempo (log qpm) joins the step and metre conditioning:
              the analyzer counts notes per second, and a roll counts steps.

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
from engines.music.notes import bar_ticks, beat_ticks, ticks_per_step

REBRACKETING_TARGETS = ("high", "low")
# Where the classifier's gradient is taken (TrainedDiffusion.denoiser):
#   "x0"   the classifier reads the denoiser's current clean estimate x0 (as at t = 0, where it is most sure) and
#          x0 moves by scale * grad_x0 log p(y | x0); epsilon follows from the new x0
#   "x_t"  Dhariwal & Nichol: it reads x_t at step t, and eps' = eps - scale * sqrt(1 - alpha_bar) grad_x_t log p
SPACES = ("x0", "x_t")
# Attribute guidance reads the attribute head as a Gaussian of this width around its estimate: log p(target) =
# -sum((estimate - target)^2) / (2 ATTRIBUTE_SIGMA^2), about the head's error on clean validation rolls, so that
# one strength weighs it as it weighs log p(mode)
ATTRIBUTE_SIGMA = 0.1
LOG_TEMPO_CENTRE = 4.6   # log(100 qpm): the tempo input is log qpm minus this
# What a checkpoint from before a config field was trained with (its config lacks the field)
LEGACY_CONFIG = {"attributes": [], "tempo_input": False}


@dataclass(frozen=True)
class GuidanceTarget:
    """What classifier guidance steers toward: the requested mode (`mode`) and/or high or low rebracketing,
    and in which space the gradient is taken (`space`, see SPACES). (The asked axes are steered toward by their
    own strength, `axis_scale` of TrainedDiffusion.denoiser, whatever the target.)

    Parsed from the CLI's `--target`: "mode", "rebracketing=high", "mode,rebracketing=low"."""
    mode: bool = True
    rebracketing: str | None = None
    space: str = "x0"

    def __post_init__(self):
        if self.rebracketing is not None and self.rebracketing not in REBRACKETING_TARGETS:
            raise StudioError(f"unknown rebracketing target '{self.rebracketing}'; choose one of "
                              f"{', '.join(REBRACKETING_TARGETS)}")
        if self.space not in SPACES:
            raise StudioError(f"unknown classifier-guidance space '{self.space}'; choose one of {', '.join(SPACES)}")

    @classmethod
    def parse(cls, text: str | None, space: str = "x0") -> "GuidanceTarget":
        """None or "" = the mode only."""
        if not text:
            return cls(space=space)
        mode, rebracketing = False, None
        for part in (p.strip().lower() for p in str(text).split(",") if p.strip()):
            if part == "mode":
                mode = True
            elif part.startswith("rebracketing="):
                rebracketing = part.split("=", 1)[1]
            else:
                raise StudioError(f"unknown guidance target '{part}'; use mode, rebracketing=high or "
                                  "rebracketing=low (comma-separated)")
        return cls(mode=mode, rebracketing=rebracketing, space=space)

    def steers_mode(self, mode: torch.Tensor) -> bool:
        """Toward the mode, and one other than WHITE is asked (WHITE has none to steer toward)."""
        return self.mode and bool((mode < len(MODES)).all())

    def active(self, mode: torch.Tensor) -> bool:
        """Anything to steer toward: a rebracketing target, or the mode."""
        return self.rebracketing is not None or self.steers_mode(mode)

    def describe(self) -> str:
        parts = (["mode"] if self.mode else []) + ([f"rebracketing={self.rebracketing}"] if self.rebracketing else [])
        return ",".join(parts)


def metric_grids(steps: int, bars: int = 4) -> torch.Tensor:
    """(len(METRES), 4, steps) float: for each metre, 1 where a bar starts, where a beat starts, where a half
    beat starts, and on the steps inside the `bars` bars (a roll of `steps` steps holds 4 bars of 4 quarters)."""
    steps_per_beat = steps // (bars * 4)
    grids = torch.zeros(len(METRES), 4, steps)
    for k, (num, den) in enumerate(METRES):
        step = ticks_per_step(bar_ticks(num, den), steps_per_beat)
        position = torch.arange(steps) * step                        # ticks from the segment start
        bar, beat = bar_ticks(num, den), beat_ticks(num, den)
        grids[k, 0] = (position % bar == 0).float()
        grids[k, 1] = (position % beat == 0).float()
        grids[k, 2] = (position % max(beat // 2, 1) == 0).float()
        grids[k, 3] = (position < bars * bar).float()
    return grids


class NoisyRollClassifier(nn.Module):
    def __init__(self, config: GuidanceClassifierConfig, steps: int = 64, pitches: int = 88):
        super().__init__()
        self.config, self.steps, self.pitches = config, steps, pitches
        e = config.embedding_dim
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.metre_embedding = nn.Embedding(len(METRES), e)
        self.tempo_projection = nn.Linear(1, e) if config.tempo_input else None
        channels = [config.base_channels * m for m in config.channel_mults]
        self.register_buffer("grids", metric_grids(steps), persistent=False)   # (M, 4, T)
        self.stem = nn.Conv1d(2 * pitches + self.grids.shape[1], channels[0], 3, padding=1)
        self.position = nn.Parameter(torch.zeros(1, channels[0], steps))
        self.blocks, self.downsample = nn.ModuleList(), nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.blocks.append(FiLMBlock(c_prev, c, e, config.dropout))
            self.downsample.append(nn.Conv1d(c, c, 4, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
            c_prev = c
        self.norm = nn.GroupNorm(8, c_prev)
        self.head = nn.Sequential(nn.Linear(2 * c_prev, c_prev), nn.SiLU(), nn.Dropout(config.dropout),
                                  nn.Linear(c_prev, len(MODES) + 1 + len(config.attributes)))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, metre: torch.Tensor,
                log_tempo: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_t (B, 2, T, P), t (B,), metre (B,), log_tempo (B,) log qpm (a model with tempo_input needs it) ->
        mode logits (B, 8), high-rebracketing logit (B,), attributes (B, k) in [0, 1] (k = 0 without a head)."""
        b = x_t.shape[0]
        cond = self.time_mlp(timestep_embedding(t, self.config.embedding_dim)) + self.metre_embedding(metre)
        if self.tempo_projection is not None:
            if log_tempo is None:
                raise StudioError("this guidance classifier reads the tempo; pass log_tempo")
            cond = cond + self.tempo_projection((log_tempo.to(cond.dtype) - LOG_TEMPO_CENTRE)[:, None])
        roll = x_t.permute(0, 1, 3, 2).reshape(b, 2 * self.pitches, self.steps)     # (B, 2P, T)
        h = self.stem(torch.cat([roll, self.grids[metre]], dim=1)) + self.position   # (B, C, T)
        for block, downsample in zip(self.blocks, self.downsample):
            h = downsample(block(h, cond))
        h = F.silu(self.norm(h))
        logits = self.head(torch.cat([h.mean(2), h.amax(2)], dim=1))     # (B, 9 + k)
        return logits[:, :len(MODES)], logits[:, len(MODES)], torch.sigmoid(logits[:, len(MODES) + 1:])


def draw_steps(b: int, num_steps: int, power: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """(b,) steps t = floor(T * u^power), u uniform: power 1 is uniform, power 2 draws half the batch from the
    least noisy quarter of the process, where the labels can still be read from x_t (at high noise nothing
    tells a syncopated roll from a square one, and such steps only teach the prior)."""
    u = torch.rand(b, generator=generator)
    return (u ** power * num_steps).long().clamp(max=num_steps - 1)


def attribute_columns(model: NoisyRollClassifier) -> list[int]:
    """Where the attribute head's outputs sit among conditioning.CONDITION_ATTRIBUTES (a batch's "conditions")."""
    from engines.models.conditioning import CONDITION_ATTRIBUTES

    return [CONDITION_ATTRIBUTES.index(name) for name in model.config.attributes]


def classifier_loss(model: NoisyRollClassifier, scheduler, batch: dict, threshold: float, rebracketing_weight: float,
                    generator: torch.Generator | None = None, max_step: int | None = None,
                    step_power: float = 1.0, high_weight: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Cross-entropy of the mode plus weighted BCE of "high rebracketing" (positives weighted `high_weight`) plus
    `config.attribute_weight` times the attribute head's squared error, on rolls noised to steps drawn from
    0..max_step-1 (default: all) by draw_steps. Returns the loss and counts for accuracy: {"mode_hits",
    "high_hits", "n", "true_high" (high, and said so), "high", "attribute_error" (summed absolute error per
    attribute, a list)}."""
    x0 = roll_to_unit(batch["roll"])
    b, device = x0.shape[0], x0.device
    t = draw_steps(b, max_step or scheduler.num_steps, step_power, generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device)
    mode_logits, high_logit, attributes = model(scheduler.add_noise(x0, noise, t), t, batch["metre"],
                                                batch.get("log_tempo"))
    high = (batch["attributes"][:, 0] > threshold).float()
    loss = F.cross_entropy(mode_logits, batch["mode"]) + rebracketing_weight * F.binary_cross_entropy_with_logits(
        high_logit, high, pos_weight=torch.tensor(high_weight, device=device))
    error = torch.zeros(b, 0, device=device)
    if attributes.shape[1]:
        error = attributes - batch["conditions"][:, attribute_columns(model)]   # (B, k)
        loss = loss + model.config.attribute_weight * error.pow(2).mean()
    said_high = (high_logit > 0).float()
    counts = {"mode_hits": (mode_logits.argmax(1) == batch["mode"]).sum().item(),
              "high_hits": (said_high == high).sum().item(), "n": b,
              "true_high": (said_high * high).sum().item(), "high": high.sum().item(),
              "attribute_error": error.abs().sum(0).tolist()}
    return loss, counts


def guidance_gradient(model: NoisyRollClassifier, x_t: torch.Tensor, t: torch.Tensor, metre: torch.Tensor,
                      mode: torch.Tensor | None = None, rebracketing: str | None = None,
                      log_tempo: torch.Tensor | None = None, attributes: tuple | None = None,
                      weights: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """grad_x of weights[0] * log p(y | x_t, t) + weights[1] * log p(attributes | x_t, t), (B, 2, T, P):
    log p(y) is log p(mode) when `mode` (B,) is given plus log p(high) or log p(not high) when `rebracketing` is
    "high" or "low"; for `attributes` = (values, given), each (B, k) in unit scale and the head's order, log p
    is -sum(given * (head - value)^2) / (2 ATTRIBUTE_SIGMA^2). `log_tempo` (B,): each row's tempo, for a
    classifier that reads it."""
    if mode is None and rebracketing is None and attributes is None:
        return torch.zeros_like(x_t)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        mode_logits, high_logit, estimate = model(x, t, metre, log_tempo)
        log_p = torch.zeros(x.shape[0], device=x.device)
        if mode is not None:
            log_p = log_p + weights[0] * F.log_softmax(mode_logits, 1).gather(1, mode[:, None])[:, 0]
        if rebracketing is not None:
            log_p = log_p + weights[0] * F.logsigmoid(high_logit if rebracketing == "high" else -high_logit)
        if attributes is not None:
            values, given = attributes
            log_p = log_p - weights[1] * (given * (estimate - values).pow(2)).sum(1) / (2 * ATTRIBUTE_SIGMA ** 2)
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
        self.model = NoisyRollClassifier(GuidanceClassifierConfig(**{**LEGACY_CONFIG, **payload["config"]}),
                                         payload["steps"], payload["pitches"])
        self.model.load_state_dict(payload["state_dict"])
        self.model.to(device).eval().requires_grad_(False)
        self.threshold = payload["high_rebracketing_threshold"]
        self.num_steps, self.noise_schedule = payload["num_steps"], payload["noise_schedule"]
        self.metrics = payload.get("metrics", {})

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "TrainedGuidanceClassifier":
        from engines.training.common import load_checkpoint

        return cls(load_checkpoint(path, map_location=device), device)

    def check_compatible(self, num_steps: int, noise_schedule: str, steps: int, pitches: int,
                         key_to_c: bool = True) -> None:
        if self.model.config.key_to_c != key_to_c:
            raise StudioError("the guidance classifier and the diffusion model disagree on key_to_c (one reads "
                              "rolls in C, the other in their own keys); retrain the classifier to match")
        mine = (self.num_steps, self.noise_schedule, self.model.steps, self.model.pitches)
        if mine != (num_steps, noise_schedule, steps, pitches):
            raise StudioError(
                f"the guidance classifier was trained for {self.num_steps} {self.noise_schedule} steps on "
                f"{self.model.steps}x{self.model.pitches} rolls, the diffusion model uses {num_steps} "
                f"{noise_schedule} steps on {steps}x{pitches}; retrain the classifier with the same "
                "model.diffusion settings")

    @property
    def attributes(self) -> tuple[str, ...]:
        """What its attribute head reads (empty: it has none)."""
        return tuple(self.model.config.attributes)

    def gradient(self, x_t, t, metre, mode=None, rebracketing=None, log_tempo=None, attributes=None,
                 weights=(1.0, 1.0)) -> torch.Tensor:
        return guidance_gradient(self.model, x_t, t, metre, mode, rebracketing, log_tempo, attributes, weights)
