"""The engine API the studio (and scripts) call: browse the corpus, view and hear a segment, analyse an upload.

Everything returned is plain data (dicts, lists, paths), so `studio/` never touches torch or numpy internals.
One StudioEngine is shared by all users of the app; it holds no per-user state. Renders and MIDI exports
are written once, to a path derived from what they hold, and atomically, so concurrent users can share them.
"""
from __future__ import annotations

import hashlib
import math
import os
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.analysis import analyze_segments, midi_file_segments
from engines.config import Config
from engines.data.cache import SPLITS, SegmentCache
from engines.data.midi_io import segment_to_score, segments_to_score, write_segment_midi
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.music.analyzer import AXES, MODE_COLORS, MODES
from engines.music.features import key_name
from engines.music.notes import TICKS_PER_QUARTER, Segment, bar_ticks, steps_per_bar
from engines.registry import ModelRegistry

RANGE_FILTERS = ("rebracketing", "temporal_complexity") + AXES


@dataclass
class BrowseQuery:
    """What the corpus browser filters on. Empty lists mean 'any'; ranges are inclusive."""

    modes: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    split: str = "all"
    ranges: dict = field(default_factory=dict)   # name in RANGE_FILTERS -> (low, high)
    text: str = ""                               # substring of the piece id
    limit: int = 200


@dataclass
class NoteView:
    """Notes for drawing, in quarter notes: parallel lists."""

    start: list[float]
    duration: list[float]
    pitch: list[int]
    velocity: list[int]
    bar_lines: list[float]          # quarter-note positions of bar starts
    regions: list[dict]             # [{"start", "end", "mode", "color", "label"}] coloured spans


@dataclass
class SegmentView:
    index: int
    title: str
    mode: str
    color: str
    analysis: dict
    notes: NoteView
    midi_path: str
    facts: dict                     # piece, collection, bars, time signature, tempo, key, split


@dataclass
class GenerateParams:
    """One generation request from the studio or a script."""

    engine: str = "vae"
    mode: str = "WHITE"
    n: int = 4
    temperature: float = 1.0
    seed: int = 0
    attributes: dict | None = None   # {"rebracketing": x, "temporal_complexity": y} or None
    tonic: str | None = None         # the key's tonic, e.g. "G" (None = C, where the engines write)
    # diffusion only
    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 4.0
    eta: float = 0.0
    classifier_scale: float = 0.0    # classifier guidance (0 = off) toward `target`
    target: str = "mode"             # "mode", "rebracketing=high", "mode,rebracketing=low", ...
    classifier_space: str = "x0"     # where the classifier's gradient is taken: "x0" or "x_t"
    init_midi: str | None = None     # inpainting: a MIDI file (its first segment) ...
    keep_bars: list[int] | None = None  # ... and the bars of it to keep (1-based); the others are regenerated
    # autoregressive only (temperature and seed above apply too)
    prompt: str | None = None        # None: the mode's default prompt
    top_k: int = 0                   # 0 = off
    top_p: float = 1.0               # 1 = off
    beam_width: int = 1              # > 1: beam search (one result)
    prompt_guidance: float = 3.0     # classifier-free guidance toward the prompt (1 = off)
    max_bars: int = 4
    continue_bars: int = 0           # > 0: continue the first this many bars of `init_midi`


@dataclass
class GenerationProgress:
    """One step of a running generation, for the live view: a denoising step (diffusion) or a token
    written (autoregressive: the roll grows as the MIDI span does)."""

    step: int                        # steps (tokens) done, 1..total
    total: int
    sounding: np.ndarray             # (n, steps, pitches) float32 in [0, 1]: the current x0's sustain channel,
                                     # or the notes written so far
    bar_steps: list[int]             # roll steps in one bar of each variation (its metre), for bar lines


@dataclass
class GeneratedView:
    title: str
    requested_mode: str
    analysis: dict | None            # None when the model decoded an empty segment
    color: str
    notes: NoteView
    midi_path: str
    wav_path: str | None
    codec_wav_path: str | None = None  # the FluidSynth render through the audio codec (autoregressive results)
    audio_tokens: int = 0              # codec tokens that render became


@dataclass
class UploadView:
    name: str
    segments: list[dict]            # one analysis dict per segment (as `analyze --json`)
    notes: NoteView
    wav_path: str
    midi_path: str


