"""Writing a piece plan: each section by its engine, window by window, each window checked like any generation
(engines/generation/verify.py), the sections joined without seams.

    arranger = Arranger(generators, cfg, verifier)       # generators: {name: Generator}, e.g. a ModelRegistry's
    piece = arranger.arrange(load_plan("assets/plans/blue-to-red.json"), seed=1)
    piece.segments                                       # the whole piece: one Segment per section, in order
    piece.report()                                       # {"sections": [{"asked", "heard", ...}], "joins": [...]}
    piece = arranger.regenerate(piece, 1, seed=7)        # section 2 anew; its neighbours stay, the joins are redone

Every engine writes 4-bar segments, so a section is written in 4-bar windows that overlap by OVERLAP_BARS:
a window keeps the last bars written before it and writes the bars after them (the diffusion engine inpaints
them, the GPT continues from them; engines/generation: Request.init_midi and keep_bars). The first window of a
section that follows another in the same metre keeps the last bars of that section, so a change of mode is
written across the boundary instead of cut: the new section's first bars answer the old one's last. A
section in a new metre starts afresh. The VAE cannot keep bars; its windows follow the bars before them in
its latent space instead (engines/generation/vae.py: a segment to start from is varied, its latent slerped
toward the drawn one), and write all four bars anew.

The window that opens a section is ranked by the judge and by how smoothly it joins the bars before it
(engines/arrange/joins.join_cost, weighed by generation.arrange.join_weight). With an engine that follows axis
targets (Generator.axis_target: diffusion), it also aims between the two: on every axis the section leaves free,
at the reading of the bars before moved generation.arrange.bridge of the way toward the mode's interior. With
generation.arrange.fade, in a section longer than 4 bars its first bars also move from the mode before to the
section's own (Request.fade_from: the diffusion engine fades its guidance from one mode to the other along the
roll; the GPT's prompt pulls half as hard). A whole section the analyzer hears in another mode than asked is written
again from another seed (generation.arrange.section_tries in all); the first the analyzer hears as asked is
kept, else the one the judge rates best. The report keeps what the analyzer heard in the first one written
beside what it hears in the one kept.

Regenerating one section writes it anew after the section before it, as above, and then rewrites the
first OVERLAP_BARS bars of the section after it so that they answer the new ending (the diffusion engine
inpaints them between the new last bar and the following section's own third bar, so both seams close; the
GPT continues from the new ending; the VAE follows it). Every other bar stays as it was.

What each section asked for and what the analyzer hears in it, and at each join how far the analyzer's
axes and the note density move from the bars before to the bars after (engines/arrange/joins.py), go into
the report.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from engines.arrange.plan import PiecePlan, SectionPlan
from engines.errors import StudioError
from engines.generation.base import Request
from engines.generation.verify import Verifier, draw
from engines.music.analyzer import MODES, WHITE
from engines.music.notes import Segment, bars_window, clean_notes

WINDOW_BARS = 4      # what every engine writes at once
OVERLAP_BARS = 2     # bars a window keeps of what came before it


@dataclass
class SectionResult:
    plan: SectionPlan
    segment: Segment                 # the section's bars, at the piece's tempo and key
    heard: str | None                # the mode the analyzer hears in the whole section (None: no notes)
    windows: int                     # 4-bar windows written
    seconds: float
    verifications: list[dict] = field(default_factory=list)   # each window's, as verify.Verification.to_dict
    tries: int = 1                   # times the section was written (the analyzer heard another mode before)
    first_heard: str | None = None   # what the analyzer heard in the first one written: the unchecked figure

    def summary(self) -> dict:
        """The section in the piece's report: {"asked", "heard", "bars", "engine", "seconds", ...}."""
        s = self.segment
        return {"asked": self.plan.mode, "heard": self.heard, "bars": s.num_bars, "engine": self.plan.engine,
                "seconds": self.seconds, "windows": self.windows, "tries": self.tries,
                "heard_first_try": self.first_heard, "metre": f"{s.ts_num}/{s.ts_den}",
                "tempo": round(s.tempo_qpm, 2), "notes": int(len(s.notes)), "verifications": self.verifications}


