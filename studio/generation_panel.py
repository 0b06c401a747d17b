"""The generation panel of the Generate tab: pick an engine, a chromatic mode and settings; hear the variations.

Each result shows its piano roll coloured by the mode the analyzer hears, the analyzer's readout (and
whether it matches the requested mode), an audio player, and MIDI/WAV downloads.
"""
from __future__ import annotations

import gradio as gr

from engines.api import MODES, GenerateParams, StudioEngine
from engines.music.features import PITCH_NAMES
from studio.widgets import analysis_markdown, guarded, mode_chip, piano_roll_figure

MAX_RESULTS = 8
ENGINE_LABELS = {"vae": "VAE (conditional β-VAE)"}


def result_markdown(view) -> str:
    if view.analysis is None:
        return f"**{view.title}**\n\nThe model decoded an empty segment at this seed; try another seed."
    heard = view.analysis["mode"]
    verdict = "matches" if heard == view.requested_mode else f"asked for {view.requested_mode}"
    return (f"**{view.title}** — analyzer hears {mode_chip(heard, view.color)} ({verdict})\n\n"
            + analysis_markdown(view.analysis, view.color, heading=False))


def build_generation_panel(engine: StudioEngine) -> None:
    available = engine.engines_available()
    choices = [(ENGINE_LABELS[e], e) for e in available] or [(ENGINE_LABELS["vae"], "vae")]
    if not available:
        gr.Markdown(f"No trained engine checkpoint in `{engine.cfg.model.checkpoints_dir}` yet. Train one with "
                    "`python -m engines train --engine vae` and copy its `best.pt` there as `vae.pt`.",
                    elem_id="generate-missing")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            engine_name = gr.Dropdown(choices, value=choices[0][1], label="Engine")
            mode = gr.Radio(list(MODES) + ["WHITE"], value="RED", label="Chromatic mode (WHITE = none)",
                            elem_id="generate-mode")
            temperature = gr.Slider(0.1, 2.0, 1.0, step=0.05, label="Temperature")
            seed = gr.Number(0, precision=0, label="Seed", minimum=0)
            tonic = gr.Dropdown(list(PITCH_NAMES), value="C", label="Tonic (the key is major or minor as generated)")
            count = gr.Slider(1, MAX_RESULTS, 4, step=1, label="Variations")
            with gr.Accordion("Rhythm attributes", open=False):
                use_attributes = gr.Checkbox(False, label="Ask for these values")
                rebracketing = gr.Slider(0, 1, 0.5, step=0.05, label="Rebracketing")
                complexity = gr.Slider(0, 1, 0.5, step=0.05, label="Temporal complexity")
            generate = gr.Button("Generate", variant="primary", elem_id="generate-button")
            status = gr.Markdown(elem_id="generate-status")
        with gr.Column(scale=3):
            slots = []
            for i in range(MAX_RESULTS):
                with gr.Group(visible=False) as box:
                    with gr.Row():
                        plot = gr.Plot(show_label=False, elem_id=f"generated-roll-{i}")
                        with gr.Column():
                            readout = gr.Markdown(elem_id=f"generated-readout-{i}")
                            audio = gr.Audio(type="filepath", interactive=False, show_label=False,
                                             elem_id=f"generated-audio-{i}")
                            files = gr.File(file_count="multiple", interactive=False, show_label=False)
                slots.append((box, plot, readout, audio, files))

    def hidden_slots() -> list:
        return [value for _ in slots for value in (gr.update(visible=False), None, "", None, [])]

    @guarded(lambda message: [message, *hidden_slots()])
    def run(engine_name, mode, temperature, seed, tonic, count, use_attributes, rebracketing, complexity):
        attributes = ({"rebracketing": rebracketing, "temporal_complexity": complexity}
                      if use_attributes else None)
        params = GenerateParams(engine=engine_name, mode=mode, n=int(count), temperature=temperature,
                                seed=int(seed or 0), attributes=attributes, tonic=tonic)
        views = engine.generate(params)
        matches = sum(v.analysis is not None and v.analysis["mode"] == mode for v in views)
        summary = (f"{len(views)} segments; the analyzer hears {mode} in {matches}."
                   if mode != "WHITE" else f"{len(views)} unconditioned segments.")
        outputs = [summary]
        for i in range(MAX_RESULTS):
            if i < len(views):
                v = views[i]
                files = [v.midi_path] + ([v.wav_path] if v.wav_path else [])
                outputs += [gr.update(visible=True), piano_roll_figure(v.notes, "", v.color, height=260),
                            result_markdown(v), v.wav_path, files]
            else:
                outputs += [gr.update(visible=False), None, "", None, []]
        return outputs

    generate.click(run, [engine_name, mode, temperature, seed, tonic, count, use_attributes, rebracketing, complexity],
                   [status] + [c for slot in slots for c in slot])
