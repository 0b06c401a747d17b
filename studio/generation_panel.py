"""The Generate tab's generation panel: its controls, the results grid, and the handlers that turn them into
engine requests and the engine's results into cards.

    build_generation_panel(engine)   lays out the panel inside the current Blocks and wires its events

The controls every engine shares come first (mode, seed, the musical controls of engines/generation/musical.py,
variations, attribute targets, candidates per result, a segment to start from); each engine's own settings
are built from its Settings dataclass (the fields with a `control`, engines/generation/), so a new setting
needs no change here. Handlers only convert values and call StudioEngine. What a musician sees and does:
docs/studio.md.
"""
from __future__ import annotations

from functools import partial

import time

import gradio as gr

from engines.api import (DYNAMICS, GM_INSTRUMENTS, METRE_NAMES, MODE_COLORS, MODES, GenerationProgress, Request,
                         StudioEngine)
from engines.data.captions import mode_named, prompt_for
from engines.errors import StudioError
from engines.generation.base import MAX_CANDIDATES
from engines.music.features import PITCH_NAMES
from studio.phrase_pad import build_phrase_pad, phrase_notes
from studio.widgets import (LIVE_ROLL_JS, analysis_markdown, counted, error_markdown, guarded, guarded_stream,
                            live_roll, mode_chip, piano_roll_figure, progress_html)

MAX_RESULTS = 8
# The live view: at most two views a second, each the variations' levels as a few kilobytes the page draws
# (widgets.live_roll, LIVE_ROLL_JS). As PNGs Gradio encoded, cached and the page fetched, at 5 a second the
# studio took 2.7x the engine's time for DDIM-50 x4.
LIVE_EVERY = 0.5
LIVE_TEMPLATE = ("<div class='live-caption'>Live: each variation's current estimate (diffusion) or its notes so far "
                 "(GPT)</div><canvas></canvas>")
INIT_SOURCES = ["a result below", "an uploaded MIDI file", "the phrase you play in"]
# What a musician may ask a result to land on besides its mode, in the analyzer's scale: (low, high, default)
TARGET_RANGES = {"energy": (0, 1, 0.5), "valence": (-1, 1, 0.0), "tension": (0, 1, 0.5), "intimacy": (0, 1, 0.5),
                 "motion": (0, 1, 0.5), "rebracketing": (0, 1, 0.3), "temporal_complexity": (0, 1, 0.5)}
TARGET_LABELS = {"energy": "Energy", "valence": "Valence (dark - bright)", "tension": "Tension",
                 "intimacy": "Intimacy", "motion": "Motion", "rebracketing": "Rebracketing",
                 "temporal_complexity": "Temporal complexity"}
# The session history: a browser keeps its last results (MIDI and settings) in its own storage (gr.BrowserState).
# The secret only signs what the browser holds, which is its own results: a kept MIDI file is checked on its way
# back like any upload (engine.restore_midi).
HISTORY_SIZE = 50
REPLACED = "replaced"   # a run a newer one of the same user replaced: it draws nothing
HISTORY_KEY, HISTORY_SECRET = "chromatic-studio-history", "chromatic-studio-history-v1"
HISTORY_COLUMNS = ["entry", "when", "result", "heard", "settings"]
INIT_LABELS = {"inpainted": ("Inpainting: keep bars, regenerate the rest", "Inpaint"),
               "continued": ("Continue a segment: keep its first bars, write on", "Continue")}


def result_markdown(view) -> str:
    """A result card's head: its title, the mode the analyzer hears (a chip) against the one asked, whether
    it was stopped, and how it was chosen. The analyzer's full readout is result_analysis."""
    if view.analysis is None:
        if view.stopped:
            return f"**{view.title}**\n\nStopped before the model had settled on any note."
        return f"**{view.title}**\n\nThe model decoded an empty segment at this seed; try another seed."
    heard = view.analysis["mode"]
    verdict = "matches" if heard == view.requested_mode else f"asked for {view.requested_mode}"
    stopped = (f"*Stopped early: what the model had then, notes in bars 1-{view.bars_written} of {view.bars}; "
               f"the analysis covers those.*\n\n" if view.stopped else "")
    return (f"**{view.title}** — analyzer hears {mode_chip(heard, view.color)} ({verdict})\n\n" + stopped
            + verification_markdown(view.verification))