@dataclass
class ArrangedPiece:
    plan: PiecePlan
    sections: list[SectionResult]
    seconds: float

    @property
    def segments(self) -> list[Segment]:
        return [section.segment for section in self.sections]

    def markers(self) -> list[str]:
        """One MIDI marker per section: "1 BLUE diffusion", "2 RED autoregressive" ..."""
        return [f"{i + 1} {s.plan.mode} {s.plan.engine}" for i, s in enumerate(self.sections)]

    def joins(self, analyzer=None) -> list[dict]:
        from engines.arrange.joins import join_jump

        return [{"after_section": i + 1, **join_jump(a.segment, b.segment, analyzer)}
                for i, (a, b) in enumerate(zip(self.sections, self.sections[1:]))]

    def report(self, analyzer=None) -> dict:
        """{"sections": [{"asked", "heard", "bars", "engine", "seconds", ...}], "joins": [...], "seconds"}."""
        sections = [s.summary() for s in self.sections]
        return {"sections": sections, "joins": self.joins(analyzer), "bars": sum(s["bars"] for s in sections),
                "seconds": self.seconds}

    def score(self):
        """The piece as one symusic Score: each section's tempo and metre, a key signature where the plan names
        a key and major or minor (a tonic alone leaves it to the engine), a marker at each section's start."""
        from engines.data.midi_io import segments_to_score
        from engines.models.roll_decoding import tonic_shift

        keys = [(tonic_shift(s.plan.tonic) % 12, s.plan.scale == "major") if s.plan.tonic and s.plan.scale else None
                for s in self.sections]
        return segments_to_score(self.segments, markers=self.markers(), keys=keys)

    def write(self, out_dir, render: bool = False, cfg=None) -> dict:
        """piece.mid (the sections' tempo, metre and key, a marker at each section's start) and, with
        `render`, piece.wav through FluidSynth: {"midi": path, "audio": path or None}."""
        from pathlib import Path

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        score = self.score()
        midi = out / "piece.mid"
        score.dump_midi(str(midi))
        audio = None
        if render:
            from engines.config import RenderConfig
            from engines.render.fluidsynth_renderer import render_score, write_audio

            r = cfg.render if cfg is not None else RenderConfig()   # as the studio renders (api/exports.py)
            audio = write_audio(render_score(score, r.sample_rate, r.soundfont, r.gain, r.tail_seconds, r.pool_size),
                                out / "piece.wav", r.sample_rate)
        return {"midi": str(midi), "audio": None if audio is None else str(audio)}


def joined(parts: list[Segment]) -> Segment:
    """Segments of one metre played one after another -> one segment of all their bars."""
    first, offset, notes = parts[0], 0, []
    for part in parts:
        moved = part.notes.copy()
        moved["start"] += offset
        notes.append(moved)
        offset += part.length
    return replace(first, notes=clean_notes(np.concatenate(notes)), num_bars=sum(p.num_bars for p in parts))


