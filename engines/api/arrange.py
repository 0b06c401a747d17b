"""Arranging for the Arrange tab: check a plan, write the whole piece with progress per section and Stop,
regenerate one section while the others stay, and hand back the piece as a roll, audio and files. A mixin of
engines.api.StudioEngine; the arranging itself is engines/arrange/.

    for update in engine.arrange_stream(plan, seed=1):      # plan: JSON-ready values, as a plan file holds
        ...                                                 # ("section", index, total, section view) as each ends
    view = update[1]                                        # ("done", ArrangementView)
    view = engine.arrange_regenerate(view, 1, plan)          # section 2 anew, to the plan's (edited) section 2
"""
from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from engines.api.worker import streamed
from engines.errors import StudioError
from engines.music.analyzer import MODE_COLORS
from engines.music.notes import TICKS_PER_QUARTER
from engines.views import ArrangementView, NoteView

PLANS_DIR = Path(__file__).resolve().parents[2] / "assets" / "plans"
CORPUS_JOIN_PAIRS = 400   # corpus joins measured for the figure set beside a piece's (engines/arrange/joins.py)


class ArrangeAPI:
    def example_plans(self) -> dict[str, dict]:
        """The plans shipped in assets/plans: {file stem: plan values}."""
        plans = {}
        for path in sorted(PLANS_DIR.glob("*.json")):
            plans[path.stem] = json.loads(path.read_text(encoding="utf-8"))
        return plans

    def checked_plan(self, values) -> dict:
        """Plan values -> the same plan as a plan file writes it (engines/arrange/plan.py); StudioError naming
        the first thing that is wrong."""
        from engines.arrange.plan import piece_plan, plan_dict

        return plan_dict(piece_plan(values))

    def read_plan(self, path: str) -> dict:
        """A plan file a musician uploaded -> its checked values; StudioError saying what is wrong with it."""
        from engines.arrange.plan import load_plan, plan_dict

        return plan_dict(load_plan(path))

    def plan_file(self, values) -> str:
        """The plan, checked, written as JSON to download (and load again)."""
        return self._written_plan(self.checked_plan(values))

    def _written_plan(self, checked: dict) -> str:
        """Checked plan values (plan_dict's) as plan.json, written once."""
        text = json.dumps(checked, indent=1)
        digest = hashlib.sha1(text.encode()).hexdigest()[:12]
        return str(self._file(f"plan-{digest}", ".json", lambda p: p.write_text(text), "plan"))

    def corpus_joins(self) -> dict:
        """The corpus's own jumps at the boundaries between consecutive segments of a piece (medians): the
        figure a piece's joins are set beside. Measured once per process."""
        from engines.arrange.joins import corpus_join_jumps

        with self._corpus_joins_lock:
            if self._corpus_joins is None:
                self._corpus_joins = corpus_join_jumps(self.cache, self._analyzer, pairs=CORPUS_JOIN_PAIRS)
            return self._corpus_joins

    def _arranger(self, candidates: int | None):
        from engines.arrange.arranger import Arranger

        if candidates is not None and not 1 <= int(candidates) <= 32:
            raise StudioError(f"candidates per window must lie in 1..32, got {candidates}")
        return Arranger(self.models, self.cfg, self.verifier,
                        candidates=None if candidates is None else int(candidates))

    def arrange_stream(self, values, seed: int = 0, candidates: int | None = None, run_id: str | None = None):
        """Write the piece `values` plans: yields ("section", index, total, section view) as each section is
        done, then ("done", ArrangementView). request_stop(run_id) ends it after the section being written
        (the view then holds the sections written, and says so)."""
        from engines.arrange.plan import piece_plan

        plan = piece_plan(values)
        missing = sorted({s.engine for s in plan.sections} - set(self.engines_available()))
        if missing:
            raise StudioError(f"no {' or '.join(missing)} checkpoint is installed; pick another engine for "
                              f"{'that section' if len(missing) == 1 else 'those sections'}")
        arranger = self._arranger(candidates)
        stop = threading.Event()
        if run_id:   # a newer piece of the same user stops the one still being written
            earlier = self._stops.get(run_id)
            self._stops[run_id] = stop
            if earlier is not None:
                earlier.set()

        def work(put):
            return arranger.arrange(plan, seed=int(seed), should_stop=stop.is_set,
                                    on_section=lambda i, s: put(("section", i, len(plan.sections),
                                                                 self._section_view(i, s))))

        try:
            piece = yield from streamed(work, "arrange", "arranging failed")
        finally:
            stop.set()
            if run_id and self._stops.get(run_id) is stop:
                del self._stops[run_id]
        yield ("done", self._arrangement_view(piece, int(seed)))

    def arrange_regenerate(self, arrangement: ArrangementView, index: int, values=None,
                           candidates: int | None = None) -> ArrangementView:
        """`arrangement` with section `index` (0-based) written anew (to section `index` of `values`, the plan
        as it stands now, when given), the first bars of the section after it rewritten to follow it, and
        every other section as it was. StudioError when the rest of the plan no longer matches the piece."""
        from engines.arrange.plan import piece_plan

        piece = getattr(arrangement, "piece", None)
        if piece is None:
            raise StudioError("generate the piece first: a section is regenerated within a written piece")
        if not 0 <= index < len(piece.sections):
            raise StudioError(f"the piece has {len(piece.sections)} sections written; there is no section {index + 1}")
        section = None
        if values is not None:
            plan = piece_plan(values)
            if len(plan.sections) != len(piece.plan.sections):
                others = [-1]
            else:
                others = [k for k in range(len(piece.sections))
                          if k != index and plan.sections[k] != piece.plan.sections[k]]
            if others:
                changed = "the number of sections" if others[0] < 0 else f"section {others[0] + 1}"
                raise StudioError(f"{changed} changed since the piece was written: generate the whole piece again "
                                  f"(regenerating one section keeps every other as written)")
            section = plan.sections[index]
        seed = arrangement.seed + 7919 * (arrangement.regenerations + 1) + index
        piece = self._arranger(candidates).regenerate(piece, index, seed, section)
        return self._arrangement_view(piece, arrangement.seed, arrangement.regenerations + 1)

    @staticmethod
    def _section_view(index: int, section) -> dict:
        shown = {k: v for k, v in section.summary().items() if k != "verifications"}
        return {"number": index + 1, **shown, "key": section.plan.key}

    def _arrangement_view(self, piece, seed: int, regenerations: int = 0) -> ArrangementView:
        from engines.arrange.plan import plan_dict

        report = piece.report(self._analyzer)
        sections = [self._section_view(i, s) for i, s in enumerate(piece.sections)]
        digest = hashlib.sha1(b"".join(s.notes.tobytes() + repr((s.ts_num, s.ts_den, s.tempo_qpm, s.num_bars)).encode()
                                       for s in piece.segments) + repr(piece.markers()).encode()).hexdigest()[:16]
        score = piece.score()
        midi = self._file(f"arrangement-{digest}", ".mid", lambda p: score.dump_midi(str(p)), "piece")
        wav = None
        if any(len(s.notes) for s in piece.segments):
            wav = self._file(f"arrangement-{digest}-{self._render_key}", ".wav",
                             lambda p: self._render_score(score, p), "piece")
        plan = plan_dict(piece.plan)
        saved = {"seed": seed, "regenerations": regenerations, **report, "plan": plan}
        report_path = self._file(f"arrangement-{digest}-report", ".json",
                                 lambda p: p.write_text(json.dumps(saved, indent=1)), "report")
        stopped = len(piece.sections) < len(piece.plan.sections)
        return ArrangementView(sections=sections, joins=report["joins"], notes=self._piece_notes(piece),
                               midi_path=str(midi), wav_path=None if wav is None else str(wav),
                               report_path=str(report_path), plan_path=self._written_plan(plan),
                               seconds=piece.seconds, seed=seed, regenerations=regenerations,
                               corpus_joins=self.corpus_joins(), stopped=stopped, piece=piece)

    @staticmethod
    def _piece_notes(piece) -> NoteView:
        """The whole piece for one roll: each section a region in its asked mode's colour, bar lines of each
        section's metre, at the first section's tempo (what the playhead follows)."""
        q = float(TICKS_PER_QUARTER)
        start, duration, pitch, velocity, bar_lines, regions = [], [], [], [], [], []
        offset = 0
        for number, section in enumerate(piece.sections, start=1):
            segment = section.segment
            notes = segment.notes
            start += ((notes["start"] + offset) / q).tolist()
            duration += (notes["duration"] / q).tolist()
            pitch += notes["pitch"].astype(int).tolist()
            velocity += notes["velocity"].astype(int).tolist()
            bar_lines += [(offset + k * segment.bar_length) / q for k in range(segment.num_bars)]
            mode = section.plan.mode
            regions.append({"start": offset / q, "end": (offset + segment.length) / q, "mode": mode,
                            "color": MODE_COLORS[mode],
                            "label": f"section {number}: {mode} by {section.plan.engine}, heard {section.heard}"})
            offset += segment.length
        bar_lines.append(offset / q)
        qpm = piece.sections[0].segment.tempo_qpm if piece.sections else None
        return NoteView(start=start, duration=duration, pitch=pitch, velocity=velocity, bar_lines=bar_lines,
                        regions=regions, qpm=qpm)
