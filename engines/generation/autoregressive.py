"""The GPT behind the Generator interface: a text prompt (the mode's default prompt unless one is written) in,
REMI written under the grammar mask out; or the first bars of a segment continued
(engines/models/trained_autoregressive.py). What a request asks for is the mode its prompt names.

The live view shows each row's notes as they are written, token by token.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engines.errors import StudioError
from engines.generation.base import GeneratorBase, candidates_field, Preview, Request
from engines.generation.musical import metre_of
from engines.settings import check, control

FADE_GUIDANCE = 0.5   # the prompt guidance's share (above 1) when bars move from another mode (Request.fade_from)


@dataclass
class AutoregressiveSettings:
    prompt: str | None = field(default=None, metadata=control(
        "Prompt", info='e.g. "a calm, intimate BLUE phrase" or "a RED segment with high temporal complexity"; '
                       'choosing a mode fills in its prompt'))   # None: the requested mode's default prompt
    # None: the checkpoint's calibration for the asked mode (engines/training/autoregressive_calibration.py;
    # where a mode's few training tunes pulled guidance 3 into copying them, it samples that mode more freely)
    temperature: float | None = field(default=None, metadata=check(lambda v: v is None or 0 < v <= 5,
                                                                   "a number in (0, 5], or null: the mode's")
                                      | control("Temperature (as calibrated for the mode until you move it)",
                                                0.1, 2.0, 0.05))
    top_k: int = field(default=0, metadata=check(lambda v: v >= 0, "an integer >= 0 (0 = off)")
                       | control("Top-k (0 = off)", 0, 200, 1))
    top_p: float = field(default=0.95, metadata=check(lambda v: 0 < v <= 1, "a number in (0, 1]")
                         | control("Top-p (1 = off)", 0.05, 1.0, 0.05))
    prompt_guidance: float | None = field(default=None, metadata=check(lambda v: v is None or 0 <= v <= 10,
                                                                       "a number in 0..10, or null: the mode's")
                                          | control("Prompt guidance (classifier-free; 1 = plain conditional; "
                                                    "as calibrated for the mode until you move it)", 0, 8, 0.5))
    beam_width: int = field(default=1, metadata=check(lambda v: 1 <= v <= 16, "an integer 1..16")
                            | control("Beam width (1 = sample; > 1: one unchecked result)", 1, 8, 1, advanced=True))
    max_bars: int = field(default=4, metadata=check(lambda v: 1 <= v <= 16, "an integer 1..16")
                          | control("Bars to write", 1, 8, 1))
    # engines/sampling/copy_guard.py: while a row writes a passage of a training segment, that passage's next
    # notes are blocked, so it varies what it would otherwise copy
    avoid_copies: bool = field(default=True, metadata=control(
        "Steer away from copying training segments", advanced=True,
        info="while a result follows a training segment, the notes that would go on copying it are blocked"))
    candidates: int = candidates_field(8)


class AutoregressiveGenerator(GeneratorBase):
    name = "autoregressive"
    label = "Autoregressive (GPT, text prompts)"
    short_name = "GPT"
    Settings = AutoregressiveSettings
    live = True
    writes_in_c = False
    max_batch = 64
    # the rows of 16 requests of 8 candidates: at 64 rows the 8th request costs a fifth of the first
    batch_rows = 128
    live_label = "Writing: token {step} (at most {total})"
    init_verb = "continued"
    codec_preview = True   # its results are heard through the audio codec too (the audio-token path)

    @classmethod
    def load(cls, path, device="cpu") -> "AutoregressiveGenerator":
        from engines.models.trained_autoregressive import TrainedAutoregressive

        return cls(TrainedAutoregressive.load(path, device=device))

    def asked_mode(self, request: Request, settings: AutoregressiveSettings) -> str:
        if settings.prompt is not None:
            from engines.data.captions import mode_named

            if not settings.prompt.strip():
                raise StudioError("write a prompt, or choose a mode to fill one in")
            return mode_named(settings.prompt) or "WHITE"   # the prompt says what is asked
        return super().asked_mode(request, settings)

    def candidates(self, request: Request, settings: AutoregressiveSettings) -> int:
        # beam search writes one deterministic result: there is nothing to choose between
        return 1 if settings.beam_width > 1 else super().candidates(request, settings)

    def for_mode(self, settings: AutoregressiveSettings, mode: str) -> AutoregressiveSettings:
        """The settings `mode` is sampled with: a temperature or prompt guidance left unset takes the checkpoint's
        calibration for the mode (TrainedAutoregressive.sampling_for)."""
        from dataclasses import replace

        temperature, guidance = self.model.sampling_for(mode, settings.temperature, settings.prompt_guidance)
        return replace(settings, temperature=temperature, prompt_guidance=guidance)

    def sampling_of(self, request: Request) -> AutoregressiveSettings:
        """The request's settings with its mode's sampling filled in (for_mode)."""
        settings = self.settings_of(request)
        return self.for_mode(settings, self.asked_mode(request, settings))

    def diversify(self, settings: AutoregressiveSettings, round_: int) -> AutoregressiveSettings:
        """Each further round samples hotter and leans less on the prompt: where the GPT has memorised a mode's
        few training tunes (GREEN, issue 17: 30 of 32 candidates were copies at 0.8 / guidance 3), guidance
        1.5 gives 8 non-copies in 32 and half of them GREEN."""
        from dataclasses import replace

        return replace(settings, temperature=max(settings.temperature, min(settings.temperature + 0.2 * round_, 1.4)),
                       prompt_guidance=max(min(settings.prompt_guidance, 1.0),
                                           settings.prompt_guidance - 0.75 * round_))

    def run(self, request: Request, on_step=None) -> list:
        from engines.models.roll_decoding import tonic_shift

        settings: AutoregressiveSettings = self.sampling_of(request)
        tonic_shift(request.tonic)   # an unknown tonic is refused before any sampling
        continue_from, keep = None, 0
        if request.keep_bars and not request.init_midi:
            raise StudioError("continuation needs a MIDI file to continue: upload one or pick a result")
        if request.init_midi:
            continue_from = request.init_segment()
            if request.keep_bars is not None and not len(request.keep_bars):
                raise StudioError("continuation keeps at least the first bar: choose bars 1..k to keep")
            keep = len(request.keep_bars or [1, 2])
            if sorted(request.keep_bars or [1, 2]) != list(range(1, keep + 1)):
                raise StudioError(f"the GPT continues after the first bars: keep bars 1..k, not "
                                  f"{', '.join(map(str, request.keep_bars))}")
        prompt, mode = self._prompt(request, settings)
        guidance = float(settings.prompt_guidance)
        if continue_from is not None and request.fade_from and request.fade_from.upper() not in (mode, "WHITE"):
            # bars that move from the mode before to this one: the prompt pulls half as hard, so the
            # continuation grows out of the bars it follows before it turns
            guidance = 1.0 + FADE_GUIDANCE * max(guidance - 1.0, 0.0)
        kwargs = dict(prompt=prompt, mode=mode, n=int(request.n), temperature=float(settings.temperature),
                      top_k=int(settings.top_k), top_p=float(settings.top_p), beam_width=int(settings.beam_width),
                      max_bars=int(settings.max_bars), seed=int(request.seed), continue_from=continue_from,
                      keep_bars=keep if continue_from is not None else 2,
                      guidance_scale=guidance, metre=self._metre(request, mode) if continue_from is None else None,
                      copies=self.copies_for(settings))
        watch = None
        if on_step is not None:
            budget = self.model.token_budget(prompt, mode, continue_from, kwargs["keep_bars"], kwargs["max_bars"])
            watch = lambda step, rows: on_step(step, budget, (rows, kwargs["max_bars"]))  # noqa: E731
        segments = [r.segment for r in self.model.generate(on_token=watch, **kwargs)]
        return segments if continue_from is not None else [self.in_tonic(s, request.tonic) for s in segments]

    def batch_key(self, request: Request):
        """Requests share a batch when the GPT reads the same ids first (prompt, attribute phrase, metre) and
        write one window; each row keeps its own seed, temperature, top-k, top-p and prompt guidance (so the
        further rounds of verified generation, sampled more freely, share batches too). Continuations, beam
        search and segments longer than a window run alone; rows kept off copies share only with such rows."""
        from engines.models.roll_decoding import tonic_shift

        if request.init_midi is not None or request.keep_bars:
            return None
        try:
            settings: AutoregressiveSettings = self.settings_of(request)
            tonic_shift(request.tonic)
            window, first = self.model.windows(int(settings.max_bars))
            if settings.beam_width > 1 or first < settings.max_bars:
                return None
            prompt, mode = self._prompt(request, settings)
            ids = self.model.prompt_ids(prompt, None, 0, self._metre(request, mode))
        except StudioError:
            return None
        return tuple(ids), int(settings.max_bars), bool(settings.avoid_copies)

    def _prompt(self, request: Request, settings: AutoregressiveSettings) -> tuple[str, str]:
        """(the prompt the model reads: the written one or else the mode's, with its attribute phrase (an
        unwritten prompt once became "None ; ..." here); the mode it asks for)."""
        from engines.data.captions import prompt_for

        mode = self.asked_mode(request, settings)
        written = settings.prompt if settings.prompt is not None else prompt_for(mode)
        return self.prompt_with_attributes(written, self.asked_attributes(mode, request.attributes)), mode

    def _metre(self, request: Request, mode: str) -> tuple[int, int] | None:
        """The metre a request is written in: the one it names; for one that asks attributes and no mode, drawn
        by its seed from the metres of the training segments nearest them (conditioning.neighbour_metre_counts;
        docs/autoregressive.md); else None, the model's own choice."""
        if request.metre or mode.upper() != "WHITE":
            return metre_of(request.metre)
        import torch

        from engines.data.torch_dataset import METRES
        from engines.models.conditioning import neighbour_metre_counts

        counts = neighbour_metre_counts(self.model.attribute_metres, request.attributes, len(METRES))
        if counts is None:
            return None
        return METRES[int(torch.multinomial(counts, 1, generator=torch.Generator().manual_seed(int(request.seed))))]

    def run_batch(self, jobs: list) -> None:
        """The jobs' rows written as one batch (TrainedAutoregressive.sample_groups); a job whose on_step says
        stop gets its rows as written so far, at once."""
        from functools import partial

        import torch

        from engines.generation.batching import row_spans
        from engines.sampling.autoregressive import RowGroup

        settings: list[AutoregressiveSettings] = [self.sampling_of(job.request) for job in jobs]
        groups = [RowGroup(job.rows, float(s.temperature), int(s.top_k), float(s.top_p),
                           torch.Generator().manual_seed(int(job.request.seed)), float(s.prompt_guidance))
                  for job, s in zip(jobs, settings)]
        spans = row_spans(jobs)
        prompt, mode = self._prompt(jobs[0].request, settings[0])   # the key: they all read the same
        bars = int(settings[0].max_bars)
        budget = self.model.token_budget(prompt, mode, None, 2, bars)

        def watch(step, rows):   # every job's own live view and Stop
            for job, (a, b) in zip(jobs, spans):
                if not job.done and job.on_step is not None and job.on_step(step, budget, (rows[a:b], bars)):
                    job.finish(partial(self._segments, [list(r) for r in rows[a:b]], bars, job.request.tonic))
            return all(job.done for job in jobs)

        live = any(job.on_step is not None for job in jobs)
        spans_written = self.model.sample_groups(prompt, mode, groups, bars, self._metre(jobs[0].request, mode),
                                                 watch if live else None, self.copies_for(settings[0]))
        for job, (a, b) in zip(jobs, spans):
            job.finish(partial(self._segments, spans_written[a:b], bars, job.request.tonic))

    def _segments(self, spans: list[list[int]], bars: int, tonic: str | None) -> list:
        return [self.in_tonic(self.model.to_generated(span, bars).segment, tonic) for span in spans]

    def in_tonic(self, segment, tonic: str | None):
        """The segment moved (-6..5 semitones) from the tonic of the key the analyzer hears to `tonic` (None:
        as written). The GPT writes in the key its prompt or its training segments had, not in C; a continued
        segment keeps the key of the bars it kept."""
        from engines.models.roll_decoding import segment_tonic, tonic_shift
        from engines.music.notes import shift_to_c, transpose_notes

        if not tonic or not len(segment.notes):
            return segment
        semitones = (tonic_shift(tonic) + shift_to_c(segment_tonic(segment)) + 6) % 12 - 6
        segment.notes = transpose_notes(segment.notes, semitones, self.model.data.get("pitch_low", 21),
                                        self.model.data.get("pitch_high", 108))
        return segment

    @property
    def takes_attributes(self) -> bool:
        """Whether this checkpoint learned attribute phrases ("energy 7 ..."): one trained before did not."""
        from engines.data.captions import ATTRIBUTE_WORDS

        words = set(self.model.vocabulary.words)
        return set(ATTRIBUTE_WORDS.values()) <= words and {str(d) for d in range(10)} <= words

    def asked_attributes(self, mode: str, attributes: dict | None) -> dict:
        """The attributes the prompt's phrase asks for: those given, and for a mode the axes inside its region
        (conditioning.request_attributes), as the VAE and diffusion are conditioned."""
        from engines.models.conditioning import CONDITION_ATTRIBUTES, request_attributes

        return request_attributes(mode, attributes, self.model.mode_targets, CONDITION_ATTRIBUTES)

    def prompt_with_attributes(self, prompt: str, attributes: dict | None) -> str:
        """The prompt, and the attributes asked for as the phrase the model was trained on (when it was)."""
        from engines.data.captions import attribute_phrase
        from engines.models.conditioning import unit_value

        if not attributes or not self.takes_attributes:
            return prompt
        phrase = attribute_phrase({k: unit_value(k, v) for k, v in attributes.items() if v is not None})
        return f"{prompt} ; {phrase}" if phrase else prompt

    def preview(self, state, rows: int) -> Preview:
        from engines.music.notes import bar_ticks, notes_to_roll, steps_per_bar

        written, bars = state   # every row's MIDI ids so far, the bars it may write
        d = self.model.data
        spb = d.get("steps_per_beat", 4)
        low, high = d.get("pitch_low", 21), d.get("pitch_high", 108)
        out = np.zeros((rows, bars * 4 * spb, high - low + 1), np.float32)
        bar_steps = [steps_per_bar(bar_ticks(4, 4), spb)] * rows
        for i, row in enumerate(written[:rows]):
            segment = self.model.partial_segment(row, bars)
            if segment is not None and len(segment.notes):
                roll = notes_to_roll(segment.notes, segment.bar_length, bars, spb, low, high)
                out[i, :roll.shape[1]] = roll[1] > 0
                bar_steps[i] = steps_per_bar(segment.bar_length, spb)
        return Preview(sounding=out, bar_steps=bar_steps)
