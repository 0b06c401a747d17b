"""The diffusion engine behind the Generator interface: sampling by mode, or inpainting the bars of a segment
not kept (engines/models/trained_diffusion.py), with classifier-free and optional classifier guidance.

The live view shows each row's current clean estimate (its sustain channel) at every denoising step.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from engines.errors import StudioError
from engines.generation.base import GeneratorBase, attach_beside, candidates_field, Preview, Request
from engines.generation.musical import metre_of
from engines.settings import check, control

# The classifier-guidance strength the studio suggests and `evaluate` measures (README, diffusion).
SUGGESTED_CLASSIFIER_SCALE = 3.0
CLASSIFIER_TARGETS = ["mode", "mode,rebracketing=high", "mode,rebracketing=low", "rebracketing=high",
                      "rebracketing=low"]


@dataclass
class DiffusionSettings:
    sampler: Literal["ddim", "ddpm", "dpmsolver++"] = field(
        default="ddim", metadata=control("Sampler", choices=["ddim", "ddpm", "dpmsolver++"],
                                         info="DPM-Solver++ does in 10-20 steps what DDIM does in 50"))
    steps: int = field(default=50, metadata=check(lambda v: 1 <= v <= 1000, "an integer 1..1000")
                       | control("Steps", 5, 1000, 5))
    # classifier-free guidance; 4 gave the best consistency on tuning seeds (README, diffusion)
    guidance_scale: float = field(default=4.0, metadata=check(lambda v: 0 <= v <= 20, "a number in 0..20")
                                  | control("Guidance scale (classifier-free; 1 = plain conditional)", 0, 8, 0.5))
    eta: float = field(default=0.0, metadata=check(lambda v: 0 <= v <= 1, "a number in 0..1"))
    classifier_scale: float = field(
        default=0.0, metadata=check(lambda v: 0 <= v <= 20, "a number in 0..20 (0 = off)")
        | control("Classifier guidance strength (0 = off)", 0, 10, 0.5, advanced=True,
                  info=f"{SUGGESTED_CLASSIFIER_SCALE:g} is a good start"))
    classifier_target: str = field(default="mode", metadata=control("Classifier guidance toward",
                                                                    choices=CLASSIFIER_TARGETS, advanced=True))
    # how hard the guidance classifier's attribute head pulls a result toward the axes a request asks for (the
    # axis sliders); the shipped denoiser reads no axes of its own (docs/diffusion.md: 1 measured best)
    axis_guidance: float = field(
        default=1.0, metadata=check(lambda v: 0 <= v <= 20, "a number in 0..20 (0 = off)")
        | control("Axis guidance strength (toward the asked axes; 0 = off)", 0, 5, 0.25, advanced=True))
    classifier_space: Literal["x0", "x_t"] = field(
        default="x0", metadata=control("Classifier gradient taken", advanced=True,
                                       choices=[("on the clean estimate (x0)", "x0"),
                                                ("on the noisy sample (x_t, Dhariwal & Nichol)", "x_t")]))
    metre: str = ""   # e.g. "3/4"; empty: drawn per result from the mode's training metres
    # engines/sampling/copy_guard.py: a result whose clean estimate nearly copies a training segment has some
    # of the notes it shares with it moved to nearby chord tones while it is denoised
    avoid_copies: bool = field(default=True, metadata=control(
        "Steer away from copying training segments", advanced=True,
        info="while a result is denoised, notes it shares with a training segment it nearly copies are moved"))
    candidates: int = candidates_field(8)


class DiffusionGenerator(GeneratorBase):
    name = "diffusion"
    label = "Diffusion (DDIM / DDPM, guided)"
    short_name = "DIFFUSION"
    Settings = DiffusionSettings
    live = True
    writes_in_c = True
    max_batch = 64
    live_label = "Denoising: step {step} of {total}"
    init_verb = "inpainted"

    @classmethod
    def load(cls, path, device="cpu", classifier_path=None) -> "DiffusionGenerator":
        """The denoiser, with the guidance classifier beside it (`guidance-classifier.pt`) when there is one; a
        broken classifier file is logged and generation goes on without it."""
        from pathlib import Path

        from engines.models.guidance_classifier import TrainedGuidanceClassifier
        from engines.models.trained_diffusion import TrainedDiffusion

        model = TrainedDiffusion.load(path, device=device)
        if classifier_path and not Path(classifier_path).is_file():
            raise StudioError(f"no guidance classifier at '{classifier_path}': train one with `python -m engines "
                              "train --engine guidance-classifier` and pass --classifier RUN/best.pt")
        # without one, classifier guidance says it has no classifier
        attach_beside(Path(classifier_path) if classifier_path else cls.files_beside(path)[0],
                      lambda file: TrainedGuidanceClassifier.load(file, device=model.device),
                      lambda classifier: setattr(model, "classifier", classifier), "guidance classifier")
        return cls(model)

    @classmethod
    def files_beside(cls, path) -> list:
        """The guidance classifier loaded with the denoiser (it steers classifier and axis guidance)."""
        from pathlib import Path

        return [Path(path).with_name("guidance-classifier.pt")]

    def axis_target(self, mode: str) -> dict:
        from engines.models.conditioning import request_attributes

        # a request that asks nothing: its mode's target on the axes among the model's inputs (none: {}). Not
        # those the classifier's axis guidance steers: aimed through it, the bridge moved joins no closer
        # (docs/arrange.md)
        return request_attributes(mode.upper(), None, self.model.mode_targets, self.model.model.config.attributes)

    def _checked(self, request: Request) -> tuple[DiffusionSettings, str | None]:
        """The request's settings and metre (None: drawn from the mode's), after the checks every run makes."""
        settings: DiffusionSettings = self.settings_of(request)
        if int(settings.steps) > self.model.num_steps:
            raise StudioError(f"steps must lie in 1..{self.model.num_steps} (the model's training steps), "
                              f"got {int(settings.steps)}")
        metre = request.metre or settings.metre or None   # the request's (musical.py), else the settings'
        metre_of(metre)
        return settings, metre

    def _guidance(self, settings: DiffusionSettings) -> dict:
        from engines.models.guidance_classifier import GuidanceTarget

        return dict(steps=int(settings.steps), sampler=settings.sampler, eta=float(settings.eta),
                    guidance_scale=float(settings.guidance_scale),
                    classifier_scale=float(settings.classifier_scale) if settings.classifier_target else 0.0,
                    target=GuidanceTarget.parse(settings.classifier_target, settings.classifier_space),
                    axis_scale=float(settings.axis_guidance))

    def _bar_steps(self, metres: list[tuple[int, int]]) -> list[int]:
        from engines.music.notes import bar_ticks, steps_per_bar

        return [steps_per_bar(bar_ticks(a, b), self.model.data["steps_per_beat"]) for a, b in metres]

    def _metres(self, request: Request, metre: str | None) -> list[tuple[int, int]]:
        names = self.model.metre_names(request.mode, int(request.n), int(request.seed), metre, request.attributes)
        return [tuple(int(x) for x in m.split("/")) for m in names]

    def run(self, request: Request, on_step=None) -> list:
        settings, metre = self._checked(request)
        kwargs = dict(mode=request.mode, n=int(request.n), seed=int(request.seed), tonic=request.tonic,
                      attributes=request.attributes, **self._guidance(settings))
        if request.init_midi or request.keep_bars:
            if not request.init_midi:
                raise StudioError("inpainting needs a segment to start from: upload a MIDI file or pick a result")
            if not request.keep_bars:
                raise StudioError("inpainting needs at least one bar to keep (1-4); with none, just generate")
            init = request.init_segment()
            metres = [(init.ts_num, init.ts_den)] * int(request.n)
            def sample(watch):
                return self.model.inpaint(init, list(request.keep_bars), on_step=watch, fade_from=request.fade_from,
                                          **kwargs)
        else:
            metres = self._metres(request, metre)
            def sample(watch):
                return self.model.sample(on_step=watch, metre=metre, copies=self.copies_for(settings), **kwargs)
        bar_steps = self._bar_steps(metres)
        watch = None if on_step is None else (lambda i, total, x0: on_step(i, total, (x0, bar_steps)))
        return sample(watch)

    def batch_key(self, request: Request):
        """Requests share a batch when they sample the same way: sampler, steps, eta and guidance (and, under
        classifier guidance, the mode it steers toward), kept off copies or not. Inpainting runs alone."""
        if request.init_midi is not None or request.keep_bars:
            return None
        try:
            settings, _ = self._checked(request)
            guidance = self._guidance(settings)
            if guidance["classifier_scale"] > 0 and self.model.classifier is None:
                return None   # it fails alone, saying there is no classifier
            from engines.models.trained_vae import mode_index

            mode_index(request.mode)
        except StudioError:
            return None
        steered = (request.mode or "WHITE").upper() if guidance["classifier_scale"] > 0 else ""
        return (guidance["sampler"], guidance["steps"], guidance["eta"], guidance["guidance_scale"],
                guidance["classifier_scale"], settings.classifier_target if steered else "",
                settings.classifier_space if steered else "", steered, guidance["axis_scale"],
                bool(settings.avoid_copies))

    def run_batch(self, jobs: list) -> None:
        """The jobs' rows in one sampling loop (TrainedDiffusion.sample_rolls_batch): each its own seed, mode,
        attributes and metres; a job whose on_step says stop gets its current estimate at once."""
        from functools import partial

        from engines.generation.batching import row_spans
        from engines.models.trained_diffusion import RollRequest

        checked = []
        for job in jobs:
            try:
                checked.append((job, *self._checked(job.request)))
            except StudioError as exc:   # it fails alone
                job.fail(exc)
        if not checked:
            return
        jobs = [job for job, _, _ in checked]
        settings = checked[0][1]   # the key: they all sample the same way
        parts = [RollRequest(job.request.mode, job.rows, int(job.request.seed), job.request.attributes, metre)
                 for job, _, metre in checked]
        metres = [self._metres(job.request, metre) for job, _, metre in checked]
        spans = row_spans(jobs)
        bar_steps = [self._bar_steps(m) for m in metres]

        def finish(j: int, x0):
            job = jobs[j]
            job.finish(partial(self._segments, x0, metres[j], job.request))

        def watch(i, total, x0):   # every job's own live view and Stop
            for j, (job, (a, b)) in enumerate(zip(jobs, spans)):
                if not job.done and job.on_step is not None and job.on_step(i, total, (x0[a:b], bar_steps[j])):
                    finish(j, x0[a:b].clone())
            return all(job.done for job in jobs)

        live = any(job.on_step is not None for job in jobs)
        x0, _ = self.model.sample_rolls_batch(parts, on_step=watch if live else None,
                                              copies=self.copies_for(settings), **self._guidance(settings))
        for j, (a, b) in enumerate(spans):
            finish(j, x0[a:b])

    def _segments(self, x0, metres: list[tuple[int, int]], request: Request) -> list:
        from engines.data.torch_dataset import metre_index

        return self.model.to_segments(x0, [metre_index(a, b) for a, b in metres], request.mode, request.tonic)

    def preview(self, state, rows: int) -> Preview:
        x0, bar_steps = state   # x0: (n, 2, T, P) in [-1, 1]
        sounding = ((x0[:rows, 1].clamp(-1, 1) + 1) / 2).float().cpu().numpy()
        return Preview(sounding=sounding, bar_steps=bar_steps[:rows])
