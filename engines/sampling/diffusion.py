"""Gaussian diffusion without a network: noise schedules, the forward process, DDPM and DDIM steps, guidance,
inpainting and the sampling loop (diffusers' scheduler shape: the model is a function handed in).

    scheduler = NoiseScheduler(1000, "cosine", "v")
    x_t = scheduler.add_noise(x0, noise, t)                    # training input, q(x_t | x_0) in closed form
    target = scheduler.training_target(x0, noise, t)           # epsilon or v
    x0 = sample_loop(scheduler, denoise, (n, 2, 64, 88), steps=50, sampler="ddim", generator=g)

Shapes: x is (B, ...) and t a (B,) long tensor of step indices 0..T-1 (0 = least noise). alpha_bar[t] is the
share of signal variance left at step t: x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from engines.errors import StudioError

SCHEDULES = ("linear", "cosine")
PREDICTIONS = ("epsilon", "v", "x0")
SAMPLERS = ("ddim", "ddpm", "dpmsolver++")


def make_betas(kind: str, num_steps: int) -> torch.Tensor:
    """Per-step noise variances (T,), float64.

    linear: Ho et al. 2020 (1e-4 .. 0.02 at T = 1000, scaled so other T add the same total noise).
    cosine: Nichol & Dhariwal 2021, alpha_bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), betas capped at 0.999;
            it destroys the signal more slowly early on, which suits sparse piano rolls.
    """
    if kind == "linear":
        scale = 1000 / num_steps
        return torch.linspace(scale * 1e-4, scale * 0.02, num_steps, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        alpha_bar = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    raise StudioError(f"unknown noise_schedule '{kind}'; choose one of {', '.join(SCHEDULES)}")


@dataclass
class NoiseScheduler:
    num_steps: int = 1000
    schedule: str = "cosine"
    prediction: str = "v"           # what the network predicts: "epsilon" (noise), "v" (sqrt(a) eps - sqrt(1-a) x0)
                                    # or "x0" (the clean sample itself)

    def __post_init__(self):
        if self.num_steps < 2:
            raise StudioError(f"num_steps must be at least 2, got {self.num_steps}")
        if self.prediction not in PREDICTIONS:
            raise StudioError(f"unknown prediction '{self.prediction}'; choose one of {', '.join(PREDICTIONS)}")
        self.betas = make_betas(self.schedule, self.num_steps)
        self.alpha_bar = torch.cumprod(1 - self.betas, 0)                      # (T,) float64

    # ---- training -------------------------------------------------------------------------------------
    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t) shaped (B, 1, 1, ...) to broadcast against `like`."""
        a = self.alpha_bar.to(like.device)[t].to(like.dtype).view(-1, *([1] * (like.dim() - 1)))
        return a.sqrt(), (1 - a).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t | x_0): sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) noise."""
        signal, sigma = self._coefficients(t, x0)
        return signal * x0 + sigma * noise

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        signal, sigma = self._coefficients(t, x0)
        return signal * noise - sigma * x0

    # ---- sampling -------------------------------------------------------------------------------------
    def split(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's output at (x_t, t) -> (predicted x0, predicted eps)."""
        signal, sigma = self._coefficients(t, x_t)
        if self.prediction == "epsilon":
            eps = output
            return (x_t - sigma * eps) / signal, eps
        if self.prediction == "x0":
            return output, (x_t - signal * output) / sigma
        x0 = signal * x_t - sigma * output
        return x0, sigma * x_t + signal * output

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        signal, sigma = self._coefficients(t, x_t)
        return (x_t - signal * x0) / sigma

    def x0_from_eps(self, eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        signal, sigma = self._coefficients(t, x_t)
        return (x_t - sigma * eps) / signal

    def renoise(self, x: torch.Tensor, t_from: int, t_to: int, noise: torch.Tensor) -> torch.Tensor:
        """A draw from q(x_{t_to} | x_{t_from}) for t_to > t_from: the forward process over that stretch
        (RePaint's "jump back"); t_from = -1 means x is clean."""
        ratio = self._alpha(t_to) / self._alpha(t_from)
        return math.sqrt(ratio) * x + math.sqrt(1 - ratio) * noise

    def timesteps(self, steps: int) -> list[int]:
        """`steps` step indices from T-1 down to 0, evenly spaced (the first one is pure noise)."""
        if not 1 <= steps <= self.num_steps:
            raise StudioError(f"steps must lie in 1..{self.num_steps} (the model's num_steps), got {steps}")
        grid = torch.linspace(self.num_steps - 1, 0, steps).round().long()
        return list(dict.fromkeys(grid.tolist()))  # unique, order kept

    def _alpha(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.alpha_bar[t])

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, eta: float = 0.0,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t -> x_{t_prev} (Song et al. 2021, eq. 12), from the predicted x0 and eps; t_prev = -1 ends at x0.

        eta = 0 is deterministic; eta = 1 has the variance of DDPM's posterior."""
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        sigma = eta * math.sqrt(max((1 - a_prev) / (1 - a) * (1 - a / a_prev), 0.0))
        direction = math.sqrt(max(1 - a_prev - sigma ** 2, 0.0)) * eps
        x_prev = math.sqrt(a_prev) * x0 + direction
        if sigma > 0:
            x_prev = x_prev + sigma * (noise if noise is not None else torch.randn_like(x0))
        return x_prev

    def ddpm_step(self, x0: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
        """Ancestral step: a draw from the posterior q(x_{t_prev} | x_t, x0) (Ho et al. 2020, eq. 6-7), with
        the betas respaced to the steps taken (Nichol & Dhariwal), so any number of steps <= T works."""
        a, a_prev = self._alpha(t), self._alpha(t_prev)
        beta = 1 - a / a_prev                                       # the respaced beta of this jump
        mean = (math.sqrt(a_prev) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x_t
        if t_prev < 0:
            return mean
        variance = beta * (1 - a_prev) / (1 - a)
        return mean + math.sqrt(variance) * (noise if noise is not None else torch.randn_like(x0))


def guided_eps(eps: torch.Tensor, grad_log_p: torch.Tensor, scheduler: NoiseScheduler, t: torch.Tensor,
               scale: float) -> torch.Tensor:
    """Classifier guidance (Dhariwal & Nichol 2021): eps - scale * sqrt(1 - alpha_bar_t) * grad_x log p(y | x_t).

    Shifting eps this way moves the implied score, so it works for DDIM and DDPM alike."""
    _, sigma = scheduler._coefficients(t, eps)
    return eps - scale * sigma * grad_log_p


@dataclass
class Inpainting:
    """Known content to keep (RePaint, Lugmayr et al. 2022): where `mask` is True the sample is replaced after
    every step by the known x0 noised to the same level. known, mask: (B, ...) like x.

    resample: how often each step is taken; between takes the sample is noised back to the step's level
    (RePaint's resampling, jump length 1), so the free part can adapt to the kept part. 1 = plain replacement."""
    known: torch.Tensor
    mask: torch.Tensor
    resample: int = 1


Denoise = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# Where a batch's noise comes from: one generator for every row, or (generator, rows) per request in the
# batch, in row order (engines/generation/batching.py): each request draws its own rows from its own seed,
# exactly as it would alone, whoever shares its batch.
NoiseSource = torch.Generator | None | list[tuple[torch.Generator, int]]


def gaussian_noise(shape: tuple, source: NoiseSource) -> torch.Tensor:
    """Standard normal noise of `shape` (B, ...) on the CPU (the same on any device) from `source`."""
    if not isinstance(source, list):
        return torch.randn(shape, generator=source)
    if sum(rows for _, rows in source) != shape[0]:
        raise ValueError(f"the noise sources give {sum(r for _, r in source)} rows, the batch has {shape[0]}")
    return torch.cat([torch.randn((rows, *shape[1:]), generator=g) for g, rows in source])


@torch.no_grad()
def sample_loop(scheduler: NoiseScheduler, denoise: Denoise, shape: tuple, steps: int = 50, sampler: str = "ddim",
                eta: float = 0.0, generator: NoiseSource = None, clip: float | None = 1.0,
                inpainting: Inpainting | None = None, on_step: Callable[[int, int, torch.Tensor], bool | None] | None = None,
                device: str | torch.device = "cpu") -> torch.Tensor:
    """Run the reverse process from pure noise; returns the final x0 estimate, shape `shape`.

    denoise(x_t, t) -> (x0, eps): the model's prediction at this step with any guidance already applied
    (engines/models/denoiser.py builds it). `clip` bounds x0 to [-clip, clip] (the data range) and re-derives
    eps from it, which keeps few-step sampling stable. on_step(i, n, x0) sees every intermediate estimate
    (the live view); returning True stops early and returns that estimate. `generator`: a NoiseSource.
    """
    if sampler not in SAMPLERS:
        raise StudioError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    if not 0 <= eta <= 1:
        raise StudioError(f"eta must lie in [0, 1], got {eta}")
    takes = inpainting.resample if inpainting is not None else 1
    if takes < 1:
        raise StudioError(f"resample must be at least 1, got {takes}")
    if sampler == "dpmsolver++":
        return dpm_solver_loop(scheduler, denoise, shape, steps, generator, clip, inpainting, on_step, device)
    randn = lambda: gaussian_noise(shape, generator).to(device)  # noqa: E731  (CPU generator: same on any device)
    x = randn()
    grid = scheduler.timesteps(steps)
    for i, t in enumerate(grid):
        t_prev = grid[i + 1] if i + 1 < len(grid) else -1
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        for take in range(takes):
            if take:  # RePaint: back to step t's noise level, then take the step again
                x = scheduler.renoise(x, t_prev, t, randn())
            x0, eps = denoise(x, t_batch)
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
                eps = scheduler.eps_from_x0(x0, x, t_batch)
            if inpainting is not None:
                x0 = torch.where(inpainting.mask, inpainting.known, x0)
            noise = randn() if (sampler == "ddpm" or eta > 0) and t_prev >= 0 else None
            if sampler == "ddim":
                x = scheduler.ddim_step(x0, eps, t, t_prev, eta, noise)
            else:
                x = scheduler.ddpm_step(x0, x, t, t_prev, noise)
            if inpainting is not None and t_prev >= 0:
                known_t = scheduler.add_noise(inpainting.known, randn(),
                                              torch.full((shape[0],), t_prev, dtype=torch.long, device=device))
                x = torch.where(inpainting.mask, known_t, x)
            if t_prev < 0:
                break  # the last step lands on x0; there is no level to go back to
        if on_step is not None and on_step(i, len(grid), x0):
            return x0
    return x if inpainting is None else torch.where(inpainting.mask, inpainting.known, x)


@torch.no_grad()
def dpm_solver_loop(scheduler: NoiseScheduler, denoise: Denoise, shape: tuple, steps: int = 20,
                    generator: NoiseSource = None, clip: float | None = 1.0,
                    inpainting: Inpainting | None = None, on_step: Callable | None = None,
                    device: str | torch.device = "cpu") -> torch.Tensor:
    """sample_loop with DPM-Solver++ (2M, Lu et al. 2022) from diffusers' DPMSolverMultistepScheduler, set
    up on this scheduler's betas and fed the (guided, clipped) x0: a second-order solver of the diffusion ODE
    that reaches in 10-20 steps what DDIM needs 50-100 for. Inpainting replaces the known part at every
    step, without resampling (a multistep solver keeps a history that a jump back would invalidate)."""
    from diffusers import DPMSolverMultistepScheduler  # imported on first use: a second or more to load

    scheduler.timesteps(steps)  # validates the step count
    if inpainting is not None and inpainting.resample > 1:
        raise StudioError("resampling (resample > 1) works with the ddim and ddpm samplers, not dpmsolver++")
    solver = DPMSolverMultistepScheduler(num_train_timesteps=scheduler.num_steps,
                                         trained_betas=scheduler.betas.numpy(), prediction_type="sample",
                                         algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="linspace")
    solver.set_timesteps(steps, device=device)
    randn = lambda: gaussian_noise(shape, generator).to(device)  # noqa: E731
    x = randn()
    grid = [int(t) for t in solver.timesteps]
    for i, t in enumerate(grid):
        t_batch = torch.full((shape[0],), t, dtype=torch.long, device=device)
        x0, _ = denoise(x, t_batch)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        if inpainting is not None:
            x0 = torch.where(inpainting.mask, inpainting.known, x0)
        x = solver.step(x0, solver.timesteps[i], x).prev_sample
        if inpainting is not None and i + 1 < len(grid):
            t_next = torch.full((shape[0],), grid[i + 1], dtype=torch.long, device=device)
            x = torch.where(inpainting.mask, scheduler.add_noise(inpainting.known, randn(), t_next), x)
        if on_step is not None and on_step(i, len(grid), x0):
            return x0
    return x if inpainting is None else torch.where(inpainting.mask, inpainting.known, x)