def note_view(notes: np.ndarray, bar_length: int, num_bars: int, regions: list[dict] | None = None) -> NoteView:
    q = float(TICKS_PER_QUARTER)
    return NoteView(start=(notes["start"] / q).tolist(), duration=(notes["duration"] / q).tolist(),
                    pitch=notes["pitch"].astype(int).tolist(), velocity=notes["velocity"].astype(int).tolist(),
                    bar_lines=[i * bar_length / q for i in range(num_bars + 1)], regions=regions or [])


class StudioEngine:
    def __init__(self, cfg: Config, cache: SegmentCache | None = None, out_dir: str | Path | None = None):
        self.cfg = cfg
        self.cache = cache if cache is not None else ensure_corpus_cache(cfg)
        # Renders and exports of this process only: another studio or user never shares (or clobbers) them.
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="chromatic-studio-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._collection_rows = self.cache.collection_of_rows()
        self._search_keys = np.char.lower(np.array([p["id"] for p in self.cache.pieces]))
        render = cfg.render
        self.models = ModelRegistry(cfg.model.checkpoints_dir)
        self._stops: dict[str, threading.Event] = {}  # run id -> stop flag of a running generation
        self._render_key = hashlib.sha1(repr((render.sample_rate, render.soundfont, render.gain,
                                              render.tail_seconds)).encode()).hexdigest()[:8]
        from engines.explorer import LatentExplorer

        self.explorer = LatentExplorer(self)
        self._listening = None
        self._listening_lock = threading.Lock()

    @property
    def listening(self):
        """The A/B listening sessions (engines/sessions/listening.py), opened on first use."""
        with self._listening_lock:
            if self._listening is None:
                from engines.sessions.listening import ListeningService
                from engines.sessions.store import SessionStore

                s = self.cfg.sessions
                self._listening = ListeningService(self, SessionStore(s.database), s.stimuli_dir)
            return self._listening

    def warm_up(self) -> None:
        """Load the VAE and compile the latent map's inverse transform, so the first click is fast. Meant for a
        background thread at start-up; a missing checkpoint or map is not an error here."""
        try:
            self.explorer.warm()
        except StudioError:
            pass

    # ---- corpus browser -------------------------------------------------------------------------------
    def collections(self) -> list[str]:
        return list(self.cache.collections)

    def browse(self, query: BrowseQuery) -> tuple[list[dict], int]:
        """Rows matching the query (at most query.limit, in corpus order) and how many matched in all."""
        matches = self.match_indices(query)
        return [self.row(int(i)) for i in matches[:query.limit]], int(len(matches))

    def random_match(self, query: BrowseQuery, seed: int | None = None) -> int:
        """One segment drawn uniformly from everything the query matches (not only the page shown)."""
        matches = self.match_indices(query)
        if len(matches) == 0:
            raise StudioError("no segment matches these filters; widen them and try again")
        return int(np.random.default_rng(seed).choice(matches))

    def match_indices(self, query: BrowseQuery) -> np.ndarray:
        seg = self.cache.segments
        keep = np.ones(len(seg), bool)
        if query.modes:
            unknown = [m for m in query.modes if m not in MODES]
            if unknown:
                raise StudioError(f"unknown mode '{unknown[0]}'; choose from {', '.join(MODES)}")
            keep &= np.isin(seg["mode"], [MODES.index(m) for m in query.modes])
        if query.collections:
            wanted = [self.cache.collections.index(c) for c in query.collections if c in self.cache.collections]
            keep &= np.isin(self._collection_rows, wanted)
        if query.split != "all":
            if query.split not in SPLITS:
                raise StudioError(f"unknown split '{query.split}'; choose all or one of {', '.join(SPLITS)}")
            keep &= seg["split"] == SPLITS.index(query.split)
        for name, (low, high) in query.ranges.items():
            if name not in RANGE_FILTERS:
                raise StudioError(f"cannot filter on '{name}'; choose from {', '.join(RANGE_FILTERS)}")
            values = seg[name] if name in ("rebracketing", "temporal_complexity") else seg["axes"][:, AXES.index(name)]
            keep &= (values >= low) & (values <= high)
        if query.text.strip():
            piece_match = np.char.find(self._search_keys, query.text.strip().lower()) >= 0
            keep &= piece_match[seg["piece"]]
        return np.nonzero(keep)[0]

    def row(self, index: int) -> dict:
        r = self.cache.segments[index]
        piece = self.cache.pieces[int(r["piece"])]
        return {"index": index, "piece": piece["id"], "collection": self.cache.collections[piece["collection"]],
                "bars": f"{int(r['bar_start']) + 1}-{int(r['bar_start']) + int(r['num_bars'])}",
                "time_signature": f"{r['ts_num']}/{r['ts_den']}", "mode": MODES[r["mode"]],
                "key": _key_of(r), "rebracketing": round(float(r["rebracketing"]), 2),
                "temporal_complexity": round(float(r["temporal_complexity"]), 2),
                **{axis: round(float(v), 2) for axis, v in zip(AXES, r["axes"])}}

    def stored_analysis(self, index: int) -> dict:
        """The cache's analysis of a segment (manifest labels included), in the `analyze --json` shape."""
        r = self.cache.segments[index]
        return {"bars": [int(r["bar_start"]) + 1, int(r["bar_start"]) + int(r["num_bars"])],
                "mode": MODES[r["mode"]], "scores": {m: round(float(s), 4) for m, s in zip(MODES, r["scores"])},
                "axes": {a: round(float(v), 4) for a, v in zip(AXES, r["axes"])},
                "rebracketing": round(float(r["rebracketing"]), 4),
                "temporal_complexity": round(float(r["temporal_complexity"]), 4),
                "key": _key_of(r), "label_source": "manifest" if r["label_source"] else "analyzer"}

    def segment_view(self, index: int) -> SegmentView:
        segment = self.cache.segment(int(index))
        analysis = self.stored_analysis(int(index))
        mode = analysis["mode"]
        region = [{"start": 0.0, "end": segment.length / TICKS_PER_QUARTER, "mode": mode, "color": MODE_COLORS[mode],
                   "label": mode}]
        midi_path = self._file(f"segment-{index}", ".mid", lambda p: write_segment_midi(segment, p))
        facts = {"piece": segment.piece_id, "collection": segment.collection,
                 "bars": f"{analysis['bars'][0]}-{analysis['bars'][1]}",
                 "time_signature": f"{segment.ts_num}/{segment.ts_den}", "tempo_qpm": round(segment.tempo_qpm, 1),
                 "key": analysis["key"], "split": segment.meta["split"], "notes": int(len(segment.notes))}
        if segment.meta["title"] != segment.piece_id:
            facts["title"] = segment.meta["title"]
        return SegmentView(index=int(index), title=f"{segment.piece_id}, bars {facts['bars']}", mode=mode,
                           color=MODE_COLORS[mode], analysis=analysis,
                           notes=note_view(segment.notes, segment.bar_length, segment.num_bars, region),
                           midi_path=str(midi_path), facts=facts)

    def render_segment(self, index: int) -> str:
        """WAV of one corpus segment (rendered once, then served from disk)."""
        segment = self.cache.segment(int(index))
        return str(self._file(f"segment-{index}-{self._render_key}", ".wav",
                              lambda p: self._render_score(segment_to_score(segment), p)))

    def corpus_summary(self) -> dict:
        """`stats --json` of the corpus the studio serves."""
        from engines.data.prepare import corpus_stats

        return corpus_stats(self.cache)

    def axis_points(self, x_axis: str, y_axis: str, n: int = 4000, seed: int = 0) -> dict:
        """A fixed random sample of segments placed by two analyzer axes: {"x", "y", "mode", "index"}."""
        for name in (x_axis, y_axis):
            if name not in RANGE_FILTERS:
                raise StudioError(f"unknown axis '{name}'; choose from {', '.join(RANGE_FILTERS)}")
        seg = self.cache.segments
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(seg), size=min(n, len(seg)), replace=False))

        def values(name):
            return seg[name][pick] if name not in AXES else seg["axes"][pick, AXES.index(name)]

        return {"x": values(x_axis).tolist(), "y": values(y_axis).tolist(),
                "mode": [MODES[m] for m in seg["mode"][pick]], "index": pick.tolist()}

    # ---- generation -----------------------------------------------------------------------------------
    def engines_available(self) -> list[str]:
        return self.models.available()

    def generate(self, params: GenerateParams) -> list[GeneratedView]:
        """Sample `params.n` segments, analyse, export and render each. Raises StudioError on bad params."""
        result = None
        for result in self.generate_stream(params, every=0):
            pass
        return result

    def generate_stream(self, params: GenerateParams, run_id: str | None = None, every: float = 0.1):
        """Like `generate`, but a generator: for the diffusion and autoregressive engines it first yields a
        GenerationProgress at most every `every` seconds (0 = none) while sampling runs in a worker thread,
        and finally the list of GeneratedView. `request_stop(run_id)` (or closing the generator) ends sampling
        early; the results are then decoded from the current estimate (the tokens written so far)."""
        from engines.models.trained_vae import mode_index

        mode_index(params.mode)  # validates the mode before any model is loaded
        if params.engine == "autoregressive" and params.prompt is not None:
            from dataclasses import replace

            from engines.data.captions import mode_named

            params = replace(params, mode=mode_named(params.prompt) or "WHITE")  # the prompt says what is asked
        model = self.models.get(params.engine)
        if params.engine == "vae":
            segments, _ = model.sample(params.mode, n=int(params.n), temperature=float(params.temperature),
                                       seed=int(params.seed), attributes=params.attributes, tonic=params.tonic)
            yield self._views(params, segments)
            return
        # bad settings or files fail here, before a thread starts
        job = self._diffusion_job if params.engine == "diffusion" else self._autoregressive_job
        run, snapshot = job(model, params)
        stop, updates = threading.Event(), queue.Queue()
        if run_id:
            self._stops[run_id] = stop
        shown = {"at": 0.0}

        def on_step(i: int, total: int, state) -> bool:  # in the worker thread; snapshots only what is shown
            now = time.monotonic()
            if every and (now - shown["at"] >= every or i + 1 == total or stop.is_set()):
                shown["at"] = now
                updates.put(("step", i + 1, total, *snapshot(state)))
            return stop.is_set()

        def work():
            try:
                updates.put(("done", run(on_step)))
            except Exception as exc:  # handed to the caller's thread
                updates.put(("error", exc))

        threading.Thread(target=work, daemon=True, name=f"{params.engine}-sampling").start()
        try:
            while True:
                kind, *payload = updates.get()
                if kind == "step":
                    step, total, sounding, shown_bar_steps = payload
                    yield GenerationProgress(step=step, total=total, sounding=sounding, bar_steps=shown_bar_steps)
                elif kind == "error":
                    raise payload[0]
                else:
                    yield self._views(params, payload[0])
                    return
        finally:
            stop.set()
            if run_id and self._stops.get(run_id) is stop:  # a newer run of the same id keeps its own flag
                del self._stops[run_id]

    def request_stop(self, run_id: str) -> bool:
        """Ask the generation running under `run_id` to stop after its current step; False if none runs."""
        stop = self._stops.get(run_id)
        if stop is not None:
            stop.set()
        return stop is not None

    def _diffusion_job(self, model, params: GenerateParams):
        """(run(on_step) -> segments; snapshot(x0) -> the live view's rolls and their bar lengths in steps).
        Sampling, or inpainting the first segment of `params.init_midi`; the file is read here, once."""
        from engines.models.guidance_classifier import GuidanceTarget

        n = int(params.n)
        settings = dict(mode=params.mode, n=n, steps=int(params.steps), sampler=params.sampler,
                        eta=float(params.eta), guidance_scale=float(params.guidance_scale), seed=int(params.seed),
                        tonic=params.tonic, classifier_scale=float(params.classifier_scale),
                        target=GuidanceTarget.parse(params.target, params.classifier_space),
                        attributes=params.attributes)
        if params.init_midi or params.keep_bars:
            if not params.init_midi:
                raise StudioError("inpainting needs a segment to start from: upload a MIDI file or pick a result")
            if not params.keep_bars:
                raise StudioError("inpainting needs at least one bar to keep (1-4); with none, just generate")
            _, segments = midi_file_segments(params.init_midi, self.cfg)
            init, keep = segments[0], list(params.keep_bars)
            metres = [(init.ts_num, init.ts_den)] * n
            run = lambda on_step: model.inpaint(init, keep, on_step=on_step, **settings)  # noqa: E731
        else:
            metres = [tuple(int(x) for x in m.split("/")) for m in model.metre_names(params.mode, n, int(params.seed))]
            run = lambda on_step: model.sample(on_step=on_step, **settings)  # noqa: E731
        spb = self.cfg.data.steps_per_beat
        bar_steps = [steps_per_bar(bar_ticks(a, b), spb) for a, b in metres]
        snapshot = lambda x0: (((x0[:, 1].clamp(-1, 1) + 1) / 2).float().cpu().numpy(), bar_steps)  # noqa: E731
        return run, snapshot

    def _autoregressive_job(self, model, params: GenerateParams):
        """As _diffusion_job for the GPT: run(on_step) writes the MIDI spans (on_step once per token) and
        snapshot(rows) draws the notes written so far. Continuation reads `params.init_midi` here, once."""
        continue_from = None
        if params.continue_bars:
            if not params.init_midi:
                raise StudioError("continuation needs a MIDI file to continue: upload one or pick a result")
            _, segments = midi_file_segments(params.init_midi, self.cfg)
            continue_from = segments[0]
        settings = dict(prompt=params.prompt, mode=params.mode, n=int(params.n), temperature=float(params.temperature),
                        top_k=int(params.top_k), top_p=float(params.top_p), beam_width=int(params.beam_width),
                        max_bars=int(params.max_bars), seed=int(params.seed), continue_from=continue_from,
                        keep_bars=int(params.continue_bars) if continue_from is not None else 2,
                        guidance_scale=float(params.prompt_guidance))
        budget = model.token_budget(params.prompt, params.mode, continue_from, settings["keep_bars"])
        d, bars = self.cfg.data, settings["max_bars"]
        shown = 1 if settings["beam_width"] > 1 else settings["n"]
        four_four = steps_per_bar(bar_ticks(4, 4), d.steps_per_beat)

        def snapshot(rows) -> tuple[np.ndarray, list[int]]:
            from engines.music.notes import notes_to_roll

            out = np.zeros((shown, bars * 4 * d.steps_per_beat, d.num_pitches), np.float32)
            bar_steps = [four_four] * shown
            for i, row in enumerate(rows[:shown]):
                segment = model.partial_segment(row, bars)
                if segment is not None and len(segment.notes):
                    roll = notes_to_roll(segment.notes, segment.bar_length, bars, d.steps_per_beat,
                                         d.pitch_low, d.pitch_high)
                    out[i, :roll.shape[1]] = roll[1] > 0
                    bar_steps[i] = steps_per_bar(segment.bar_length, d.steps_per_beat)
            return out, bar_steps

        def run(on_step):
            results = model.generate(on_token=lambda step, rows: on_step(step, budget, rows), **settings)
            return [r.segment for r in results]

        return run, snapshot

    def _views(self, params: GenerateParams, segments: list[Segment]) -> list[GeneratedView]:
        views = []
        kind = ("continued" if params.continue_bars else "inpainted") if params.init_midi else f"seed {params.seed}"
        for i, segment in enumerate(segments):
            title = f"{params.engine.upper()} · {params.mode} · {kind} · #{i + 1}"
            name = f"{params.engine}-{params.mode}-{params.seed}-{i}"
            view = GeneratedView(title=title, requested_mode=params.mode, **self.segment_result(segment, name))
            if params.engine == "autoregressive":
                view.codec_wav_path, view.audio_tokens = self.codec_render(segment, name)
            views.append(view)
        return views

    def codec_render(self, segment: Segment, name: str) -> tuple[str | None, int]:
        """The segment rendered by FluidSynth at the codec's rate, encoded to audio tokens and decoded back:
        (WAV path, number of tokens), to hear next to the plain render. (None, 0) without a codec or notes."""
        c = self.cfg.model.codec
        codec = self.models.codec(c.pretrained_path, c.pretrained_bandwidth)
        if codec is None or not len(segment.notes):
            return None, 0
        from engines.render.fluidsynth_renderer import render_score, write_audio

        rate = codec.config.sample_rate
        digest = hashlib.sha1(segment.notes.tobytes() + f"{segment.ts_num}/{segment.ts_den}@{segment.tempo_qpm}"
                              f"{rate}{c.pretrained_path}".encode()).hexdigest()[:16]
        tokens = {}

        def make(path):
            mono = render_score(segment_to_score(segment), sample_rate=rate, soundfont=self.cfg.render.soundfont,
                                gain=self.cfg.render.gain, tail_seconds=self.cfg.render.tail_seconds).mean(axis=1)
            codes, decoded = codec.round_trip(mono)
            tokens["n"] = int(codes.numel())
            decoded = decoded.numpy().clip(-1, 1)
            write_audio(np.repeat(decoded[:, None], 2, axis=1), path, rate)

        try:
            path = self._file(f"{name}-codec-{digest}-{self._render_key}", ".wav", make)
        except Exception as exc:  # noqa: BLE001  (the codec is optional: the plain render still plays)
            import logging

            logging.getLogger("engines.api").warning("codec round trip failed: %s", exc)
            return None, 0
        if "n" not in tokens:  # made earlier: the token count follows from the file's length
            import soundfile

            frames = math.ceil(soundfile.info(str(path)).frames / codec.hop_length)
            tokens["n"] = frames * codec.n_q_used
        return str(path), tokens["n"]

    # ---- evaluation ---------------------------------------------------------------------------------
    def evaluate_stream(self, engine: str, n_per_mode: int = 8, seed: int = 0, run_id: str | None = None,
                        settings: dict | None = None):
        """Evaluate an engine (or "real") with the shared suite: yields ("progress", done, total, what) while it
        samples, then ("done", report) with the examples rendered ({title, wav, midi, info}) and the report
        written as JSON and CSV. `settings` override generation.sampling keys (temperature, top_p,
        prompt_guidance, num_steps, guidance_scale, ...). request_stop(run_id) ends sampling after the
        current mode (the report then covers the modes drawn and says "stopped": True)."""
        from dataclasses import fields

        from engines.config import with_overrides
        from engines.evaluation.report import evaluation_report

        if engine != "real" and engine not in self.engines_available():
            raise StudioError(f"the {engine} engine has no checkpoint installed")
        if not 2 <= n_per_mode <= 64:
            raise StudioError(f"samples per mode must lie in 2..64, got {n_per_mode}")
        sampling = self.cfg.generation.sampling
        known = {f.name for f in fields(sampling)}
        unknown = set(settings or {}) - known
        if unknown:
            raise StudioError(f"unknown setting '{sorted(unknown)[0]}'; choose from {', '.join(sorted(known))}")
        cfg = with_overrides(self.cfg, [f"generation.sampling.{k}={v}" for k, v in (settings or {}).items()])
        stop = threading.Event()
        if run_id:
            self._stops[run_id] = stop
        updates: queue.Queue = queue.Queue()
        result: dict = {}

        def work():
            try:
                checkpoint = "" if engine == "real" else str(self.models.checkpoint_path(engine))
                result["report"] = evaluation_report(
                    engine, checkpoint, cfg, n_per_mode, seed,
                    on_mode=lambda i, mode: stop.is_set() or updates.put(("progress", i, len(MODES), mode)))
            except Exception as exc:  # noqa: BLE001  (raised in the caller's thread below)
                result["error"] = exc
            finally:
                updates.put(None)

        worker = threading.Thread(target=work, name=f"evaluate-{engine}", daemon=True)
        worker.start()
        try:
            while (update := updates.get()) is not None:
                yield update
        finally:
            if run_id:
                self._stops.pop(run_id, None)
        if "error" in result:
            error = result["error"]
            raise error if isinstance(error, StudioError) else StudioError(f"evaluation failed: {error}")
        yield ("done", {**self._report_view(result["report"]), "stopped": stop.is_set()})

    @staticmethod
    def evaluation_comparison(reports: list[dict]) -> tuple[list[str], list[list[str]]]:
        """Finished evaluate_stream reports side by side: headers ("", engine, ...) and a line per headline
        number (engines/evaluation/report.py COMPARISON_ROWS)."""
        from engines.evaluation.report import comparison_row, comparison_table

        return comparison_table([comparison_row(r["engine"], r["suite"]) for r in reports])

    def _report_view(self, report: dict) -> dict:
        import csv
        import io
        import json

        examples = {}
        for kind, items in report.pop("examples").items():
            examples[kind] = []
            for k, (segment, info) in enumerate(items):
                midi, wav = self.export_segments([segment], f"eval-{report['engine']}-{kind}-{k}")
                examples[kind].append({"title": f"{kind} #{k + 1}: asked {info['requested']}, heard {info['heard']} "
                                                f"(score {info['score']:.2f})", "wav": wav, "midi": midi, **info})
        report["examples"] = examples
        stem = self.out_dir / f"evaluation-{report['engine']}-{int(time.time() * 1000)}"
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps({k: v for k, v in report.items() if k != "statistics"}, indent=1))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(report["per_mode"][0]) if report["per_mode"] else ["mode"])
        writer.writeheader()
        writer.writerows(report["per_mode"])
        csv_path = stem.with_suffix(".csv")
        csv_path.write_text(out.getvalue())
        report["files"] = [str(json_path), str(csv_path)]
        return report

    # ---- uploads --------------------------------------------------------------------------------------
    def analyze_upload(self, path: str | Path) -> UploadView:
        """A user's MIDI: validated, analysed per segment, rendered whole. Raises StudioError on bad files."""
        path = Path(path)
        score, segments = midi_file_segments(path, self.cfg)
        analyses = analyze_segments(segments, self.cfg)
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        midi_path = self._file(f"upload-{digest}", ".mid", lambda p: shutil.copyfile(path, p))
        wav_path = self._file(f"upload-{digest}-{self._render_key}", ".wav", lambda p: self._render_score(score, p))
        notes = np.concatenate([_shifted(s) for s in segments])
        q = float(TICKS_PER_QUARTER)
        regions = [{"start": _offset(s) / q, "end": (_offset(s) + s.length) / q, "mode": a["mode"],
                    "color": MODE_COLORS[a["mode"]], "label": f"bars {a['bars'][0]}-{a['bars'][1]}: {a['mode']}"}
                   for s, a in zip(segments, analyses)]
        last = segments[-1]
        bar_lines = sorted({_offset(s) / q + i * s.bar_length / q for s in segments for i in range(s.num_bars + 1)})
        view = note_view(notes, last.bar_length, 0, regions)
        view.bar_lines = bar_lines
        return UploadView(name=path.name, segments=analyses, notes=view, wav_path=str(wav_path),
                          midi_path=str(midi_path))

    # ---- helpers --------------------------------------------------------------------------------------
    def segment_result(self, segment: Segment, name: str) -> dict:
        """What the studio shows of a decoded segment: analysis (None when it holds no notes), colour of the
        mode heard, notes for the roll, MIDI and WAV paths."""
        analysis = analyze_segments([segment], self.cfg)[0] if len(segment.notes) else None
        mode = analysis["mode"] if analysis else "WHITE"
        region = [{"start": 0.0, "end": segment.length / TICKS_PER_QUARTER, "mode": mode, "color": MODE_COLORS[mode],
                   "label": mode}]
        midi, wav = self.export_segments([segment], name)
        return {"analysis": analysis, "color": MODE_COLORS[mode], "midi_path": midi, "wav_path": wav,
                "notes": note_view(segment.notes, segment.bar_length, segment.num_bars, region)}

    def export_segments(self, segments: list[Segment], name: str) -> tuple[str, str | None]:
        """MIDI and WAV of segments played one after another (each keeps its metre and tempo), written once
        under `name` plus a digest of what they hold; no WAV when they hold no notes."""
        digest = hashlib.sha1(b"".join(
            s.notes.tobytes() + f"{s.ts_num}/{s.ts_den}@{s.tempo_qpm}x{s.num_bars}".encode() for s in segments
        )).hexdigest()[:16]
        midi = self._file(f"{name}-{digest}", ".mid", lambda p: segments_to_score(segments).dump_midi(str(p)))
        if not any(len(s.notes) for s in segments):
            return str(midi), None
        wav = self._file(f"{name}-{digest}-{self._render_key}", ".wav",
                         lambda p: self._render_score(segments_to_score(segments), p))
        return str(midi), str(wav)

    def _render_score(self, score, path: Path) -> None:
        from engines.render.fluidsynth_renderer import render_score, write_audio

        r = self.cfg.render
        audio = render_score(score, sample_rate=r.sample_rate, soundfont=r.soundfont, gain=r.gain,
                             tail_seconds=r.tail_seconds, pool_size=r.pool_size)
        write_audio(audio, path, r.sample_rate)

    def _file(self, stem: str, suffix: str, make) -> Path:
        """A file in out_dir made once by `make(tmp_path)`; concurrent callers never see half a file."""
        path = self.out_dir / f"{stem}-{self.cache.meta.get('fingerprint', 'x')}{suffix}"
        if path.exists():
            return path
        handle, tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{path.stem}-", suffix=suffix)
        os.close(handle)
        try:
            make(Path(tmp))
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path


def _key_of(row) -> str:
    """A cache row's key: 0..11 major keys on C..B, 12..23 the minor ones."""
    return key_name(int(row["key"]) % 12, int(row["key"]) < 12)


def _offset(segment: Segment) -> int:
    """Ticks from the start of the file to the segment (bars of a file segment are regular within a run)."""
    return int(segment.meta.get("offset", 0))


def _shifted(segment: Segment) -> np.ndarray:
    notes = segment.notes.copy()
    notes["start"] += _offset(segment)
    return notes
