"""A trained diffusion engine as users meet it: sample segments by mode with classifier-free guidance.

    engine = TrainedDiffusion.load("assets/checkpoints/diffusion.pt")
    segments = engine.sample("BLUE", n=4, steps=50, sampler="ddim", guidance_scale=3.0, seed=1)

Guidance: the network is run with and without the mode and attributes (WHITE, "not given") in one batch,
and the two predictions are extrapolated: out = uncond + scale * (cond - uncond) (Ho & Salimans 2022);
scale 1 is the plain conditional model, 0 the unconditional one.

Metre and tempo: the denoiser is told the metre; unless one is asked for, it is drawn (by the seed) from how
often each metre occurs in the training segments of that mode, and the tempo is that mode's median.

Decoding (engines/models/roll_decoding.py): the final x0 lies in [-1, 1]; (x0 + 1) / 2 is read as the onset
and sustain probability, a note starts where the onset channel exceeds the config's `onset_threshold`
(0 = probability 0.5) and lasts while the sustain channel is above 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from engines.data.torch_dataset import METRES, WHITE_INDEX
from engines.errors import StudioError
from engines.models.denoiser import RollDenoiser, model_from_checkpoint
from engines.models.roll_decoding import probabilities_to_segments, tonic_shift
from engines.models.trained_vae import mode_index
from engines.music.analyzer import WHITE
from engines.music.notes import Segment, transpose_notes
from engines.sampling.diffusion import Inpainting, NoiseScheduler, sample_loop
from engines.training.common import load_checkpoint

MAX_BATCH = 64


class TrainedDiffusion:
    def __init__(self, model: RollDenoiser, payload: dict, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.payload = payload
        self.data = payload["data"]
        c = model.config
        self.scheduler = NoiseScheduler(c.num_steps, c.noise_schedule, c.prediction)
        self.metre_counts = payload["metre_counts"].float()     # (9, len(METRES)) per mode, WHITE = all
        self.tempo = payload["tempo"]                           # (9,) median qpm per mode

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TrainedDiffusion":
        payload = load_checkpoint(path, map_location=device)
        if payload.get("engine") != "diffusion":
            raise StudioError(f"'{Path(path).name}' is not a diffusion checkpoint")
        return cls(model_from_checkpoint(payload), payload, device)

    @property
    def num_steps(self) -> int:
        return self.scheduler.num_steps

    def denoiser(self, mode: torch.Tensor, attributes: torch.Tensor | None, metre: torch.Tensor,
                 guidance_scale: float) -> Callable:
        """denoise(x_t, t) -> (x0, eps) with classifier-free guidance at `guidance_scale`."""
        def denoise(x_t: torch.Tensor, t: torch.Tensor):
            n = x_t.shape[0]
            if guidance_scale == 1.0:
                output = self.model(x_t, t, mode, attributes, metre)
            else:  # conditional and unconditional halves in one batch
                null_mode = torch.full_like(mode, WHITE_INDEX)
                both = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([mode, null_mode]),
                                  None if attributes is None else torch.cat(
                                      [torch.cat([attributes, torch.ones(n, 1, device=x_t.device)], 1),
                                       torch.zeros(n, attributes.shape[1] + 1, device=x_t.device)]),
                                  torch.cat([metre, metre]))
                cond, uncond = both[:n], both[n:]
                output = uncond + guidance_scale * (cond - uncond)
            return self.scheduler.split(output, x_t, t)
        return denoise

    def _metres(self, mode: int, n: int, metre: str | None, generator: torch.Generator) -> list[int]:
        if metre:
            try:
                num, den = (int(x) for x in str(metre).split("/"))
                return [METRES.index((num, den))] * n
            except ValueError:
                raise StudioError(f"unknown metre '{metre}'; choose one of "
                                  f"{', '.join(f'{a}/{b}' for a, b in METRES)}") from None
        weights = self.metre_counts[mode]
        weights = weights if weights.sum() > 0 else self.metre_counts[WHITE_INDEX]
        return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()

    @torch.no_grad()
    def sample_rolls(self, mode: str = WHITE, n: int = 1, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
                     guidance_scale: float = 3.0, seed: int = 0, attributes: dict | None = None,
                     metre: str | None = None, on_step: Callable | None = None,
                     inpainting: Inpainting | None = None) -> tuple[torch.Tensor, list[int]]:
        """Final x0 (n, 2, T, P) in [-1, 1] and the metre index of each."""
        if not 1 <= n <= MAX_BATCH:
            raise StudioError(f"n must lie in 1..{MAX_BATCH}, got {n}")
        if guidance_scale < 0:
            raise StudioError(f"guidance_scale must be >= 0, got {guidance_scale}")
        index = mode_index(mode)
        generator = torch.Generator().manual_seed(int(seed))
        metres = self._metres(index, n, metre, generator)
        modes = torch.full((n,), index, dtype=torch.long, device=self.device)
        attr = None
        if attributes:
            attr = torch.tensor([[float(attributes.get("rebracketing", 0.0)),
                                  float(attributes.get("temporal_complexity", 0.0))]], device=self.device).repeat(n, 1)
        metre_t = torch.tensor(metres, device=self.device)
        shape = (n, 2, self.model.steps, self.model.pitches)
        x0 = sample_loop(self.scheduler, self.denoiser(modes, attr, metre_t, guidance_scale), shape, steps, sampler,
                         eta, generator, inpainting=inpainting, on_step=on_step, device=self.device)
        return x0, metres

    def to_segments(self, x0: torch.Tensor, metres: list[int], mode: str = WHITE, tonic: str | None = None) -> list[Segment]:
        """x0 (B, 2, T, P) in [-1, 1] -> Segments (roll_decoding), moved from C to `tonic`."""
        c, d = self.model.config, self.data
        probability = (x0.clamp(-1, 1) + 1) / 2
        tempo = float(self.tempo[mode_index(mode)])
        segments = probabilities_to_segments(probability[:, 0], probability[:, 1], metres, [tempo] * len(metres),
                                             d["steps_per_beat"], d["pitch_low"], d["segment_bars"],
                                             (c.onset_threshold + 1) / 2, 0.5, c.pitch_window)
        semitones = tonic_shift(tonic)
        for segment in segments:
            segment.notes = transpose_notes(segment.notes, semitones, d["pitch_low"], d["pitch_high"])
        return segments

    def sample(self, mode: str = WHITE, n: int = 1, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
               guidance_scale: float = 3.0, seed: int = 0, attributes: dict | None = None, metre: str | None = None,
               tonic: str | None = None, on_step: Callable | None = None) -> list[Segment]:
        """n segments under `mode` (WHITE = unconditioned)."""
        x0, metres = self.sample_rolls(mode, n, steps, sampler, eta, guidance_scale, seed, attributes, metre, on_step)
        return self.to_segments(x0, metres, mode, tonic)