class Arranger:
    def __init__(self, generators: dict, cfg, verifier: Verifier | None = None, candidates: int | None = None):
        self.generators = generators   # {engine name: Generator}
        self.cfg = cfg
        self.verifier = verifier
        arrange = cfg.generation.arrange
        # per window, for every engine (None: generation.arrange.candidates, by engine; 1: the raw model)
        self.candidates = candidates
        self.engine_candidates = arrange.candidates
        self.join_weight = arrange.join_weight
        self.tries = arrange.section_tries
        self.fade = arrange.fade
        self.bridge = arrange.bridge
        if verifier is not None and verifier.analyzer is not None:
            self.analyzer = verifier.analyzer
        else:
            from engines.music.analyzer import ChromaticAnalyzer

            self.analyzer = ChromaticAnalyzer()

    def _generator(self, engine: str):
        generator = self.generators.get(engine)
        if generator is None:
            raise StudioError(f"no {engine} checkpoint is installed; the plan's sections need {engine}")
        return generator

    def _fade_from(self, section: SectionPlan, mode_before: str | None) -> str | None:
        """The mode a section's opening moves from: with generation.arrange.fade, in a section longer than one
        window (a 4-bar section has no room for that: all of it is in its own mode)."""
        return mode_before if self.fade and section.bars > WINDOW_BARS else None

    def _window(self, generator, section: SectionPlan, seed: int, metre: str | None, init: Segment | None,
                keep: list[int] | None, fade_from: str | None = None, cost=None, attributes: dict | None = None):
        """One 4-bar window of `section`, drawn and checked like any generation: (the segment, its verification
        as a dict); StudioError when every candidate was a copy of a training segment. `attributes`: what it
        aims at instead of the section's own (a bridge from the bars before)."""
        request = Request(section.engine, mode=section.mode, n=1, seed=seed,
                          candidates=self._candidates(section.engine),
                          attributes=attributes or section.attributes() or None,
                          tonic=section.tonic, scale=section.scale, tempo=section.tempo, metre=metre,
                          init_midi=init, keep_bars=keep, fade_from=fade_from)
        result = draw(generator, request, self._settings(generator), self.verifier, cfg=self.cfg, cost=cost)
        if not result.segments:
            raise StudioError(f"the {section.engine} engine wrote nothing for a {section.mode} section "
                              "(every candidate was a copy of a training segment); try another seed")
        return result.segments[0], result.verifications[0].to_dict() if result.verifications else {}

    def _bridged(self, generator, section: SectionPlan, before: Segment) -> dict | None:
        """What the window that opens `section` after `before` aims at: the section's own attributes and, on
        every axis it leaves free and the engine follows, the reading of `before`'s last OVERLAP_BARS bars moved
        generation.arrange.bridge of the way toward the mode's interior (Generator.axis_target). The window
        holds the bars kept and the bars it writes, so it aims between them: the change of mode starts at the
        join and is reached over the section. None: nothing to bridge (no bridge, WHITE, an engine that
        follows no axes, silence before)."""
        if self.bridge is None or section.mode in (None, WHITE):
            return None
        target = generator.axis_target(section.mode)
        last = bars_window(before, before.num_bars - OVERLAP_BARS, OVERLAP_BARS)
        if not target or not len(last.notes):
            return None
        heard = self.analyzer.analyze(last).axes
        asked = section.attributes()
        for axis, value in target.items():
            if axis not in asked:
                asked[axis] = round(heard[axis] + self.bridge * (value - heard[axis]), 4)
        return asked

    def _candidates(self, engine: str) -> int | None:
        """Candidates per window for `engine`: the arranger's own, else generation.arrange.candidates.<engine>,
        else None (the engine's default)."""
        return self.candidates if self.candidates is not None else getattr(self.engine_candidates, engine, None)

    def _settings(self, generator):
        """The engine's sampling settings, with the diffusion steps and VAE follow arranging uses
        (generation.arrange)."""
        arrange = self.cfg.generation.arrange
        fields = type(generator).Settings.__dataclass_fields__
        overrides = {name: value for name, value in (("steps", arrange.diffusion_steps),
                                                     ("follow", arrange.vae_follow))
                     if value is not None and name in fields}
        return generator.settings_for(self.cfg, overrides or None)

    def _join_cost(self, before: Segment, new_from: int):
        """What ranks the candidates of a window that opens a section (or is rewritten to join one) besides the
        judge: join_weight times how far their new bars move from `before`'s last bars (None: weight 0)."""
        if not self.join_weight:
            return None
        from engines.arrange.joins import join_cost

        def cost(candidates: list[Segment]) -> list[float]:
            return [self.join_weight * join_cost(before, bars_window(c, new_from, OVERLAP_BARS), self.analyzer)
                    for c in candidates]
        return cost

    def arrange(self, plan: PiecePlan, seed: int = 0, on_section=None, should_stop=None) -> ArrangedPiece:
        """Every section of `plan` in order; `on_section(index, result)` is called as each is done. When
        `should_stop()` turns true the piece ends after the section being written (its plan keeps them all)."""
        started = time.perf_counter()
        results: list[SectionResult] = []
        for index, section in enumerate(plan.sections):
            if results and should_stop is not None and should_stop():
                break
            results.append(self.section(section, results[-1] if results else None, seed=seed + 1000 * index))
            if on_section is not None:
                on_section(index, results[-1])
        return ArrangedPiece(plan=plan, sections=results, seconds=round(time.perf_counter() - started, 3))

    def section(self, section: SectionPlan, previous: SectionResult | None, seed: int) -> SectionResult:
        """One section, following `previous` (the section before, or None) where the metres allow, checked as
        a whole: while the analyzer (which defines the modes) hears it in another mode than asked, it is
        written again from another seed (generation.arrange.section_tries in all). The first heard as asked is
        kept, else the one the judge rates best over its windows. Its report keeps what the analyzer heard in
        the first one written, the raw figure beside the checked one."""
        started = time.perf_counter()
        tried: list[SectionResult] = []
        for attempt in range(self.tries):
            tried.append(self._written(section, previous, seed + 100 * attempt))
            if section.mode == WHITE or tried[-1].heard == section.mode:
                best = tried[-1]
                break
        else:   # none heard as asked
            best = max(tried, key=lambda written: self._judge_score(written.segment, section.mode))
        return replace(best, seconds=round(time.perf_counter() - started, 3), tries=len(tried),
                       first_heard=tried[0].heard, verifications=[v for w in tried for v in w.verifications])

    def _judge_score(self, segment: Segment, mode: str) -> float:
        """The judge's mean log-probability of `mode` over the section's 4-bar windows (0 without a judge; -inf
        for a section without notes)."""
        judge = getattr(self.verifier, "judge", None)
        if judge is None:
            return 0.0
        if not len(segment.notes):
            return -math.inf
        windows = [bars_window(segment, start, min(WINDOW_BARS, segment.num_bars - start))
                   for start in range(0, segment.num_bars, WINDOW_BARS)]
        probabilities, _, _ = judge.run(windows)
        return float(np.log(np.maximum(probabilities[:, MODES.index(mode)], 1e-12)).mean())

    def _written(self, section: SectionPlan, previous: SectionResult | None, seed: int) -> SectionResult:
        """One section written once, window by window, after `previous` (the section before, or None)."""
        started = time.perf_counter()
        generator = self._generator(section.engine)
        before = None if previous is None else previous.segment
        metre = section.metre
        if before is not None and metre is None:
            metre = f"{before.ts_num}/{before.ts_den}"
        follows = before if before is not None and f"{before.ts_num}/{before.ts_den}" == metre else None
        keeps = generator.init_verb in ("inpainted", "continued")
        written: list[Segment] = []      # the section's bars so far, window by window
        verifications = []
        bars = 0
        window = 0
        tail = None if follows is None else self._tail(follows, keeps)
        while bars < section.bars:
            new_from = OVERLAP_BARS if tail is not None and keeps else 0
            opening = window == 0 and follows is not None   # ranked by its join too; it may fade from the mode before
            out, verification = self._window(
                generator, section, seed + window, metre, tail, list(range(1, OVERLAP_BARS + 1)) if new_from else None,
                fade_from=self._fade_from(section, previous.plan.mode) if opening else None,
                cost=self._join_cost(follows, new_from) if opening else None,
                attributes=self._bridged(generator, section, follows) if opening else None)
            take = min(WINDOW_BARS - new_from, section.bars - bars)
            written.append(bars_window(out, new_from, take))
            verifications.append(verification)
            bars += take
            metre = f"{out.ts_num}/{out.ts_den}"
            tail = self._tail(out, keeps)
            window += 1
        segment = joined(written)
        if section.tempo is not None:
            segment = replace(segment, tempo_qpm=float(section.tempo))
        heard = self._heard(segment)
        return SectionResult(plan=section, segment=segment, heard=heard, windows=window,
                             seconds=round(time.perf_counter() - started, 3), verifications=verifications)

    def regenerate(self, piece: ArrangedPiece, index: int, seed: int,
                   section: SectionPlan | None = None) -> ArrangedPiece:
        """`piece` with section `index` (0-based) written anew from `seed` (to `section` when given: the plan
        of it edited), after the section before it, and the first bars of the section after it rewritten to
        follow the new ending; the other sections stay."""
        if not 0 <= index < len(piece.sections):
            raise StudioError(f"the piece has {len(piece.sections)} sections; there is no section {index + 1}")
        started = time.perf_counter()
        plan = piece.plan
        if section is not None:
            plan = replace(plan, sections=plan.sections[:index] + (section,) + plan.sections[index + 1:])
        sections = list(piece.sections)
        sections[index] = self.section(plan.sections[index], sections[index - 1] if index else None, seed)
        if index + 1 < len(sections):
            sections[index + 1] = self.rejoin(sections[index + 1], sections[index], seed + 500)
        return ArrangedPiece(plan=plan, sections=sections, seconds=round(time.perf_counter() - started, 3))

    def rejoin(self, following: SectionResult, previous: SectionResult, seed: int) -> SectionResult:
        """`following` with its first OVERLAP_BARS bars written anew after `previous` (the section before it, just
        rewritten); a section in another metre than `previous` starts afresh and is returned as it is."""
        started = time.perf_counter()
        segment, before = following.segment, previous.segment
        if (segment.ts_num, segment.ts_den) != (before.ts_num, before.ts_den):
            return following
        section = following.plan
        generator = self._generator(section.engine)
        rest = bars_window(segment, OVERLAP_BARS, segment.num_bars - OVERLAP_BARS)
        verb = generator.init_verb
        if verb == "inpainted":
            # [the new last bar | the bars to write | the section's own next bar]: both seams are inpainted
            window = joined([bars_window(before, before.num_bars - 1, 1), bars_window(segment, 0, OVERLAP_BARS),
                             bars_window(rest, 0, 1)])
            keep, new_from = [1, WINDOW_BARS], 1
        elif verb == "continued":
            window, keep, new_from = self._tail(before, True), list(range(1, OVERLAP_BARS + 1)), OVERLAP_BARS
        else:
            window, keep, new_from = self._tail(before, False), None, 0
        out, verification = self._window(generator, section, seed, f"{segment.ts_num}/{segment.ts_den}", window, keep,
                                         fade_from=self._fade_from(section, previous.plan.mode),
                                         cost=self._join_cost(before, new_from),
                                         attributes=self._bridged(generator, section, before))
        opening = replace(bars_window(out, new_from, OVERLAP_BARS), tempo_qpm=segment.tempo_qpm)
        rejoined = replace(joined([opening, rest]), tempo_qpm=segment.tempo_qpm)
        return replace(following, segment=rejoined, heard=self._heard(rejoined), windows=following.windows + 1,
                       seconds=round(following.seconds + time.perf_counter() - started, 3),
                       verifications=following.verifications + [verification])

    @staticmethod
    def _tail(segment: Segment, keeps: bool) -> Segment:
        """What the next window starts from: the last OVERLAP_BARS bars, which it keeps; for an engine that
        cannot keep bars (the VAE), the last whole window, which it varies."""
        bars = OVERLAP_BARS if keeps else WINDOW_BARS
        return bars_window(segment, segment.num_bars - bars, bars)

    def _heard(self, segment: Segment) -> str | None:
        return self.analyzer.analyze(segment).mode if len(segment.notes) else None
