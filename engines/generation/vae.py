"""The conditional VAE behind the Generator interface: latents drawn from the mode's prior, decoded at once.
A request that asks axes and no mode draws from the attribute prior instead (TrainedVAE.neighbourhood_latents).

It has no live view (a batch decodes in milliseconds) and cannot keep bars of a segment. Given a segment to
start from, it writes variations of it: each latent is drawn as usual, then slerped toward the segment's own
latent (its posterior mean) by `follow` (0: as drawn, 1: the segment itself), so the results stay near it in
the latent space; arranging a piece follows each window on from the bars before it this way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engines.errors import StudioError
from engines.generation.base import GeneratorBase, candidates_field, Request
from engines.generation.musical import metre_of
from engines.settings import check, control


@dataclass
class VAESettings:
    # None: the checkpoint's calibration for the asked mode (engines/training/vae_finalize.calibrate_temperatures:
    # the spread of the fitted prior at which the mode's samples are most often heard as asked; 1 without one)
    temperature: float | None = field(default=None, metadata=check(lambda v: v is None or 0 < v <= 5,
                                                                   "a number in (0, 5], or null: the mode's")
                                      | control("Temperature (prior spread; as calibrated for the mode until you "
                                                "move it)", 0.1, 2.0, 0.05))
    # 32 candidates cost less than one diffusion step (2.6 ms a segment); best of 16 by the judge already
    # raised analyzer consistency from 0.38 to 0.94 on tuning seeds (issue 17)
    candidates: int = candidates_field(32)
    # the Gaussian fitted to each mode's clearest training latents (finalize) hears the mode more often than
    # the network's own prior: raw analyzer consistency 0.375 -> 0.52 on the first checkpoint (issue 19)
    prior: Literal["fitted", "network"] = field(
        default="fitted", metadata=control("Prior", choices=[("fitted to the mode's clearest segments", "fitted"),
                                                            ("the network's own", "network")],
                                           info="where latents are drawn from", advanced=True))
    # with a segment to start from: how far each drawn latent is slerped toward that segment's own
    follow: float = field(default=0.5, metadata=check(lambda v: 0 <= v <= 1, "a number in 0..1"))


class VAEGenerator(GeneratorBase):
    name = "vae"
    label = "VAE (conditional β-VAE)"
    short_name = "VAE"
    Settings = VAESettings
    live = False
    writes_in_c = True
    max_batch = 256

    @classmethod
    def load(cls, path, device="cpu") -> "VAEGenerator":
        from engines.models.trained_vae import TrainedVAE

        return cls(TrainedVAE.load(path, device=device))

    def for_mode(self, settings: VAESettings, mode: str) -> VAESettings:
        """The settings `mode` is sampled with: a temperature left unset takes the checkpoint's calibration for
        the mode (TrainedVAE.temperature_for)."""
        if settings.temperature is not None:
            return settings
        from dataclasses import replace

        return replace(settings, temperature=self.model.temperature_for(mode))

    def run(self, request: Request, on_step=None) -> list:
        settings = self._checked(request)
        metre = metre_of(request.metre)
        z = self._latents(request, settings, int(request.n), metre)
        return self.model.decode(z, request.mode, request.attributes, request.tonic,
                                 self.model.sampling_threshold(settings.prior), metre)

    def _latents(self, request: Request, settings: VAESettings, n: int, metre):
        """(n, D) latents from the mode's prior (or the attribute prior); with a segment to start from, each slerped
        toward its latent."""
        z = self.model.prior_latents(request.mode, n, float(settings.temperature), int(request.seed), settings.prior,
                                     metre, request.attributes)
        if request.init_midi is None:
            return z
        from engines.sampling.latent import slerp
        import torch

        init = request.init_segment()
        if init.num_bars != self.model.data["segment_bars"]:
            raise StudioError(f"the VAE varies {self.model.data['segment_bars']}-bar segments; the segment to "
                              f"start from has {init.num_bars}")
        own = self.model.encode([init], request.mode)[0]
        follow = torch.tensor([float(settings.follow)])
        return torch.cat([slerp(row, own, follow) for row in z])

    def _checked(self, request: Request) -> VAESettings:
        """The request's settings, its mode's temperature filled in where it sets none."""
        settings: VAESettings = self.settings_of(request)
        settings = self.for_mode(settings, self.asked_mode(request, settings))
        if request.keep_bars:
            raise StudioError("the VAE cannot keep bars of a segment; inpaint with the diffusion engine or "
                              "continue with the GPT")
        return settings

    def batch_key(self, request: Request):
        """Every request the VAE can sample shares a batch: its latents come from its own seed and prior."""
        try:
            self._checked(request)
            metre_of(request.metre)
        except StudioError:
            return None
        return "vae"

    def run_batch(self, jobs: list) -> None:
        """Each job's latents drawn from its own seed, decoded in one batch; each job's rows are read into
        segments in its own thread."""
        from functools import partial

        parts, reading, sampled = [], [], []
        for job in jobs:
            try:
                settings, request = self._checked(job.request), job.request
                metre = metre_of(request.metre)
                z = self._latents(request, settings, job.rows, metre)
            except StudioError as exc:   # it fails alone
                job.fail(exc)
                continue
            parts.append((z, request.mode, request.attributes))
            reading.append((request.tonic, self.model.sampling_threshold(settings.prior), metre))
            sampled.append(job)
        if not sampled:
            return
        for job, out, (tonic, threshold, metre) in zip(sampled, self.model.decoder_outputs(parts), reading):
            job.finish(partial(self.model.outputs_to_segments, out, tonic, threshold, metre))
