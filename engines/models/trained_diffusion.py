"""A trained diffusion engine as users meet it: sample segments by mode with classifier-free guidance, steer
them with a guidance classifier, and regenerate chosen bars of a segment (inpainting).

    engine = TrainedDiffusion.load("assets/checkpoints/diffusion.pt")
    segments = engine.sample("BLUE", n=4, steps=50, sampler="ddim", guidance_scale=4.0, seed=1)
    engine.classifier = TrainedGuidanceClassifier.load("assets/checkpoints/guidance-classifier.pt")
    segments = engine.sample("BLUE", classifier_scale=3.0, target=GuidanceTarget(mode=True, rebracketing="high"))
    segments = engine.inpaint(init_segment, keep_bars=[1, 2], mode="RED")

Classifier-free guidance: the network is run with and without the mode and attributes (WHITE, "not given")
in one batch, and the two predictions are extrapolated: out = uncond + scale * (cond - uncond) (Ho & Salimans
2022); scale 1 is the plain conditional model, 0 the unconditional one.

Classifier guidance (engines/models/guidance_classifier.py): at every step the gradient of the classifier's
log p(y) for the target (the requested mode and/or high or low rebracketing) moves the prediction. In the
default space "x0" the classifier reads the current clean estimate and x0 moves by scale * grad; in "x_t"
(Dhariwal & Nichol) it reads x_t and the noise moves, eps' = eps - scale * sqrt(1 - alpha_bar_t) * grad
(engines/sampling/diffusion.py: guided_eps). Either way the other of (x0, eps) is re-derived, so it works with
every sampler and on top of classifier-free guidance. "x0" is the default because it is the one that works
here (README: measured); a noisy roll says little about syncopation, so the gradient at x_t is weak.
Axis guidance: a classifier with an attribute head also pulls each row toward the attributes its request asks
for (the axis sliders), at its own strength `axis_scale`, in the same gradient step: the shipped denoiser reads
no axes, so this is how it follows them.

Metre and tempo: the denoiser is told the metre; unless one is asked for, it is drawn (by the seed) from how
often each metre occurs in the training segments of that mode, and the tempo is the median of that mode's
training segments in that metre. A request that asks attributes and no mode draws it from the metres of the
NEIGHBOURS training segments whose attributes lie nearest the asked ones (metre_weights).
Inpainting keeps the metre and tempo of the segment it starts from.

Decoding (engines/models/roll_decoding.py): the final x0 lies in [-1, 1]; (x0 + 1) / 2 is read as the onset
and sustain probability, a note starts where the onset channel exceeds the config's `onset_threshold`
(0 = probability 0.5) and lasts while the sustain channel is above 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engines.data.torch_dataset import METRES, WHITE_INDEX, metre_index
from engines.errors import StudioError
from engines.models.conditioning import attribute_tensors, drawn_request_attributes, neighbour_metre_counts
from engines.models.denoiser import RollDenoiser, model_from_checkpoint, roll_to_unit
from engines.models.guidance_classifier import GuidanceTarget, TrainedGuidanceClassifier
from engines.models.roll_decoding import probabilities_to_segments, segment_tonic, tonic_shift
from engines.models.trained_vae import mode_index, mode_name
from engines.music.analyzer import WHITE
from engines.music.notes import (Segment, bar_ticks, clean_notes, notes_to_roll, shift_to_c, steps_per_bar,
                                 transpose_notes)
from engines.sampling.copy_guard import RollAwayFromCopies
from engines.sampling.diffusion import Inpainting, NoiseScheduler, guided_eps, sample_loop
from engines.training.common import load_checkpoint

MAX_BATCH = 64
FADE_START = 0.25   # the asked mode's share of the guidance where a fade from another mode begins


@dataclass
class RollRequest:
    """One request's rows of a batch sampled together (engines/generation/batching.py). Its metres, then its
    noise, are drawn from its own seed, in that order, as if it were sampled alone."""

    mode: str = WHITE
    n: int = 1
    seed: int = 0
    attributes: dict | None = None
    metre: str | None = None           # e.g. "3/4"; None: drawn (metre_weights)
    metres: list[int] | None = None    # the metre index of each row, fixed (inpainting)
    tempo: float | None = None         # qpm the rows will play at (inpainting: the init's); None: tempo_for


class TrainedDiffusion:
    def __init__(self, model: RollDenoiser, payload: dict, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.payload = payload
        self.data = payload["data"]
        c = model.config
        self.scheduler = NoiseScheduler(c.num_steps, c.noise_schedule, c.prediction)
        self.metre_counts = payload["metre_counts"].float().cpu()  # (9, len(METRES)) per mode, WHITE = all
        self.tempo = payload["tempo"].cpu()                        # (9,) median qpm per mode
        # (9, len(METRES)) median qpm per mode and metre (diffusion_trainer.mode_statistics says why)
        self.metre_tempo = payload["metre_tempo"].cpu() if "metre_tempo" in payload else None
        # per mode, the attributes deep inside its region (none in checkpoints from before them)
        self.mode_targets: dict = payload.get("mode_targets", {})
        # per mode, the attributes of some of its training segments: each result aims at one of them
        # (conditioning.drawn_request_attributes); {} (older checkpoints): every result at the mode's median
        self.mode_target_pool: dict = payload.get("mode_target_pool", {})
        # the training segments' attributes (unit scale) and metre indices, for metre_weights ({} before them)
        self.attribute_metres: dict = payload.get("attribute_metres", {})
        self._classifier: TrainedGuidanceClassifier | None = None

    @property
    def classifier(self) -> TrainedGuidanceClassifier | None:
        """The guidance classifier used when a sample asks for classifier_scale > 0 (None = none loaded)."""
        return self._classifier

    @classifier.setter
    def classifier(self, classifier: TrainedGuidanceClassifier | None) -> None:
        if classifier is not None:
            c = self.model.config
            classifier.check_compatible(c.num_steps, c.noise_schedule, self.model.steps, self.model.pitches,
                                        c.key_to_c)
            classifier.model.to(self.device)
        self._classifier = classifier

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "TrainedDiffusion":
        payload = load_checkpoint(path, map_location=device, engine="diffusion")
        return cls(model_from_checkpoint(payload), payload, device)

    @property
    def num_steps(self) -> int:
        return self.scheduler.num_steps

    def denoiser(self, mode: torch.Tensor, condition: tuple | None, metre: torch.Tensor,
                 guidance_scale: float, classifier_scale: float = 0.0,
                 target: GuidanceTarget | None = None, fade: tuple | None = None,
                 aim: tuple | None = None, log_tempo: torch.Tensor | None = None,
                 axis_scale: float = 0.0) -> Callable:
        """denoise(x_t, t) -> (x0, eps) with classifier-free guidance at `guidance_scale` and, when
        `classifier_scale` > 0, classifier guidance toward `target`. `condition`: (values, given), each (B, k),
        or None (no attribute given). `fade`: (the mode index the roll begins in, weights (T,) of `mode` per
        roll step): the conditional prediction is that mode's and `mode`'s, mixed step by step, so the
        music moves from one to the other along the roll (regional guidance, as in MultiDiffusion).
        `aim`: (values, given), each (B, k) in the classifier's attribute order: the asked attributes its
        attribute head is steered toward at strength `axis_scale` (None: nothing asked); `log_tempo` (B,): each
        row's tempo, log qpm (default: tempo_for's)."""
        values, given = condition if condition is not None else (None, None)
        labels = classifier_scale > 0 and target is not None and target.active(mode)
        toward_attributes = aim if axis_scale > 0 and aim is not None and self.steers_axes else None
        steer = labels or toward_attributes is not None
        toward_mode = mode if labels and target.steers_mode(mode) else None
        rebracketing = target.rebracketing if labels else None
        space = target.space if target is not None else "x0"
        weights = (classifier_scale, axis_scale)
        if steer and log_tempo is None:   # each row's mode's median tempo in its metre
            log_tempo = torch.log(self._tempo_table(mode.cpu(), metre.cpu()).float()).to(self.device)
        if labels and self.classifier is None:
            raise StudioError("classifier guidance needs a guidance classifier: train one with `python -m engines "
                              "train --engine guidance-classifier` and ship it as guidance-classifier.pt")

        # the streams one batch holds, in order: the asked mode, the mode faded from (with a fade), and under
        # guidance the unconditional one (no mode, no attribute)
        conditioned = [mode] + ([torch.full_like(mode, int(fade[0]))] if fade is not None else [])
        guided = guidance_scale != 1.0
        streams = torch.cat(conditioned + ([torch.full_like(mode, WHITE_INDEX)] if guided else []))
        k = len(conditioned) + guided
        batch_values = batch_given = None
        if values is not None:
            batch_values = torch.cat([values] * len(conditioned) + [torch.zeros_like(values)] * guided)
            batch_given = torch.cat([given] * len(conditioned) + [torch.zeros_like(given)] * guided)
        batch_metre = torch.cat([metre] * k)

        def denoise(x_t: torch.Tensor, t: torch.Tensor):
            n = x_t.shape[0]
            out = self.model(torch.cat([x_t] * k), torch.cat([t] * k), streams, batch_values, batch_given, batch_metre)
            output = out[:n]
            if fade is not None:   # `mode`'s share per roll step, (1, 1, T, 1)
                weight = fade[1].to(x_t.dtype).view(1, 1, -1, 1)
                output = weight * output + (1 - weight) * out[n:2 * n]
            if guided:
                output = out[-n:] + guidance_scale * (output - out[-n:])
            x0, eps = self.scheduler.split(output, x_t, t)
            if steer and space == "x0":  # move the clean estimate itself (guidance_classifier.SPACES)
                x0 = x0.clamp(-1, 1)
                x0 = x0 + self.classifier.gradient(x0, torch.zeros_like(t), metre, toward_mode, rebracketing,
                                                   log_tempo, toward_attributes, weights)   # scaled by weights
                eps = self.scheduler.eps_from_x0(x0, x_t, t)
            elif steer:  # Dhariwal & Nichol: shift the noise by the gradient at x_t
                grad = self.classifier.gradient(x_t, t, metre, toward_mode, rebracketing, log_tempo,
                                                toward_attributes, weights)
                eps = guided_eps(eps, grad, self.scheduler, t, 1.0)
                x0 = self.scheduler.x0_from_eps(eps, x_t, t)
            return x0, eps

        return denoise

    def _metres(self, mode: int, n: int, metre: str | None, generator: torch.Generator,
                attributes: dict | None = None) -> list[int]:
        if metre:
            try:
                num, den = (int(x) for x in str(metre).split("/"))
                return [METRES.index((num, den))] * n
            except ValueError:
                raise StudioError(f"unknown metre '{metre}'; choose one of "
                                  f"{', '.join(f'{a}/{b}' for a, b in METRES)}") from None
        weights = self.metre_weights(mode, attributes)
        return torch.multinomial(weights, n, replacement=True, generator=generator).tolist()

    def metre_weights(self, mode: int, attributes: dict | None = None) -> torch.Tensor:
        """(len(METRES),) how often each metre is drawn for a request: for one that asks attributes and no mode,
        its count among the training segments nearest the asked ones (conditioning.neighbour_metre_counts:
        asked axes landed 0.024 closer, docs/diffusion.md); else the mode's count in the training split (WHITE:
        all of it)."""
        if mode == WHITE_INDEX:
            counts = neighbour_metre_counts(self.attribute_metres, attributes, len(METRES))
            if counts is not None:
                return counts
        weights = self.metre_counts[mode]
        return weights if weights.sum() > 0 else self.metre_counts[WHITE_INDEX]

    def metre_names(self, mode: str, n: int, seed: int, metre: str | None = None,
                    attributes: dict | None = None) -> list[str]:
        """The metres `sample(mode, n, seed=seed, metre=metre, attributes=attributes)` writes, as "3/4" (drawn
        first from the seed)."""
        generator = torch.Generator().manual_seed(int(seed))
        return [f"{a}/{b}" for a, b in (METRES[i] for i in self._metres(mode_index(mode), n, metre, generator,
                                                                         attributes))]

    @torch.no_grad()
    def sample_rolls(self, mode: str = WHITE, n: int = 1, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
                     guidance_scale: float = 4.0, seed: int = 0, attributes: dict | None = None,
                     metre: str | None = None, on_step: Callable | None = None,
                     inpainting: Inpainting | None = None, classifier_scale: float = 0.0,
                     target: GuidanceTarget | None = None, metres: list[int] | None = None,
                     fade: tuple | None = None, tempo: float | None = None,
                     axis_scale: float = 0.0, copies=None) -> tuple[torch.Tensor, list[int]]:
        """Final x0 (n, 2, T, P) in [-1, 1] and the metre index of each (`metres` fixes them, as inpainting does).
        `fade`, `axis_scale`: see `denoiser`; `copies`: see `sample_rolls_batch`. `tempo`: the qpm the rows will
        play at (None: tempo_for)."""
        x0, [metres] = self.sample_rolls_batch([RollRequest(mode, n, seed, attributes, metre, metres, tempo)], steps,
                                               sampler, eta, guidance_scale, on_step, inpainting, classifier_scale,
                                               target, fade, axis_scale, copies)
        return x0, metres

    @torch.no_grad()
    def sample_rolls_batch(self, parts: list[RollRequest], steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
                           guidance_scale: float = 4.0, on_step: Callable | None = None,
                           inpainting: Inpainting | None = None, classifier_scale: float = 0.0,
                           target: GuidanceTarget | None = None, fade: tuple | None = None,
                           axis_scale: float = 0.0, copies=None) -> tuple[torch.Tensor, list[list[int]]]:
        """The rows of several requests sampled as one batch: x0 (sum of n, 2, T, P) in part order, and each
        part's metre indices. Each part gets the rows it would get sampled alone (its own seed, mode, attributes
        and metres); the steps, sampler and guidance are shared. `axis_scale`: how hard the guidance classifier's
        attribute head pulls each row toward the attributes its request asks for (see `denoiser`). `copies` (a
        CopyIndex of the training split): a row whose clean estimate nearly copies a training segment has some
        of the notes it shares with it moved while it is written (copy_guard.RollAwayFromCopies)."""
        total = sum(int(part.n) for part in parts)
        if not parts or not 1 <= total <= MAX_BATCH or any(int(part.n) < 1 for part in parts):
            raise StudioError(f"n must lie in 1..{MAX_BATCH}, got {total}")
        if guidance_scale < 0:
            raise StudioError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if classifier_scale < 0:
            raise StudioError(f"classifier guidance strength must be >= 0, got {classifier_scale}")
        if axis_scale < 0:
            raise StudioError(f"axis guidance strength must be >= 0, got {axis_scale}")
        names = self.model.config.attributes
        aiming = axis_scale > 0 and self.steers_axes
        modes, metres, values, given, noise, any_asked = [], [], [], [], [], False
        aims, tempos, any_aimed = [], [], False
        for part in parts:
            index = mode_index(part.mode)
            generator = torch.Generator().manual_seed(int(part.seed))
            drawn = (part.metres if part.metres is not None
                     else self._metres(index, part.n, part.metre, generator, part.attributes))
            # a mode aims inside its region, each result at a place of its own there
            asked = drawn_request_attributes(mode_name(part.mode), part.attributes, self.mode_target_pool,
                                             self.mode_targets, names, int(part.n), int(part.seed))
            any_asked = any_asked or any(asked)
            rows = [attribute_tensors(row or None, names, 1, self.device) for row in asked]   # none: zeros
            part_values, part_given = torch.cat([v for v, _ in rows]), torch.cat([g for _, g in rows])
            modes.append(torch.full((part.n,), index, dtype=torch.long, device=self.device))
            metres.append(list(drawn)), values.append(part_values), given.append(part_given)
            noise.append((generator, int(part.n)))
            tempos += [float(part.tempo) if part.tempo else self.tempo_for(part.mode, m) for m in drawn]
            if aiming:   # the attribute head's aim: what the request asks for, on the attributes it reads
                aims.append(attribute_tensors(part.attributes, self.classifier.attributes, int(part.n), self.device))
                any_aimed = any_aimed or bool(aims[-1][1].any())
        condition = (torch.cat(values), torch.cat(given)) if any_asked else None
        aim = (torch.cat([v for v, _ in aims]), torch.cat([g for _, g in aims])) if any_aimed else None
        log_tempo = torch.log(torch.tensor(tempos, device=self.device))
        metre_t = torch.tensor([m for part in metres for m in part], device=self.device)
        shape = (total, 2, self.model.steps, self.model.pitches)
        if fade is not None and (classifier_scale > 0 or len(parts) > 1):
            raise StudioError("a fade between modes samples one request alone, without classifier guidance")
        denoise = self.denoiser(torch.cat(modes), condition, metre_t, guidance_scale, classifier_scale, target, fade,
                                aim, log_tempo, axis_scale)
        if copies is not None:
            denoise = self.away_from_copies(denoise, copies, [m for part in metres for m in part], int(parts[0].seed))
        x0 = sample_loop(self.scheduler, denoise, shape, steps, sampler, eta, noise if len(noise) > 1 else noise[0][0],
                         inpainting=inpainting, on_step=on_step, device=self.device)
        return x0, metres

    def away_from_copies(self, denoise: Callable, copies, metres: list[int], seed: int) -> RollAwayFromCopies:
        """`denoise` kept off near copies of the training segments of `copies` (rows in C, metres (B,))."""
        d = self.data
        bar_lengths = [bar_ticks(*METRES[m]) for m in metres]

        def to_roll(row: int, notes) -> np.ndarray:
            return notes_to_roll(notes, bar_lengths[row], d["segment_bars"], d["steps_per_beat"], d["pitch_low"],
                                 d["pitch_high"])[:, :self.model.steps] > 0

        return RollAwayFromCopies(denoise, copies, lambda x0: self.to_segments(x0, metres), to_roll, self.scheduler,
                                  seed)

    @property
    def steers_axes(self) -> bool:
        """A guidance classifier with an attribute head is attached: asked axes can be steered toward."""
        return self.classifier is not None and bool(self.classifier.attributes)

    def _tempo_table(self, modes: torch.Tensor, metres: torch.Tensor) -> torch.Tensor:
        """qpm for mode and metre indices (any shape): the median of the mode's training segments in that metre
        (the mode's median in checkpoints without the per-metre table)."""
        return self.metre_tempo[modes, metres] if self.metre_tempo is not None else self.tempo[modes]

    def tempo_for(self, mode: str, metre: int) -> float:
        """The median tempo of the mode's training segments in that metre (the mode's median if few)."""
        return float(self._tempo_table(torch.tensor(mode_index(mode)), torch.tensor(metre)))

    def to_segments(self, x0: torch.Tensor, metres: list[int], mode: str = WHITE, tonic: str | None = None,
                    tempo: float | None = None) -> list[Segment]:
        """x0 (B, 2, T, P) in [-1, 1] -> Segments (roll_decoding), moved from C to `tonic`; the tempo is the
        mode's median in each segment's metre unless one is given."""
        c, d = self.model.config, self.data
        probability = (x0.clamp(-1, 1) + 1) / 2
        tempos = [self.tempo_for(mode, m) if tempo is None else float(tempo) for m in metres]
        segments = probabilities_to_segments(probability[:, 0], probability[:, 1], metres, tempos,
                                             d["steps_per_beat"], d["pitch_low"], d["segment_bars"],
                                             (c.onset_threshold + 1) / 2, 0.5, c.pitch_window,
                                             c.sustain_onsets, c.min_note_steps)
        semitones = tonic_shift(tonic)
        for segment in segments:
            segment.notes = transpose_notes(segment.notes, semitones, d["pitch_low"], d["pitch_high"])
        return segments

    def sample(self, mode: str = WHITE, n: int = 1, steps: int = 50, sampler: str = "ddim", eta: float = 0.0,
               guidance_scale: float = 4.0, seed: int = 0, attributes: dict | None = None, metre: str | None = None,
               tonic: str | None = None, on_step: Callable | None = None, classifier_scale: float = 0.0,
               target: GuidanceTarget | None = None, axis_scale: float = 0.0, copies=None) -> list[Segment]:
        """n segments under `mode` (WHITE = unconditioned)."""
        x0, metres = self.sample_rolls(mode, n, steps, sampler, eta, guidance_scale, seed, attributes, metre, on_step,
                                       classifier_scale=classifier_scale, target=target, axis_scale=axis_scale,
                                       copies=copies)
        return self.to_segments(x0, metres, mode, tonic)

    # ---- inpainting -----------------------------------------------------------------------------------
    def fade_weights(self, init: Segment, keep_bars: list[int]) -> torch.Tensor:
        """(T,) the asked mode's share of the guidance at each roll step of a fade: FADE_START at the first bar
        regenerated, rising linearly to 1 at the end of the last (kept bars are inpainted, so theirs is moot)."""
        bar_steps = steps_per_bar(init.bar_length, self.data["steps_per_beat"])
        free = [b for b in range(1, self.data["segment_bars"] + 1) if b not in {int(k) for k in keep_bars}]
        start, end = (min(free) - 1) * bar_steps, max(free) * bar_steps
        ramp = ((torch.arange(self.model.steps, dtype=torch.float32) - start) / max(end - 1 - start, 1)).clamp(0, 1)
        return FADE_START + (1 - FADE_START) * ramp

    def inpainting_for(self, init: Segment, keep_bars: list[int], n: int, resample: int = 2) -> tuple[Inpainting, int, int]:
        """What inpainting `init` needs: the known roll in C and its mask (the kept bars, and the padding past
        the last bar), the metre index, and the semitones that moved `init` to C. keep_bars are 1-based."""
        d = self.data
        bars = d["segment_bars"]
        bad = [b for b in keep_bars if not 1 <= int(b) <= bars]
        if bad:
            raise StudioError(f"bars to keep must lie in 1..{bars}, got {', '.join(map(str, bad))}")
        missing = [b for b in keep_bars if int(b) > init.num_bars]
        if missing:
            raise StudioError(f"the segment to start from has only {init.num_bars} bar(s); cannot keep bar "
                              f"{', '.join(map(str, missing))}")
        if (init.ts_num, init.ts_den) not in METRES:
            raise StudioError(f"inpainting works in the metres the model knows "
                              f"({', '.join(f'{a}/{b}' for a, b in METRES)}), not {init.ts_num}/{init.ts_den}")
        semitones = shift_to_c(segment_tonic(init)) if self.model.config.key_to_c and len(init.notes) else 0
        notes = transpose_notes(init.notes, semitones, d["pitch_low"], d["pitch_high"])
        # the roll of all segment_bars bars (bars a short segment lacks are silent, and free to regenerate)
        roll = notes_to_roll(notes, init.bar_length, bars, d["steps_per_beat"], d["pitch_low"], d["pitch_high"])
        known = roll_to_unit(torch.from_numpy(roll)[None]).to(self.device).repeat(n, 1, 1, 1)  # (n, 2, T, P)
        bar_steps = steps_per_bar(init.bar_length, d["steps_per_beat"])
        mask = torch.zeros(self.model.steps, dtype=torch.bool)
        for b in keep_bars:
            mask[(int(b) - 1) * bar_steps:int(b) * bar_steps] = True
        mask[bars * bar_steps:] = True  # padding past the last bar stays silent
        mask = mask[None, None, :, None].expand_as(known).to(self.device)
        return Inpainting(known, mask, resample), metre_index(init.ts_num, init.ts_den), semitones

    def inpaint(self, init: Segment, keep_bars: list[int], mode: str = WHITE, n: int = 1, steps: int = 50,
                sampler: str = "ddim", eta: float = 0.0, guidance_scale: float = 4.0, seed: int = 0,
                tonic: str | None = None, on_step: Callable | None = None, classifier_scale: float = 0.0,
                target: GuidanceTarget | None = None, resample: int | None = None,
                attributes: dict | None = None, fade_from: str | None = None,
                axis_scale: float = 0.0) -> list[Segment]:
        """n versions of `init` with `keep_bars` (1-based) kept and the other bars regenerated under `mode`,
        in init's metre and tempo; written back in init's key unless a tonic is named. `resample`: how often
        each step is taken (RePaint); default 2, and 1 for dpmsolver++ (a multistep solver cannot jump back).
        `fade_from`: a mode the regenerated bars begin in, moving to `mode` by their end (fade_weights)."""
        if resample is None:
            resample = 1 if sampler == "dpmsolver++" else 2
        inpainting, metre, semitones = self.inpainting_for(init, keep_bars, n, resample)
        fade = None
        if fade_from is not None and mode_name(fade_from) not in (WHITE, mode_name(mode)):
            fade = (mode_index(fade_from), self.fade_weights(init, keep_bars))
        x0, metres = self.sample_rolls(mode, n, steps, sampler, eta, guidance_scale, seed, attributes,
                                       on_step=on_step, inpainting=inpainting,
                                       classifier_scale=0.0 if fade is not None else classifier_scale,
                                       target=target, metres=[metre] * n, fade=fade, tempo=init.tempo_qpm,
                                       axis_scale=axis_scale)
        generated = self.to_segments(x0, metres, mode, tempo=init.tempo_qpm)
        d = self.data
        out_shift = tonic_shift(tonic) if tonic else -semitones     # C -> the key written
        kept = transpose_notes(init.notes, semitones + out_shift, d["pitch_low"], d["pitch_high"])
        kept_bar = np.isin(kept["start"] // init.bar_length + 1, [int(b) for b in keep_bars])
        for segment in generated:  # kept bars hold init's own notes, exactly; the others what was generated
            notes = transpose_notes(segment.notes, out_shift, d["pitch_low"], d["pitch_high"])
            fresh = ~np.isin(notes["start"] // init.bar_length + 1, [int(b) for b in keep_bars])
            # a note held across a kept/regenerated border is cut where one of its pitch starts
            segment.notes = clean_notes(np.concatenate([kept[kept_bar], notes[fresh]]))
        return generated
