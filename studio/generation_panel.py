"""The generation panel of the Generate tab: pick an engine, a chromatic mode and settings; hear the variations.

Each result shows its piano roll coloured by the mode the analyzer hears, the analyzer's readout (and
whether it matches the requested mode), an audio player, and MIDI/WAV downloads.

The diffusion engine adds its sampler, steps, classifier-free guidance, classifier guidance (strength and
target) and inpainting (keep chosen bars of a result or an uploaded MIDI file, regenerate the rest). While it
samples, a live view shows every variation's current estimate with a progress bar; Stop ends sampling at the
current step and keeps what is there.

The autoregressive engine takes a text prompt (choosing a mode fills in its default prompt), temperature,
top-k, top-p, beam width and bars to write, and can continue the first bars of a result or an uploaded
MIDI file. While it writes, the live view shows each variation's piano roll growing token by token; Stop
keeps the bars written so far. When an audio codec is installed (codec.pt, or official EnCodec weights),
each result can also be heard through it: its render turned into audio tokens and decoded back.
"""
from __future__ import annotations

import gradio as gr

from engines.api import MODE_COLORS, MODES, GenerateParams, GenerationProgress, StudioEngine
from engines.data.captions import mode_named, prompt_for
from engines.errors import StudioError
from engines.music.features import PITCH_NAMES
from studio.widgets import (analysis_markdown, denoising_image, error_markdown, guarded_stream, mode_chip,
                            piano_roll_figure, progress_html)

MAX_RESULTS = 8
ENGINE_LABELS = {"vae": "VAE (conditional β-VAE)", "diffusion": "Diffusion (DDIM / DDPM, guided)",
                 "autoregressive": "Autoregressive (GPT, text prompts)"}
REBRACKETING_CHOICES = ["don't steer", "high", "low"]
INPAINT_SOURCES = ["a result below", "an uploaded MIDI file"]


def result_markdown(view) -> str:
    if view.analysis is None:
        return f"**{view.title}**\n\nThe model decoded an empty segment at this seed; try another seed."
    heard = view.analysis["mode"]
    verdict = "matches" if heard == view.requested_mode else f"asked for {view.requested_mode}"
    return (f"**{view.title}** — analyzer hears {mode_chip(heard, view.color)} ({verdict})\n\n"
            + analysis_markdown(view.analysis, view.color, heading=False))


def guidance_target(toward_mode: bool, rebracketing: str) -> str:
    """The engine's target text from the two controls ("mode", "rebracketing=high", both, or neither)."""
    parts = (["mode"] if toward_mode else []) + ([f"rebracketing={rebracketing}"]
                                                 if rebracketing in ("high", "low") else [])
    return ",".join(parts)


def inpainting_source(use: bool, source: str, result_number, upload, results: list[str]) -> str | None:
    """(init MIDI path, or None) from the inpainting controls and this user's last results."""
    if not use:
        return None
    if source == INPAINT_SOURCES[1]:
        if not upload:
            raise StudioError("upload a MIDI file to inpaint, or choose a result below as the start")
        return upload
    k = int(result_number or 1)
    if not results:
        raise StudioError("generate first: inpainting starts from one of the results below")
    if not 1 <= k <= len(results):
        raise StudioError(f"there are {len(results)} results; pick a number from 1 to {len(results)}")
    return results[k - 1]


