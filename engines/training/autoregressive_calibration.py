"""The GPT's sampling settings per mode, measured once for a checkpoint and stored in it (the finalize step of
`python -m engines train --engine autoregressive --finalize-only`).

Why: one temperature and prompt guidance do not suit every mode. At the studio's former defaults (0.8, guidance
3) the shipped GPT wrote a GREEN training tune again in every one of 32 candidates, while at guidance 1.5 a
sixth of them were new GREEN music; RED was heard as asked in 19 % of candidates at guidance 3 and in about
half at 1.5 and temperature 1.0, and VIOLET did best at 3. Classifier-free guidance pushes toward the prompt,
and where a mode has few training tunes, the prompt's nearest point is one of them.

What: for every mode, candidates are sampled from its default prompt at each setting of a small grid (seeds
CALIBRATION_SEED.., never the evaluation's held-out seeds from 10,000), and the setting whose candidates the
analyzer most often hears in the asked mode while the copy check finds no near copy of a training segment is
kept (ties keep the setting listed first: the former defaults). A request that sets temperature or prompt
guidance itself gets what it set; one that leaves them unset gets its mode's (AutoregressiveSettings).
"""
from __future__ import annotations

import time

import numpy as np

from engines.config import Config

GUIDANCE = (3.0, 2.0, 1.5, 1.0, 4.0)   # prompt guidance scales tried (the first: the former default)
TEMPERATURES = (0.8, 1.0)              # temperatures tried (the first: the former default)
CALIBRATION_SEED = 500
SEEDS = 3                              # seeds per setting and mode
ROWS = 16                              # candidates per seed


def calibrate_sampling(generator, cfg: Config, cache, seeds: int = SEEDS, rows: int = ROWS, modes=None,
                       grid=None) -> dict:
    """{"modes": {mode: {"temperature", "prompt_guidance", "heard_new", "heard", "copies"}}, "grid": [...],
    "candidates_per_setting", "seconds"}: per mode (default every mode) the best setting of the grid (default
    GUIDANCE x TEMPERATURES; module docstring) and what it measured, beside the first setting's figures
    ("default": {...}, the former defaults)."""
    from engines.generation import Request
    from engines.generation.copies import CopyIndex
    from engines.music.analyzer import MODES, ChromaticAnalyzer

    started = time.time()
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    copies = CopyIndex.build(cache, threshold=cfg.generation.verify.copy_threshold)
    grid = grid or [(g, t) for t in TEMPERATURES for g in GUIDANCE]
    out = {}
    for mode in modes or MODES:
        measured = []
        for guidance, temperature in grid:
            settings = generator.settings_for(cfg, {"prompt_guidance": guidance, "temperature": temperature,
                                                    "prompt": None})   # the mode's own prompt
            heard, new = [], []
            for s in range(seeds):
                request = Request("autoregressive", mode=mode, n=rows, seed=CALIBRATION_SEED + s, settings=settings)
                for segment in generator.run(request):
                    has_notes = len(segment.notes) > 0
                    heard.append(has_notes and analyzer.analyze(segment).mode == mode)
                    new.append(has_notes and copies.nearest(segment)[0] < copies.threshold)
            heard, new = np.array(heard), np.array(new)
            measured.append({"temperature": temperature, "prompt_guidance": guidance,
                             "heard_new": round(float(np.mean(heard & new)), 4),
                             "heard": round(float(heard.mean()), 4), "copies": round(float(1 - new.mean()), 4)})
        best = max(measured, key=lambda m: m["heard_new"])   # the first of equals: the grid's order
        out[mode] = {**best, "default": measured[0]}
    return {"modes": out, "grid": [list(cell) for cell in grid], "candidates_per_setting": seeds * rows,
            "seed": CALIBRATION_SEED, "seconds": round(time.time() - started, 1)}
