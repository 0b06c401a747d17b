"""The studio's generation API: one named endpoint per engine, for scripts and other programs.

    from gradio_client import Client
    client = Client("http://127.0.0.1:7860/")
    results = client.predict(mode="BLUE", n=2, seed=7, tempo=90, metre="3/4", instrument=41,
                             api_name="/generate_diffusion")
    results[0]["midi"], results[0]["analysis"]["mode"]

Each endpoint takes named parameters with defaults and returns a list of results, each
{"title", "midi": file, "audio": file or None, "analysis": {...} or None, "verification": {...}}; gradio_client
downloads the files. A bad value comes back as an error naming it (gradio_client raises AppError with that
message). The UI's own events are private: these are the API.
"""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from engines.api import Request, StudioEngine
from engines.errors import StudioError
from studio.widgets import api_errors

MAX_API_RESULTS = 8   # results one call may ask for (the Generate tab's most)


def file_data(path: str | None, mime_type: str) -> dict | None:
    return None if not path else gr.FileData(path=path, orig_name=Path(path).name, mime_type=mime_type).model_dump()


def result_json(view) -> dict:
    return {"title": view.title, "midi": file_data(view.midi_path, "audio/midi"),
            "audio": file_data(view.wav_path, "audio/wav"), "analysis": view.analysis,
            "requested_mode": view.requested_mode, "verification": view.verification}


def run_request(engine: StudioEngine, name: str, mode: str, n: int, seed: int, tempo, metre, scale, tonic,
                instrument, dynamics, candidates, settings) -> list[dict]:
    if name not in engine.engines_available():
        raise StudioError(f"the {name} engine has no checkpoint in this studio")
    try:
        n, seed = int(n), int(seed)
    except (TypeError, ValueError):
        raise StudioError(f"n and seed must be whole numbers, got n={n!r}, seed={seed!r}") from None
    if not 1 <= n <= MAX_API_RESULTS:
        raise StudioError(f"n must lie in 1..{MAX_API_RESULTS}, got {n}")
    if settings is not None and not isinstance(settings, dict):
        raise StudioError(f"settings must be a JSON object of the engine's settings, got {settings!r}")
    request = Request(engine=name, mode=mode or "WHITE", n=n, seed=seed, tempo=tempo, metre=metre or None,
                      scale=scale or None, tonic=tonic or None, instrument=instrument, dynamics=dynamics or None,
                      candidates=None if candidates is None else int(candidates), settings=settings or None)
    # no render through the audio codec: a result here has none (it cost a GPT request a third of its time)
    return [result_json(view) for view in engine.generate(request, codec=False)]