def build_generation_panel(engine: StudioEngine) -> None:
    available = engine.engines_available()
    choices = [(ENGINE_LABELS[e], e) for e in available] or [(ENGINE_LABELS["vae"], "vae")]
    preferred = engine.cfg.model.generative.type  # the engine the tab starts with, when it has a checkpoint
    first = preferred if preferred in available else choices[0][1]
    sampling = engine.cfg.generation.sampling
    if not available:
        gr.Markdown(f"No trained engine checkpoint in `{engine.cfg.model.checkpoints_dir}` yet. Train one with "
                    "`python -m engines train --engine vae` and copy its `best.pt` there as `vae.pt`.",
                    elem_id="generate-missing")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            engine_name = gr.Radio(choices, value=first, label="Engine", elem_id="generate-engine")
            mode = gr.Radio(list(MODES) + ["WHITE"], value="RED", label="Chromatic mode (WHITE = none)",
                            elem_id="generate-mode")
            temperature = gr.Slider(0.1, 2.0, sampling.temperature if first == "autoregressive" else 1.0, step=0.05,
                                    label="Temperature", visible=first != "diffusion", elem_id="generate-temperature")
            with gr.Group(visible=first == "autoregressive") as autoregressive_box:
                prompt = gr.Textbox(prompt_for("RED"), label="Prompt", lines=2, elem_id="generate-prompt",
                                    info='e.g. "a calm, intimate BLUE phrase" or "a RED segment with high '
                                         'temporal complexity"; choosing a mode fills in its prompt')
                with gr.Row():
                    top_k = gr.Slider(0, 200, sampling.top_k, step=1, label="Top-k (0 = off)")
                    top_p = gr.Slider(0.05, 1.0, sampling.top_p, step=0.05, label="Top-p (1 = off)")
                prompt_guidance = gr.Slider(0, 8, sampling.prompt_guidance, step=0.5,
                                            label="Prompt guidance (classifier-free; 1 = plain conditional)")
                with gr.Row():
                    beam_width = gr.Slider(1, 8, 1, step=1, label="Beam width (1 = sample; > 1: one result)")
                    max_bars = gr.Slider(1, 8, engine.cfg.data.segment_bars, step=1, label="Bars to write")
                with gr.Accordion("Continue a segment", open=False):
                    use_continuation = gr.Checkbox(False, label="Continue", elem_id="continue-on")
                    continue_source = gr.Radio(INPAINT_SOURCES, value=INPAINT_SOURCES[0], label="Start from")
                    continue_result = gr.Number(1, precision=0, minimum=1, maximum=MAX_RESULTS,
                                                label="Result number")
                    continue_upload = gr.File(file_types=[".mid", ".midi"], type="filepath", label="MIDI file")
                    continue_bars = gr.Slider(1, 7, 2, step=1, label="Bars to keep and continue from")
            with gr.Group(visible=first == "diffusion") as diffusion_box:
                sampler = gr.Radio(["ddim", "ddpm", "dpmsolver++"], value="ddim", label="Sampler",
                                   info="DPM-Solver++ does in 10-20 steps what DDIM does in 50", elem_id="generate-sampler")
                steps = gr.Slider(5, 1000, sampling.num_steps, step=5, label="Steps", elem_id="generate-steps")
                guidance = gr.Slider(0, 8, sampling.guidance_scale, step=0.5,
                                     label="Guidance scale (classifier-free; 1 = plain conditional)")
                with gr.Accordion("Classifier guidance", open=False):
                    classifier_scale = gr.Slider(0, 10, 0, step=0.5, label="Strength (0 = off)",
                                                 elem_id="generate-classifier-scale",
                                                 info=f"{sampling.classifier_scale:g} is a good start")
                    toward_mode = gr.Checkbox(True, label="Toward the chosen mode")
                    rebracketing_target = gr.Radio(REBRACKETING_CHOICES, value="don't steer",
                                                   label="Rebracketing", elem_id="generate-rebracketing-target")
                    classifier_space = gr.Radio(
                        [("on the clean estimate (x0)", "x0"), ("on the noisy sample (x_t, Dhariwal & Nichol)", "x_t")],
                        value=sampling.classifier_space, label="Gradient taken")
                with gr.Accordion("Inpainting: keep bars, regenerate the rest", open=False):
                    use_inpainting = gr.Checkbox(False, label="Inpaint", elem_id="inpaint-on")
                    inpaint_source = gr.Radio(INPAINT_SOURCES, value=INPAINT_SOURCES[0], label="Start from")
                    result_number = gr.Number(1, precision=0, minimum=1, maximum=MAX_RESULTS,
                                              label="Result number", elem_id="inpaint-result")
                    inpaint_upload = gr.File(file_types=[".mid", ".midi"], type="filepath",
                                             label="MIDI file (its first 4 bars)")
                    keep_bars = gr.CheckboxGroup(["1", "2", "3", "4"], value=["1", "2"], label="Bars to keep",
                                                 elem_id="inpaint-keep")
            seed = gr.Number(0, precision=0, label="Seed", minimum=0)
            tonic = gr.Dropdown(list(PITCH_NAMES), value="C", label="Tonic (the key is major or minor as generated; "
                                "inpainting keeps the key of the segment it starts from)")
            count = gr.Slider(1, MAX_RESULTS, 4, step=1, label="Variations", elem_id="generate-count")
            with gr.Accordion("Rhythm attributes", open=False):
                use_attributes = gr.Checkbox(False, label="Ask for these values")
                rebracketing = gr.Slider(0, 1, 0.5, step=0.05, label="Rebracketing")
                complexity = gr.Slider(0, 1, 0.5, step=0.05, label="Temporal complexity")
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="generate-button")
                stop = gr.Button("Stop", variant="stop", elem_id="generate-stop")
            status = gr.Markdown(elem_id="generate-status")
        with gr.Column(scale=3):
            live = gr.Image(label="Live: each variation's current estimate (diffusion) or its notes so far (GPT)",
                            type="numpy", format="png", interactive=False, visible=False, elem_id="generate-live",
                            buttons=[])
            slots = []
            for i in range(MAX_RESULTS):
                with gr.Group(visible=False) as box:
                    with gr.Row():
                        plot = gr.Plot(show_label=False, elem_id=f"generated-roll-{i}")
                        with gr.Column():
                            readout = gr.Markdown(elem_id=f"generated-readout-{i}")
                            audio = gr.Audio(type="filepath", interactive=False, show_label=False,
                                             elem_id=f"generated-audio-{i}")
                            codec_audio = gr.Audio(type="filepath", interactive=False, visible=False,
                                                   elem_id=f"generated-codec-audio-{i}")
                            files = gr.File(file_count="multiple", interactive=False, show_label=False)
                slots.append((box, plot, readout, audio, codec_audio, files))
    results_state = gr.State([])  # this user's last results, as MIDI paths (inpainting starts from them)

    def hidden_slots() -> list:
        return [value for _ in slots for value in (gr.update(visible=False), None, "", None,
                                                   gr.update(value=None, visible=False), [])]

    def show_engine(name):  # the temperature slider is the VAE's prior temperature or the GPT's sampling one
        return (gr.update(visible=name != "diffusion", value=sampling.temperature if name == "autoregressive" else 1.0),
                gr.update(visible=name == "diffusion"), gr.update(visible=name == "autoregressive"))

    engine_name.change(show_engine, engine_name, [temperature, diffusion_box, autoregressive_box])
    # choosing a mode fills in its prompt (WHITE: a prompt naming none)
    mode.change(lambda m: prompt_for(None if m == "WHITE" else m), mode, prompt)

    def on_error(message):
        return [message, gr.update(visible=False), gr.skip(), *hidden_slots()]

    @guarded_stream(on_error)
    def run(engine_name, mode, temperature, seed, tonic, count, use_attributes, rebracketing, complexity,
            sampler, steps, guidance, classifier_scale, toward_mode, rebracketing_target, classifier_space,
            use_inpainting, inpaint_source, result_number, inpaint_upload, keep_bars, prompt, top_k, top_p,
            beam_width, max_bars, use_continuation, continue_source, continue_result, continue_upload,
            continue_bars, prompt_guidance, results, request: gr.Request):
        attributes = ({"rebracketing": rebracketing, "temporal_complexity": complexity}
                      if use_attributes else None)
        diffusion, autoregressive = engine_name == "diffusion", engine_name == "autoregressive"
        init = inpainting_source(diffusion and use_inpainting, inpaint_source, result_number, inpaint_upload, results)
        continuing = autoregressive and use_continuation
        if continuing:
            init = inpainting_source(True, continue_source, continue_result, continue_upload, results)
        if autoregressive and not (prompt or "").strip():
            raise StudioError("write a prompt, or choose a mode to fill one in")
        if autoregressive:  # what is asked for is the mode the prompt names; the radio only fills one in
            mode = mode_named(prompt) or "WHITE"
        target = guidance_target(toward_mode, rebracketing_target)
        params = GenerateParams(engine=engine_name, mode=mode, n=int(count), temperature=temperature,
                                seed=int(seed or 0), attributes=attributes,
                                tonic=None if init else tonic,  # inpainting keeps the key it starts from
                                sampler=sampler, steps=int(steps), guidance_scale=float(guidance),
                                classifier_scale=float(classifier_scale) if target else 0.0,  # nothing to steer to
                                target=target,
                                classifier_space=classifier_space, init_midi=init,
                                keep_bars=[int(b) for b in keep_bars or []] if init and diffusion else None,
                                prompt=prompt if autoregressive else None, top_k=int(top_k), top_p=float(top_p),
                                beam_width=int(beam_width), max_bars=int(max_bars),
                                prompt_guidance=float(prompt_guidance),
                                continue_bars=int(continue_bars) if continuing else 0)
        views, stopped_at = None, None
        for item in engine.generate_stream(params, run_id=request.session_hash if request else None):
            if isinstance(item, GenerationProgress):
                stopped_at = (item.step, item.total)
                image = denoising_image(item.sounding, item.bar_steps, MODE_COLORS[mode], engine.cfg.data.pitch_low)
                label = (f"Writing: token {item.step} (at most {item.total})" if autoregressive
                         else f"Denoising: step {item.step} of {item.total}")
                yield [progress_html(item.step, item.total, label),
                       gr.update(value=image, visible=True), gr.skip(), *[gr.skip()] * (6 * len(slots))]
            else:
                views = item
        yield _results(views, mode, stopped_at, diffusion or autoregressive, autoregressive)

    def _results(views, mode, stopped_at, live_shown: bool, autoregressive: bool = False) -> list:
        matches = sum(v.analysis is not None and v.analysis["mode"] == mode for v in views)
        summary = (f"{len(views)} segments; the analyzer hears {mode} in {matches}."
                   if mode != "WHITE" else f"{len(views)} unconditioned segments.")
        if stopped_at and stopped_at[0] < stopped_at[1] and not autoregressive:
            summary += f" Stopped at step {stopped_at[0]} of {stopped_at[1]}: these are that step's estimates."
        outputs = [summary, gr.skip() if live_shown else gr.update(visible=False), [v.midi_path for v in views]]
        for i in range(MAX_RESULTS):
            if i < len(views):
                v = views[i]
                files = [v.midi_path] + ([v.wav_path] if v.wav_path else [])
                codec = (gr.update(value=v.codec_wav_path, visible=True,
                                   label=f"Through the audio codec: {v.audio_tokens} tokens, decoded")
                         if v.codec_wav_path else gr.update(value=None, visible=False))
                outputs += [gr.update(visible=True), piano_roll_figure(v.notes, "", v.color, height=260),
                            result_markdown(v), v.wav_path, codec, files]
            else:
                outputs += [gr.update(visible=False), None, "", None, gr.update(value=None, visible=False), []]
        return outputs

    def request_stop(request: gr.Request):
        if request is None or not engine.request_stop(request.session_hash):
            return error_markdown("Nothing is generating right now.")
        return gr.update()

    inputs = [engine_name, mode, temperature, seed, tonic, count, use_attributes, rebracketing, complexity, sampler,
              steps, guidance, classifier_scale, toward_mode, rebracketing_target, classifier_space, use_inpainting,
              inpaint_source, result_number, inpaint_upload, keep_bars, prompt, top_k, top_p, beam_width, max_bars,
              use_continuation, continue_source, continue_result, continue_upload, continue_bars, prompt_guidance,
              results_state]
    generate.click(run, inputs, [status, live, results_state] + [c for slot in slots for c in slot],
                   show_progress="minimal")
    stop.click(request_stop, None, status, queue=False)
