"""Asked against heard on the five axes: does an engine land where a musician asks it to?

    axes_report(engine, checkpoint, cfg, n=160)
      -> {"mae", "mae_unconditioned", "per_axis", "per_axis_unconditioned", "n", "empty", "seeds_from", "copies"}

For each of n segments drawn (seeded) from the held-out test split, its five axes are the target: the engine
is asked for them with no mode (WHITE), one candidate, no checking (the raw model), and the analyzer measures
the result. `mae` is the mean absolute error over the five axes in unit scale (valence -1..1 counted as
0..1, like the others); `mae_unconditioned` is the same error for a sample drawn with nothing asked, from the
same seeds: the floor a condition has to beat. The GPT is asked with a prompt naming no mode, its attribute
phrase after it. A checkpoint that cannot take the axes (one trained before them) measures about its floor.
Empty outputs are left out and counted. `copies` holds the near-copy rates of the asked results (the suite's
diversity.copy_rates): an engine could land on the asked axes by writing out a training segment that has them.
"""
from __future__ import annotations

import numpy as np

from engines.config import Config
from engines.evaluation.diversity import copy_rates
from engines.evaluation.suite import cache_key, cached, copy_index, load_generator
from engines.evaluation.verified import HELD_OUT_SEED
from engines.models.conditioning import unit_value
from engines.music.analyzer import AXES, ChromaticAnalyzer, WHITE


AXES_VERSION = 2   # part of the cache key: 2 added the asked results' copy rates


def held_out_targets(cfg: Config, n: int, seed: int = 0) -> list[dict]:
    """n target axes {axis: value, analyzer scale} of test-split segments, drawn with `seed`."""
    from engines.data.prepare import ensure_corpus_cache

    cache = ensure_corpus_cache(cfg)
    rows = cache.split_indices("test")
    picked = np.sort(np.random.default_rng(seed).choice(rows, min(n, len(rows)), replace=False))
    axes = cache.segments["axes"][picked]
    return [{a: round(float(v), 4) for a, v in zip(AXES, row)} for row in axes]


def axes_error(targets: list[dict], heard: list[dict | None]) -> tuple[float | None, dict]:
    """Mean absolute error in unit scale over the pairs whose result had notes: (overall, per axis)."""
    pairs = [(t, h) for t, h in zip(targets, heard) if h is not None]
    if not pairs:
        return None, {}
    errors = np.array([[abs(unit_value(a, t[a]) - unit_value(a, h[a])) for a in AXES] for t, h in pairs])
    return round(float(errors.mean()), 4), {a: round(float(e), 4) for a, e in zip(AXES, errors.mean(0))}


def axes_report(engine: str, checkpoint: str, cfg: Config, n: int = 160, seed: int = 0,
                use_cache: bool = True) -> dict:
    from engines.generation import Request
    from engines.generation.verify import draw

    generator = load_generator(engine, checkpoint, cfg)
    settings = generator.settings_for(cfg)
    if hasattr(settings, "prompt"):   # the GPT reads a prompt: one without a mode (its attribute phrase follows)
        from dataclasses import replace

        from engines.data.captions import prompt_for

        settings = replace(settings, prompt=prompt_for(None))
    key = cache_key(f"{engine}-axes", checkpoint, {"n": n, "seed": seed, "settings": settings,
                                                   "held_out": HELD_OUT_SEED, "version": AXES_VERSION})

    def compute() -> dict:
        analyzer = ChromaticAnalyzer(cfg.analyzer)
        targets = held_out_targets(cfg, n, seed)
        base = HELD_OUT_SEED + seed
        heard, asked = {"asked": [], "unconditioned": []}, []
        for i, target in enumerate(targets):
            for kind, attributes in (("asked", target), ("unconditioned", None)):
                (segment,) = draw(generator, Request(engine=engine, mode=WHITE, n=1, seed=base + i, candidates=1,
                                                     attributes=attributes), settings, None, cfg=cfg).segments
                heard[kind].append(dict(analyzer.analyze(segment).axes) if len(segment.notes) else None)
                if attributes is not None:
                    asked.append(segment)
        mae, per_axis = axes_error(targets, heard["asked"])
        floor, per_axis_floor = axes_error(targets, heard["unconditioned"])
        return {"n": len(targets), "seeds_from": base, "mae": mae, "mae_unconditioned": floor,
                "per_axis": per_axis, "per_axis_unconditioned": per_axis_floor,
                "empty": sum(h is None for h in heard["asked"]), "copies": copy_rates(asked, copy_index(cfg))}

    return cached(cfg, key, compute, use_cache)
