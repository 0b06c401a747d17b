"""Generation jobs for the studio: one Request through the engine's Generator and verified generation
(engines/generation/), sampled in a worker thread with a live view, stoppable, and turned into views (roll,
analysis, MIDI, WAV, codec render, how each result was chosen). A mixin of engines.api.StudioEngine.
"""
from __future__ import annotations

import queue
import threading
import time

from engines.generation import GENERATORS, Request
from engines.memory import release_freed_memory
from engines.music.notes import Segment
from engines.settings import settings_schema
from engines.views import GeneratedView, GenerationProgress, GenerationResult


def written_bars(segment) -> int:
    """Bars of a segment up to the bar of its last note (0: no notes): what a stopped run had written."""
    if not len(segment.notes):
        return 0
    return int(segment.notes["start"].max() // segment.bar_length) + 1


class GenerationAPI:
    def engines_available(self) -> list[str]:
        return self.models.available()

    def engine_label(self, engine: str) -> str:
        return GENERATORS[engine].label

    def engine_short_name(self, engine: str) -> str:
        """A short name for tables: VAE, DIFFUSION, GPT."""
        return GENERATORS[engine].short_name

    def engine_settings(self, engine: str) -> list[dict]:
        """The controls of an engine's settings as plain dicts (engines/settings.settings_schema), with the
        config's values as defaults, for the studio to build its inputs from."""
        return settings_schema(GENERATORS[engine].settings_for(self.cfg))

    def engine_mode_settings(self, engine: str, mode: str) -> dict:
        """The settings the config leaves unset that the engine fills in for `mode` (the GPT's temperature and
        prompt guidance, as its checkpoint calibrated them), by name: what the studio shows for that mode."""
        from dataclasses import fields

        generator = self.models.get(engine)
        settings = generator.settings_for(self.cfg)
        filled = generator.for_mode(settings, (mode or "WHITE").upper())
        return {f.name: getattr(filled, f.name) for f in fields(settings)
                if getattr(settings, f.name) is None and getattr(filled, f.name) is not None}

    def engine_candidates(self, engine: str) -> int:
        """Candidates per result the engine draws unless asked otherwise (generation.verify or its settings)."""
        verify = self.cfg.generation.verify.candidates
        return verify if verify is not None else GENERATORS[engine].settings_for(self.cfg).candidates

    def engine_is_live(self, engine: str) -> bool:
        return GENERATORS[engine].live

    def engine_live_label(self, engine: str) -> str:
        """The live view's progress line, with {step} and {total} to fill in."""
        return GENERATORS[engine].live_label

    def engine_init_verb(self, engine: str) -> str:
        """What the engine does with a segment to start from: "inpainted", "continued", or "" (nothing)."""
        return GENERATORS[engine].init_verb

    @property
    def verifier(self):
        """The judge and copy index results are checked with (loaded once, shared by every user)."""
        with self._verifier_lock:
            if self._verifier is None:
                from engines.generation.verify import Verifier

                v = self.cfg.generation.verify
                self._verifier = Verifier(self.models.judge(), self._copy_index, self._analyzer, v.copy_threshold,
                                          v.attribute_weight, v.candidates)
            return self._verifier

    def _copy_index(self):
        from engines.generation.copies import CopyIndex

        return CopyIndex.build(self.cache, threshold=self.cfg.generation.verify.copy_threshold)

    def generate(self, request: Request, codec: bool = True) -> list[GeneratedView]:
        """`request.n` checked results, analysed, exported and rendered. Raises StudioError on a bad request.
        `codec` False: no render through the audio codec (the API, which does not return it, asks for none)."""
        result = None
        for result in self.generate_stream(request, every=0, codec=codec):
            pass
        return result.views

    def generate_stream(self, request: Request, run_id: str | None = None, every: float = 0.2, codec: bool = True):
        """Like `generate`, but a generator: for engines with a live view it first yields a GenerationProgress
        at most every `every` seconds (0 = none) while sampling runs in a worker thread, and finally a
        GenerationResult. `request_stop(run_id)` (or closing the generator) ends sampling early; the results
        are then decoded from the current estimate (the tokens written so far). Sampling goes through the
        engine's Batcher: requests of other users that arrive together share its batches."""
        from engines.generation.verify import asked_mode, draw

        generator = self.models.get(request.engine)
        batcher = self.models.batcher(request.engine)
        settings = generator.settings_for(self.cfg, request.settings)
        mode = asked_mode(generator, request, settings)   # bad settings or modes fail here, before a thread
        if request.init_midi is not None and not isinstance(request.init_midi, Segment):
            from dataclasses import replace

            request = replace(request, init_midi=request.init_segment(self.cfg))  # the file is read once, here
        stop, updates = threading.Event(), queue.Queue()
        if run_id:   # a newer request of the same user replaces the one still running: it stops, and says why
            earlier = self._stops.get(run_id)
            self._stops[run_id] = stop
            if earlier is not None:
                earlier.set()
        shown = {"at": time.monotonic()}   # the first view after `every` seconds: a shorter run shows none

        def on_step(i: int, total: int, preview) -> bool:  # in the worker thread
            now = time.monotonic()
            # no extra view at the last step: the results follow at once, and a view sent then only delays them
            if every and (now - shown["at"] >= every or stop.is_set()):
                shown["at"] = now
                updates.put(("step", i + 1, total, preview()))
            return stop.is_set()

        gone = threading.Event()   # the caller stopped listening: nothing more is worth making

        def work():
            # The results are analysed and rendered here too, not in the caller's thread: every thread that runs
            # torch (the audio codec's preview) keeps its own OpenMP team, and a server's worker threads that
            # kept one made every later request slower (engines/__init__.py); this one's team ends with it.
            try:
                outcome = draw(generator, request, settings, self.verifier, on_step, self.cfg, run=batcher.run)
                stopped = stop.is_set()
                replaced = bool(run_id) and stopped and self._stops.get(run_id) is not stop
                # the newer run shows its own results: this one's are not analysed or rendered
                views = None if replaced or gone.is_set() else self._views(request, mode, outcome, stopped, codec)
                updates.put(("done", outcome, stopped, replaced, views))
            except Exception as exc:  # handed to the caller's thread
                updates.put(("error", exc))

        threading.Thread(target=work, daemon=True, name=f"{request.engine}-sampling").start()
        try:
            while True:
                kind, *payload = updates.get()
                if kind == "step":
                    step, total, preview = payload
                    yield GenerationProgress(step=step, total=total, sounding=preview.sounding,
                                             bar_steps=preview.bar_steps)
                elif kind == "error":
                    raise payload[0]
                else:
                    outcome, stopped, replaced, views = payload
                    if replaced:
                        yield GenerationResult(views=[], summary="Replaced by a newer request.", asked_mode=mode,
                                               candidates=outcome.candidates, stopped=True, replaced=True)
                        return
                    yield GenerationResult(
                        views=views, summary=outcome.summary(), asked_mode=mode,
                        candidates=outcome.candidates, stopped=stopped,
                        verification={"drawn": outcome.drawn, "heard": outcome.heard,
                                      "rejected_copies": outcome.rejected_copies, "judged": outcome.judged})
                    return
        finally:
            gone.set()
            stop.set()
            if run_id and self._stops.get(run_id) is stop:  # a newer run of the same id keeps its own flag
                del self._stops[run_id]
            release_freed_memory()   # the request's buffers, freed, go back to the system (engines/memory.py)

    def request_stop(self, run_id: str) -> bool:
        """Ask the generation running under `run_id` to stop after its current step; False if none runs."""
        stop = self._stops.get(run_id)
        if stop is not None:
            stop.set()
        return stop is not None

    def _views(self, request: Request, mode: str, outcome, stopped: bool = False,
               codec: bool = True) -> list[GeneratedView]:
        views = []
        generator = GENERATORS[request.engine]
        kind = generator.init_verb if request.init_midi is not None else f"seed {request.seed}"
        for i, (segment, check) in enumerate(zip(outcome.segments, outcome.verifications)):
            title = f"{request.engine.upper()} · {mode} · {kind} · #{i + 1}" + (" · stopped" if stopped else "")
            name = f"{request.engine}-{mode}-{request.seed}-{i}"
            download = f"{mode}-{generator.short_name.lower()}-" + (
                f"{generator.init_verb}-seed{request.seed}-{i + 1}" if request.init_midi is not None
                else f"seed{request.seed}-{i + 1}")
            view = GeneratedView(title=title, requested_mode=mode, verification=check.to_dict(),
                                 asked=dict(request.attributes) if request.attributes else None,
                                 stopped=stopped, bars=int(segment.num_bars),
                                 bars_written=written_bars(segment) if stopped else None,
                                 **self.segment_result(segment, name, download))
            if codec and generator.codec_preview:
                view.codec_wav_path, view.audio_tokens = self.codec_render(segment, name)
                own = self.model_audio_render(segment, name, request.engine, request.seed + i)
                if own is not None:
                    view.model_audio_wav_path, view.model_audio_tokens, view.model_audio_seconds = own
            views.append(view)
        return views