def result_analysis(view) -> str:
    """The analyzer's readout of a result (axes against those asked, key, rhythm), for its card's drawer."""
    if view.analysis is None:
        return ""
    return analysis_markdown(view.analysis, view.color, heading=False, asked=view.asked)


def result_record(view, request: Request) -> dict:
    """What the studio keeps of a result (results_state, the starred list, the ZIP): its files and what made it."""
    settings = {"title": view.title, "engine": request.engine, "mode": view.requested_mode, "seed": request.seed,
                "heard": view.analysis["mode"] if view.analysis else None}
    for name in ("tempo", "metre", "scale", "tonic", "instrument", "dynamics", "attributes", "candidates"):
        if getattr(request, name) is not None:
            settings[name] = getattr(request, name)
    if isinstance(request.settings, dict):
        settings["settings"] = dict(request.settings)
    return {"midi": view.midi_path, "wav": view.wav_path, "settings": settings}


def verification_markdown(check: dict | None) -> str:
    """How a result was chosen, in one line ("" for an unchecked result)."""
    if not check or check["candidates"] == 1:
        return ""
    parts = [f"ranked {check['rank']} of the candidates drawn ({check['candidates']} per result)"]
    if check.get("judge_mode"):
        parts.append(f"the judge hears {check['judge_mode']}"
                     + (f", {check['judge_score']:.0%} sure of the mode asked" if check["judge_score"] is not None
                        else ""))
    if check.get("copy_similarity") is not None:
        parts.append(f"nearest training segment {check['copy_similarity']:.0%} alike")
    return "*Checked: " + "; ".join(parts) + ".*\n\n"


def numbered(items: list, number, empty: str, counted_as: str):
    """Item `number` (1-based) of `items`; StudioError `empty` when there are none, or naming the range."""
    if not items:
        raise StudioError(empty)
    k = int(number or 1)
    if not 1 <= k <= len(items):
        raise StudioError(f"{counted_as.format(n=len(items))}; pick a number from 1 to {len(items)}")
    return items[k - 1]


def init_source(use: bool, source: str, result_number, upload, results: list[dict], played=None) -> str | None:
    """(the MIDI path to start from, or None) from the start-from controls, this user's last results and
    `played()`, the MIDI file of the phrase played in."""
    if not use:
        return None
    if source == INIT_SOURCES[2]:
        return played()
    if source == INIT_SOURCES[1]:
        if not upload:
            raise StudioError("upload a MIDI file to start from, or choose a result below")
        return upload
    return numbered(results, result_number, "generate first: this starts from one of the results below",
                    "there are {n} results")["midi"]


def history_entry(record: dict) -> dict:
    """A result as the browser keeps it: when, what made it, and its MIDI file (base64)."""
    import base64
    from datetime import datetime
    from pathlib import Path

    return {"when": datetime.now().strftime("%d %b %H:%M"), "settings": record["settings"],
            "midi_name": Path(record["midi"]).stem,
            "midi": base64.b64encode(Path(record["midi"]).read_bytes()).decode("ascii")}


def history_rows(history: list) -> list[list]:
    rows = []
    for k, entry in enumerate(history or [], 1):
        s = entry.get("settings", {})
        shown = [f"{s['tempo']:g} BPM" if s.get("tempo") else "", s.get("metre"), s.get("tonic"), s.get("scale"),
                 GM_INSTRUMENTS[s["instrument"] - 1] if s.get("instrument") else "", s.get("dynamics"),
                 f"K={s['candidates']}" if s.get("candidates") else ""]
        rows.append([k, entry.get("when", ""), s.get("title", ""), s.get("heard") or "—",
                     " · ".join(x for x in shown if x)])
    return rows


