"""The conditional VAE behind the Generator interface: latents drawn from the mode's prior, decoded at once.
A request that asks axes and no mode draws from the attribute prior instead (TrainedVAE.neighbourhood_latents).

It has no live view (a batch decodes in milliseconds) and cannot keep bars of a segment. Given a segment to
start from, it writes variations of it: each latent is drawn as usual, then slerped toward the segment's own
latent (its posterior mean) by `follow` (0: as drawn, 1: the segment itself), so the results stay near it in
the latent space; arranging a piece follows each window on from the bars before it this way.

With the judge beside the checkpoint, each drawn latent first takes one signed step toward what the request
asks, as the judge reads its decoded roll (`steer`; engines/sampling/critic_steering.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engines.errors import StudioError
from engines.generation.base import GeneratorBase, attach_beside, candidates_field, Request
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
    # best of 16 by the judge raised analyzer consistency from 0.38 to 0.94 on tuning seeds (issue 17); with each
    # candidate steered (about 5 ms a segment in a batch) 16 keep every held-out result heard as asked in 90 ms,
    # where 32 took 132 ms (docs/vae.md)
    candidates: int = candidates_field(16)
    # the Gaussian fitted to each mode's clearest training latents (finalize) hears the mode more often than
    # the network's own prior: raw analyzer consistency 0.375 -> 0.52 on the first checkpoint (issue 19)
    prior: Literal["fitted", "network"] = field(
        default="fitted", metadata=control("Prior", choices=[("fitted to the mode's clearest segments", "fitted"),
                                                            ("the network's own", "network")],
                                           info="where latents are drawn from", advanced=True))
    # with a segment to start from: how far each drawn latent is slerped toward that segment's own
    follow: float = field(default=0.5, metadata=check(lambda v: 0 <= v <= 1, "a number in 0..1"))
    # one signed step of each drawn latent toward the asked mode and attributes, as the judge reads its roll
    # (0 = the prior's draw as it is): raw results heard as asked 0.76 -> 0.85 on tuning seeds (docs/vae.md)
    # (critic_steering.STEP_SIZE, written out: the studio imports these settings without torch)
    steer: float = field(default=0.15, metadata=check(lambda v: 0 <= v <= 1, "a number in 0..1")
                         | control("Critic steering (a step toward the asked mode; 0 = off)", 0.0, 0.5, 0.05,
                                   advanced=True))


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
        """The VAE, with the judge beside it (`judge.pt`) as the critic that steers drawn latents when there is
        one; a broken or unfit judge file is logged and the VAE samples unsteered."""
        from engines.models.trained_vae import TrainedVAE

        from engines.models.chromatic_judge import TrainedJudge

        model = TrainedVAE.load(path, device=device)
        attach_beside(cls.files_beside(path)[0], lambda file: TrainedJudge.load(file, device=model.device),
                      model.attach_critic, "VAE critic")
        return cls(model)

    @classmethod
    def files_beside(cls, path) -> list:
        """The judge loaded with the VAE (it steers drawn latents)."""
        from pathlib import Path

        return [Path(path).with_name("judge.pt")]

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
        """(n, D) latents from the mode's prior (or the attribute prior), steered; with a segment to start from,
        each slerped toward its latent."""
        [z] = self.model.steer([(self._drawn(request, settings, n, metre), request.mode, request.attributes)],
                               float(settings.steer), settings.prior)
        return self._followed(request, settings, z)

    def _drawn(self, request: Request, settings: VAESettings, n: int, metre):
        """(n, D) latents as the prior draws them."""
        return self.model.prior_latents(request.mode, n, float(settings.temperature), int(request.seed),
                                        settings.prior, metre, request.attributes)

    def _followed(self, request: Request, settings: VAESettings, z):
        """z (n, D) slerped toward the latent of the segment to start from by `follow` (as it is without one)."""
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
        """Each job's latents drawn from its own seed, steered and decoded in one batch (a batch per steering
        step and prior the jobs ask); each job's rows are read into segments in its own thread."""
        from functools import partial

        drawn, sampled = [], []
        for job in jobs:
            try:
                settings, request = self._checked(job.request), job.request
                metre = metre_of(request.metre)
                drawn.append((self._drawn(request, settings, job.rows, metre), settings, metre))
            except StudioError as exc:   # it fails alone
                job.fail(exc)
                continue
            sampled.append(job)
        if not sampled:
            return
        steered = {}
        for key in {(float(settings.steer), settings.prior) for _, settings, _ in drawn}:
            rows = [i for i, (_, settings, _) in enumerate(drawn) if (float(settings.steer), settings.prior) == key]
            moved = self.model.steer([(drawn[i][0], sampled[i].request.mode, sampled[i].request.attributes)
                                      for i in rows], *key)
            steered.update(zip(rows, moved))
        parts, reading = [], []
        for i, (job, (_, settings, metre)) in enumerate(zip(sampled, drawn)):
            request = job.request
            try:
                z = self._followed(request, settings, steered[i])
            except StudioError as exc:
                job.fail(exc)
                continue
            parts.append((z, request.mode, request.attributes))
            reading.append((job, request.tonic, self.model.sampling_threshold(settings.prior), metre))
        if not parts:
            return
        for (job, tonic, threshold, metre), out in zip(reading, self.model.decoder_outputs(parts)):
            job.finish(partial(self.model.outputs_to_segments, out, tonic, threshold, metre))