def build_generation_api(engine: StudioEngine) -> None:
    """Register /generate_vae, /generate_diffusion and /generate_autoregressive."""

    @api_errors
    def generate_vae(mode: str = "RED", n: int = 4, seed: int = 0, tempo: float | None = None,
                     metre: str | None = None, scale: str | None = None, tonic: str | None = None,
                     instrument: int | None = None, dynamics: str | None = None, candidates: int | None = None,
                     settings: dict | None = None) -> list[dict]:
        """Segments from the conditional VAE.

        Args:
            mode: a chromatic mode (BLACK, RED, ORANGE, YELLOW, GREEN, BLUE, INDIGO, VIOLET) or WHITE for none
            n: results, 1-8
            seed: the random seed; the same request and seed give the same results
            tempo: beats (quarter notes) per minute, 30-300; None: the engine's
            metre: e.g. "3/4" (2/4, 6/8, 4/4, 4/2, 3/4, 2/2, 3/8, 3/2, 9/8, 6/4, 12/8, 5/4); None: the engine's
            scale: "major" or "minor"; None: as generated
            tonic: the key's tonic, e.g. "G"; None: C
            instrument: General MIDI program 1-128 (1 = piano, 41 = violin); None: piano
            dynamics: pp, p, mp, mf, f or ff; None: mf
            candidates: candidates the judge ranks per result, 1-32 (1 = the raw model); None: the engine's default
            settings: the engine's own settings by name, e.g. {"temperature": 0.8}
        """
        return run_request(engine, "vae", mode, n, seed, tempo, metre, scale, tonic, instrument, dynamics,
                           candidates, settings)

    @api_errors
    def generate_diffusion(mode: str = "RED", n: int = 4, seed: int = 0, tempo: float | None = None,
                           metre: str | None = None, scale: str | None = None, tonic: str | None = None,
                           instrument: int | None = None, dynamics: str | None = None,
                           candidates: int | None = None, settings: dict | None = None) -> list[dict]:
        """Segments from the diffusion engine (DDIM, 50 steps unless settings say otherwise).

        Args:
            mode: a chromatic mode (BLACK, RED, ORANGE, YELLOW, GREEN, BLUE, INDIGO, VIOLET) or WHITE for none
            n: results, 1-8
            seed: the random seed; the same request and seed give the same results
            tempo: beats (quarter notes) per minute, 30-300; None: the engine's
            metre: e.g. "3/4" (2/4, 6/8, 4/4, 4/2, 3/4, 2/2, 3/8, 3/2, 9/8, 6/4, 12/8, 5/4); None: drawn per result
            scale: "major" or "minor"; None: as generated
            tonic: the key's tonic, e.g. "G"; None: C
            instrument: General MIDI program 1-128 (1 = piano, 41 = violin); None: piano
            dynamics: pp, p, mp, mf, f or ff; None: mf
            candidates: candidates the judge ranks per result, 1-32 (1 = the raw model); None: the engine's default
            settings: the engine's own settings by name, e.g. {"steps": 20, "sampler": "dpmsolver++"}
        """
        return run_request(engine, "diffusion", mode, n, seed, tempo, metre, scale, tonic, instrument, dynamics,
                           candidates, settings)

    @api_errors
    def generate_autoregressive(prompt: str | None = None, mode: str = "RED", n: int = 4, seed: int = 0,
                                tempo: float | None = None, metre: str | None = None, scale: str | None = None,
                                tonic: str | None = None, instrument: int | None = None,
                                dynamics: str | None = None, candidates: int | None = None,
                                settings: dict | None = None) -> list[dict]:
        """Segments from the GPT, written from a text prompt.

        Args:
            prompt: e.g. "a calm, intimate BLUE phrase"; the mode it names is the one asked for. None: the
                prompt of `mode`
            mode: the mode whose prompt is used when no prompt is given (WHITE: a prompt naming none)
            n: results, 1-8
            seed: the random seed; the same request and seed give the same results
            tempo: beats (quarter notes) per minute, 30-300; None: the one the GPT writes
            metre: e.g. "3/4" (2/4, 6/8, 4/4, 4/2, 3/4, 2/2, 3/8, 3/2, 9/8, 6/4, 12/8, 5/4); None: the GPT's choice
            scale: "major" or "minor"; None: as generated
            tonic: the key's tonic, e.g. "G"; None: the key the GPT writes in
            instrument: General MIDI program 1-128 (1 = piano, 41 = violin); None: piano
            dynamics: pp, p, mp, mf, f or ff; None: mf
            candidates: candidates the judge ranks per result, 1-32 (1 = the raw model); None: the engine's default
            settings: the engine's own settings by name, e.g. {"temperature": 0.9, "max_bars": 8}
        """
        from engines.api import MODES
        from engines.data.captions import prompt_for

        if (mode or "WHITE").upper() not in (*MODES, "WHITE"):
            raise StudioError(f"unknown mode '{mode}'; choose one of {', '.join(MODES)} or WHITE")
        if settings is not None and not isinstance(settings, dict):
            raise StudioError(f"settings must be a JSON object of the engine's settings, got {settings!r}")
        settings = dict(settings or {})
        if prompt is not None and not isinstance(prompt, str):
            raise StudioError(f"prompt must be text, got {prompt!r}")
        settings["prompt"] = prompt if prompt and prompt.strip() else prompt_for(
            None if (mode or "WHITE").upper() == "WHITE" else mode)
        return run_request(engine, "autoregressive", mode, n, seed, tempo, metre, scale, tonic, instrument,
                           dynamics, candidates, settings)

    # every generation request, here and in the Generate tab, shares one limit, wide enough for batches to fill
    # (generation.batching.concurrency; engines/generation/batching.py)
    for fn in (generate_vae, generate_diffusion, generate_autoregressive):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=engine.cfg.generation.batching.requests_at_once,
               concurrency_id="generation")