def history_pick(history: list, number) -> dict:
    """The entry numbered `number` (1 = newest) of a browser's history; StudioError when there is none."""
    return numbered(history, number, "the history is empty: generate first", "the history has {n} entries")


def _mode_setting(engine: StudioEngine, engine_name: str, mode: str, name: str):
    """The value an engine samples `mode` with for a setting the config leaves unset (None when it has none)."""
    return engine.engine_mode_settings(engine_name, mode).get(name)


def settings_control(spec: dict, elem_id: str):
    """A Gradio component for one settings field (engines/settings.settings_schema)."""
    common = dict(label=spec["label"], info=spec["info"] or None, elem_id=elem_id)
    if spec["kind"] == "radio":
        return gr.Radio(spec["choices"], value=spec["value"], **common)
    if spec["kind"] == "checkbox":
        return gr.Checkbox(spec["value"], **common)
    if spec["kind"] == "slider":
        return gr.Slider(spec["minimum"], spec["maximum"], spec["value"], step=spec["step"], **common)
    return gr.Textbox(spec["value"] or "", lines=2, **common)


def build_generation_panel(engine: StudioEngine) -> None:
    available = engine.engines_available()
    choices = [(engine.engine_label(e), e) for e in available]
    preferred = engine.cfg.model.generative.type  # the engine the tab starts with, when it has a checkpoint
    first = preferred if preferred in available else (available[0] if available else None)
    if not available:
        gr.Markdown(f"No trained engine checkpoint in `{engine.cfg.model.checkpoints_dir}` yet. Train one with "
                    "`python -m engines train --engine vae` and copy its `best.pt` there as `vae.pt`.",
                    elem_id="generate-missing")
    schemas = {e: engine.engine_settings(e) for e in available}
    for spec in (s for specs in schemas.values() for s in specs if s["name"] == "prompt" and s["value"] is None):
        spec["value"] = prompt_for("RED")   # the prompt box starts with the first mode's prompt
    by_mode = {}   # (engine, field): sliders left unset in the config show what the engine samples the mode with
    for e, specs in schemas.items():
        for spec in specs:
            if spec["kind"] == "slider" and spec["value"] is None:
                by_mode[(e, spec["name"])] = spec
                # filled at each page load (the engine's model loads then, not when the studio starts)
                spec["value"] = partial(_mode_setting, engine, e, "RED", spec["name"])
    names = [spec["name"] for specs in schemas.values() for spec in specs]
    integers = {(e, spec["name"]) for e, specs in schemas.items() for spec in specs if spec["integer"]}
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            engine_name = gr.Radio(choices, value=first, label="Engine", elem_id="generate-engine")
            mode = gr.Radio(list(MODES) + ["WHITE"], value="RED", label="Chromatic mode (WHITE = none)",
                            elem_id="generate-mode")
            groups, controls = {}, []   # controls: (engine, field name, component), in schema order
            for e, specs in schemas.items():
                with gr.Group(visible=e == first) as groups[e]:
                    basic = [s for s in specs if not s["advanced"]]
                    advanced = [s for s in specs if s["advanced"]]
                    for spec in basic:
                        controls.append((e, spec["name"], settings_control(spec, _elem_id(e, spec["name"], names))))
                    if advanced:
                        with gr.Accordion("More settings", open=False):
                            for spec in advanced:
                                controls.append((e, spec["name"],
                                                 settings_control(spec, _elem_id(e, spec["name"], names))))
            prompt = next((c for e, name, c in controls if name == "prompt"), None)
            seed = gr.Number(0, precision=0, label="Seed", minimum=0, elem_id="generate-seed")
            with gr.Accordion("Tempo, metre, key, instrument", open=True, elem_id="generate-musical"):
                with gr.Row():
                    # no minimum here: an empty box arrives as 0, which means "the mode's"; the engine checks 30-300
                    tempo = gr.Number(0, precision=0, label="Tempo (BPM 30-300; 0: the mode's)",
                                      elem_id="generate-tempo")
                    metre = gr.Dropdown([("as generated", "")] + [(m, m) for m in METRE_NAMES], value="",
                                        label="Metre", elem_id="generate-metre")
                with gr.Row():
                    tonic = gr.Dropdown([("as written", "")] + [(p, p) for p in PITCH_NAMES], value="",
                                        label="Tonic", elem_id="generate-tonic",
                                        info="as written: C for the VAE and diffusion, the prompt's key for the GPT")
                    scale = gr.Dropdown([("as generated", ""), ("major", "major"), ("minor", "minor")], value="",
                                        label="Major or minor", elem_id="generate-scale",
                                        info="the parallel key when heard in the other")
                with gr.Row():
                    instrument = gr.Dropdown([(f"{i} · {name}", i) for i, name in enumerate(GM_INSTRUMENTS, 1)],
                                             value=1, label="Instrument (General MIDI)", elem_id="generate-instrument")
                    dynamics = gr.Dropdown(list(DYNAMICS), value="mf", label="Dynamics", elem_id="generate-dynamics")
                gr.Markdown("*A segment you start from keeps its own metre and key.*")
            count = gr.Slider(1, MAX_RESULTS, 4, step=1, label="Variations", elem_id="generate-count")
            candidates = gr.Slider(1, MAX_CANDIDATES, engine.engine_candidates(first) if first else 8, step=1,
                                   label="Check results: candidates per result",
                                   info="The judge ranks this many candidates per result by the mode you ask "
                                        "for, copies of training segments are rejected, the best are shown. "
                                        "Costs about this many times one draw; 1 = the raw model, unchecked.",
                                   elem_id="generate-candidates")
            with gr.Accordion("Where it should land: feeling and rhythm", open=False, elem_id="generate-targets"):
                asked = gr.CheckboxGroup(list(TARGET_LABELS.values()), value=[], elem_id="generate-asked",
                                         label="Ask for (each on its own; a mode alone aims inside its region)",
                                         info="With a mode chosen the mode comes first; with WHITE these alone "
                                              "steer, and results land nearest them")
                with gr.Row():
                    target_sliders = {name: gr.Slider(low, high, default, step=0.05, label=TARGET_LABELS[name],
                                                      elem_id=f"target-{name}")
                                      for name, (low, high, default) in TARGET_RANGES.items()}
            with gr.Accordion(_init_label(engine, first)[0], open=False, visible=bool(_init_label(engine, first)[0]),
                              elem_id="generate-init") as init_box:
                use_init = gr.Checkbox(False, label=_init_label(engine, first)[1] or "Start from", elem_id="inpaint-on")
                source = gr.Radio(INIT_SOURCES, value=INIT_SOURCES[0], label="Start from")
                result_number = gr.Number(1, precision=0, minimum=1, maximum=MAX_RESULTS, label="Result number",
                                          elem_id="inpaint-result")
                upload = gr.File(file_types=[".mid", ".midi"], type="filepath", label="MIDI file (its first 4 bars)")
                with gr.Accordion("Play a phrase in: keyboard and step grid", open=False, elem_id="phrase-box"):
                    phrase, analyse_phrase, phrase_readout = build_phrase_pad()
                keep_bars = gr.CheckboxGroup(["1", "2", "3", "4"], value=["1", "2"], label="Bars to keep",
                                             info="Inpainting keeps any bars; the GPT continues after bars 1..k",
                                             elem_id="inpaint-keep")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate-button")
                stop = gr.Button("Stop", variant="stop", elem_id="generate-stop")
            status = gr.Markdown(elem_id="generate-status")
        with gr.Column(scale=3):
            live = gr.HTML(None, html_template=LIVE_TEMPLATE, js_on_load=LIVE_ROLL_JS, elem_id="generate-live",
                           padding=False)
            slots = []   # per card: (card, roll, head, audio, codec audio, model's audio, files, star, analysis)
            with gr.Row(elem_id="generated-grid", equal_height=False):
                for i in range(MAX_RESULTS):
                    with gr.Column(visible=False, min_width=330, elem_classes="result-card",
                                   elem_id=f"generated-card-{i}") as card:
                        head = gr.Markdown(elem_id=f"generated-readout-{i}")
                        plot = gr.Plot(show_label=False, elem_id=f"generated-roll-{i}")
                        audio = gr.Audio(type="filepath", interactive=False, show_label=False,
                                         elem_id=f"generated-audio-{i}")
                        codec_audio = gr.Audio(type="filepath", interactive=False, visible=False,
                                               elem_id=f"generated-codec-audio-{i}")
                        own_audio = gr.Audio(type="filepath", interactive=False, visible=False,
                                             elem_id=f"generated-model-audio-{i}")
                        star = gr.Checkbox(False, label="★ Star: keep it for the ZIP", elem_id=f"generated-star-{i}")
                        files = gr.File(file_count="multiple", interactive=False, show_label=False,
                                        elem_id=f"generated-files-{i}")
                        with gr.Accordion("What the analyzer hears", open=False,
                                          elem_id=f"generated-analysis-box-{i}"):
                            analysis = gr.Markdown(elem_id=f"generated-analysis-{i}")
                    slots.append((card, plot, head, audio, codec_audio, own_audio, files, star, analysis))
            with gr.Row(elem_id="generate-starred"):
                starred_line = gr.Markdown("No result starred yet.", elem_id="generate-starred-line")
                zip_button = gr.Button("Download the starred results (ZIP)", elem_id="generate-zip", scale=0,
                                       min_width=260)
            zip_file = gr.File(label="Starred results with their settings", interactive=False, visible=False,
                               elem_id="generate-zip-file")
            with gr.Accordion(f"History: your last {HISTORY_SIZE} results, kept in this browser", open=False,
                              elem_id="generate-history-box") as history_box:
                history_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, max_height=320,
                                             elem_id="generate-history")
                with gr.Row():
                    history_number = gr.Number(1, precision=0, minimum=1, label="Entry", scale=0, min_width=110,
                                               elem_id="generate-history-pick")
                    again = gr.Button("Regenerate with these settings", elem_id="generate-history-again")
                    start_from = gr.Button("Use as start (inpaint or continue)", elem_id="generate-history-start")
                history_note = gr.Markdown(elem_id="generate-history-note")
    results_state = gr.State([])  # this user's last results (result_record: inpainting starts from them)
    finished_run = gr.State(None)  # the run just finished, for show_results to draw (or REPLACED, or None)
    starred_state = gr.State([])  # the results this user starred, over every run of the session
    history = gr.BrowserState([], storage_key=HISTORY_KEY, secret=HISTORY_SECRET)

    def hidden_slot() -> list:
        return [gr.update(visible=False), None, "", None, gr.update(value=None, visible=False),
                gr.update(value=None, visible=False), [], False, ""]

    def hidden_slots() -> list:
        return [value for _ in slots for value in hidden_slot()]

    def show_engine(name):
        label, check = _init_label(engine, name)
        return ([gr.update(visible=e == name) for e in groups]
                + [gr.update(value=engine.engine_candidates(name)), gr.update(visible=bool(label), label=label),
                   gr.update(label=check or "Start from")])

    engine_name.change(show_engine, engine_name, list(groups.values()) + [candidates, init_box, use_init],
                       api_visibility="private")
    mode_sliders = [(e, name, c) for e, name, c in controls if (e, name) in by_mode]
    if mode_sliders:   # ... and choosing a mode, what the engine samples it with (the GPT's calibration)
        def mode_values(m):
            filled = {e: engine.engine_mode_settings(e, m) for e in {e for e, _, _ in mode_sliders}}
            return [filled[e].get(name) for e, name, _ in mode_sliders]

        mode.input(mode_values, mode, [c for _, _, c in mode_sliders], api_visibility="private")
    if prompt is not None:  # choosing a mode fills in its prompt (WHITE: a prompt naming none) ...
        mode.input(lambda m: prompt_for(None if m == "WHITE" else m), mode, prompt, api_visibility="private")
        # ... and typing a prompt shows the mode it names, which is what the GPT is asked for (none: WHITE)
        prompt.input(lambda text: mode_named(text or "") or "WHITE", prompt, mode, api_visibility="private",
                     trigger_mode="always_last")   # the last keystroke decides, not the first

    def on_error(message):   # the cards of the last run go with it (show_results, given no finished run)
        return [message, None, None]

    @guarded_stream(on_error)
    def run(engine_name, mode, seed, tempo, metre, tonic, scale, instrument, dynamics, count, k, asked_labels,
            energy, valence, tension, intimacy, motion, rebracketing, complexity, use_start, start_source,
            start_result, start_upload, bars, results, starred, kept, played, request: gr.Request,
            *settings_values):
        targets = dict(zip(TARGET_RANGES, (energy, valence, tension, intimacy, motion, rebracketing, complexity)))
        attributes = {name: float(targets[name]) for name, label in TARGET_LABELS.items()
                      if label in (asked_labels or [])}
        if not engine_name:
            raise StudioError("no engine is installed: train one first")
        settings = {name: value for (e, name, _), value in zip(controls, settings_values) if e == engine_name}
        if "prompt" in settings:   # what is asked for is the mode the prompt names; the radio only fills one in
            if not (settings["prompt"] or "").strip():
                raise StudioError("write a prompt, or choose a mode to fill one in")
            mode = mode_named(settings["prompt"]) or "WHITE"
        for name, value in settings.items():   # sliders give floats; integer settings want ints
            if (engine_name, name) in integers and value is not None:
                settings[name] = int(value)
        init = init_source(use_start and bool(_init_label(engine, engine_name)[0]), start_source, start_result,
                           start_upload, results, lambda: engine.phrase_midi(phrase_notes(played), tempo or None))
        req = Request(engine=engine_name, mode=mode, n=int(count), seed=int(seed or 0),
                      attributes=attributes or None,
                      tonic=None if init or not tonic else tonic,  # a kept segment keeps its key
                      metre=None if init or not metre else metre,  # ... and its metre
                      tempo=float(tempo) if tempo else None, scale=scale or None,
                      instrument=int(instrument) if instrument else None, dynamics=dynamics or None,
                      init_midi=init, keep_bars=[int(b) for b in bars or []] if init else None,
                      settings=settings, candidates=int(k))
        result, stopped_at = None, None
        started = time.perf_counter()
        live_view = engine.engine_is_live(engine_name)
        for item in engine.generate_stream(req, run_id=request.session_hash if request else None, every=LIVE_EVERY):
            if isinstance(item, GenerationProgress):
                stopped_at = (item.step, item.total)
                roll = live_roll(item.sounding, item.bar_steps, MODE_COLORS[mode], engine.cfg.data.pitch_low)
                label = engine.engine_live_label(engine_name).format(step=item.step, total=item.total)
                yield [progress_html(item.step, item.total, label), roll, gr.skip()]
            else:
                result = item
        # The cards are drawn by show_results, the event that follows. Gradio handles every output of a streamed
        # update, a skipped one too (it rebuilds the component): with the cards among the outputs, two live views
        # of a 1 s diffusion request cost it 13 %.
        yield [gr.skip(), gr.skip(), REPLACED if result.replaced else
               {"result": result, "request": req, "stopped_at": stopped_at, "live": live_view, "started": started}]

    @guarded(lambda message: [message] + [gr.skip()] * 4 + hidden_slots())
    def show_results(finished, starred, kept):
        """The finished run's cards, its summary (with "Took N s": request to cards, live view included), the
        results kept for inpainting and the browser's history. None (the run failed; its message shows): no
        cards. A run a newer one replaced leaves the page to it."""
        if finished == REPLACED:
            return [gr.skip()] * len(shown)
        if finished is None:
            return [gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), *hidden_slots()]
        outputs = _results(finished["result"], finished["request"], finished["stopped_at"], finished["live"],
                           starred)
        outputs[0] += f" Took {time.perf_counter() - finished['started']:.2f} s."
        records = outputs[2]
        kept = ([history_entry(r) for r in records] + list(kept or []))[:HISTORY_SIZE]
        return outputs[:3] + [kept, history_rows(kept)] + outputs[3:]

    def _results(result, req: Request, stopped_at, live_shown: bool, starred: list) -> list:
        views, mode = result.views, result.asked_mode
        matches = sum(v.analysis is not None and v.analysis["mode"] == mode for v in views)
        summary = (f"{counted(len(views), 'segment')}; the analyzer hears {mode} in {matches}."
                   if mode != "WHITE" else f"{counted(len(views), 'unconditioned segment')}.")
        summary += f" {result.summary}"
        if result.stopped and stopped_at and stopped_at[0] < stopped_at[1]:
            summary += f" Stopped at step {stopped_at[0]} of {stopped_at[1]}: these are what it had then."
        records = [result_record(v, req) for v in views]
        kept = {r["midi"] for r in starred or []}
        outputs = [summary, gr.skip() if live_shown else None, records]
        for i in range(MAX_RESULTS):
            if i < len(views):
                v = views[i]
                files = [v.midi_path] + ([v.wav_path] if v.wav_path else [])
                codec = (gr.update(value=v.codec_wav_path, visible=True,
                                   label=f"Through the audio codec: {v.audio_tokens} tokens, decoded")
                         if v.codec_wav_path else gr.update(value=None, visible=False))
                own = (gr.update(value=v.model_audio_wav_path, visible=True,
                                 label=f"The model's own audio: the GPT's {v.model_audio_tokens} audio tokens for "
                                       f"the first {v.model_audio_seconds:g} s, decoded by the codec")
                       if v.model_audio_wav_path else gr.update(value=None, visible=False))
                outputs += [gr.update(visible=True), piano_roll_figure(v.notes, "", v.color, height=240, grow=False),
                            result_markdown(v), v.wav_path, codec, own, files, v.midi_path in kept,
                            result_analysis(v)]
            else:
                outputs += hidden_slot()
        return outputs

    def starred_markdown(starred: list) -> str:
        if not starred:
            return "No result starred yet."
        return f"★ {counted(len(starred), 'starred result')}: " + ", ".join(
            r["settings"]["title"] for r in starred[-4:]) + (" …" if len(starred) > 4 else "")

    def on_star(i: int):
        def toggle(on: bool, results: list, starred: list):
            if i >= len(results or []):
                return starred, starred_markdown(starred)
            record = results[i]
            starred = [r for r in starred or [] if r["midi"] != record["midi"]] + ([record] if on else [])
            return starred, starred_markdown(starred)
        return toggle

    @guarded(lambda message: (message, gr.update(visible=False)))
    def on_zip(starred: list):
        return starred_markdown(starred), gr.update(value=engine.export_zip(starred or []), visible=True)

    def request_stop(request: gr.Request):
        if request is None or not engine.request_stop(request.session_hash):
            return error_markdown("Nothing is generating right now.")
        return gr.update()

    inputs = [engine_name, mode, seed, tempo, metre, tonic, scale, instrument, dynamics, count, candidates, asked,
              *target_sliders.values(), use_init, source, result_number, upload, keep_bars, results_state,
              starred_state, history, phrase] + [c for _, _, c in controls]
    # a click while a run is going replaces it (the engine stops the earlier run of this session): never nothing
    shown = [status, live, results_state, history, history_table] + [c for slot in slots for c in slot]
    generate.click(run, inputs, [status, live, finished_run],
                   show_progress="minimal", trigger_mode="multiple", api_visibility="private",
                   concurrency_limit=engine.cfg.generation.batching.requests_at_once, concurrency_id="generation"
                   ).then(show_results, [finished_run, starred_state, history], shown, queue=False,
                          show_progress="hidden", api_visibility="private")
    stop.click(request_stop, None, status, queue=False, api_visibility="private")
    for i, slot in enumerate(slots):
        slot[7].input(on_star(i), [slot[7], results_state, starred_state], [starred_state, starred_line],
                      api_visibility="private")
    zip_button.click(on_zip, starred_state, [starred_line, zip_file], api_visibility="private")

    history_box.expand(history_rows, history, history_table, api_visibility="private")

    @guarded(lambda message: message)
    def on_analyse_phrase(played, bpm):
        view = engine.analyze_upload(engine.phrase_midi(phrase_notes(played), bpm or None))
        heard = view.segments[0]
        return (f"The phrase: the analyzer hears {mode_chip(heard['mode'], MODE_COLORS[heard['mode']])}\n\n"
                + analysis_markdown(heard, MODE_COLORS[heard["mode"]], heading=False))

    analyse_phrase.click(on_analyse_phrase, [phrase, tempo], phrase_readout, api_visibility="private")
    musical = [engine_name, mode, seed, tempo, metre, tonic, scale, instrument, dynamics, candidates]

    @guarded(lambda message: [gr.skip()] * (len(musical) + len(controls)) + [message])
    def on_again(kept, number):
        s = history_pick(kept, number)["settings"]
        if s["engine"] not in engine.engines_available():
            raise StudioError(f"the {s['engine']} engine that made it is not installed here")
        own = s.get("settings") or {}
        values = [s["engine"], s["mode"], s["seed"], s.get("tempo") or 0, s.get("metre") or "", s.get("tonic") or "",
                  s.get("scale") or "", s.get("instrument") or 1, s.get("dynamics") or "mf",
                  s.get("candidates") or gr.skip()]
        filled = [own[name] if e == s["engine"] and name in own else gr.skip() for e, name, _ in controls]
        return values + filled + [f"Settings of entry {int(number or 1)} filled in: *{s['title']}*. "
                                  "Generate to make it again."]

    @guarded(lambda message: [gr.skip()] * 5 + [message])
    def on_start(kept, number, current):
        import base64

        entry = history_pick(kept, number)
        path = engine.restore_midi(base64.b64decode(entry["midi"]), entry.get("midi_name", "history"))
        starts = [e for e in (current, "diffusion", "autoregressive")
                  if e in engine.engines_available() and engine.engine_init_verb(e)]
        if not starts:
            raise StudioError("no installed engine can start from a segment (diffusion inpaints, the GPT continues)")
        return (starts[0], True, INIT_SOURCES[1], path, gr.update(open=True),
                f"Entry {int(number or 1)} is the segment to start from: choose the bars to keep and Generate.")

    again.click(on_again, [history, history_number], musical + [c for _, _, c in controls] + [history_note],
                api_visibility="private")
    start_from.click(on_start, [history, history_number, engine_name],
                     [engine_name, use_init, source, upload, init_box, history_note], api_visibility="private")


def _init_label(engine: StudioEngine, name: str | None) -> tuple[str, str]:
    """(accordion label, checkbox label) of the start-from controls for an engine; ("", "") when it has none."""
    return INIT_LABELS.get(engine.engine_init_verb(name) if name else "", ("", ""))


def _elem_id(engine_name: str, field: str, names: list[str]) -> str:
    """generate-<field>, or generate-<engine>-<field> when two engines have a field of that name."""
    stem = field.replace("_", "-")
    return f"generate-{stem}" if names.count(field) == 1 else f"generate-{engine_name}-{stem}"
