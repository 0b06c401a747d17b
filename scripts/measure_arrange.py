"""Measure arranging over the example plans (assets/plans/) and several seeds: how many sections the analyzer
hears as asked (in the section kept, and in the first one written: the unchecked figure), the median jumps at
the joins beside the corpus's own at a phrase boundary, and the seconds per piece. Per join it also gives how
far apart the corpus holds its two modes: the median, over segments of the first mode, of the axis distance
to the nearest segment of the second (the least a join between them moves on 4-bar readings). docs/arrange.md
quotes it.

    .venv/bin/python scripts/measure_arrange.py --seeds 10 [--set generation.arrange.join_weight=0 ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engines.arrange.arranger import Arranger  # noqa: E402
from engines.arrange.joins import corpus_join_jumps, on_one_scale  # noqa: E402
from engines.arrange.plan import load_plan  # noqa: E402
from engines.config import load_config  # noqa: E402
from engines.data.prepare import ensure_corpus_cache  # noqa: E402
from engines.generation.verify import Verifier  # noqa: E402
from engines.registry import ModelRegistry  # noqa: E402

PLANS = sorted((Path(__file__).resolve().parents[1] / "assets" / "plans").glob("*.json"))


def axes_by_mode(cache) -> dict[str, np.ndarray]:
    """Per mode, the axes (n, 5) of its training segments on one scale (joins.on_one_scale), from the analysis
    stored in the cache."""
    from engines.music.analyzer import MODES

    rows = cache.segments[cache.split_indices("train")]
    axes = on_one_scale(rows["axes"])
    return {mode: axes[rows["mode"] == index] for index, mode in enumerate(MODES)}


def nearest_between(first: np.ndarray, second: np.ndarray, samples: int = 400, seed: int = 0) -> float:
    """The median over `samples` of the segments `first` (axes (n, 5)) of the axis distance (as joins.join_jump
    measures it) to the nearest of `second`."""
    chosen = first[np.random.default_rng(seed).choice(len(first), min(samples, len(first)), replace=False)]
    return round(float(np.median([np.abs(second - x).mean(axis=1).min() for x in chosen])), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(overrides=args.set)
    verifier = Verifier.for_config(cfg)
    arranger = Arranger(ModelRegistry(cfg.model.checkpoints_dir), cfg, verifier)
    heard, first, axis, density, seconds, per_section, per_join, modes = [], [], [], [], [], {}, {}, {}
    for path in PLANS:
        plan = load_plan(path)
        for seed in range(args.seeds):
            started = time.perf_counter()
            report = arranger.arrange(plan, seed=seed).report(verifier.analyzer)
            seconds.append(time.perf_counter() - started)
            for number, section in enumerate(report["sections"], start=1):
                heard.append(section["heard"] == section["asked"])
                first.append(section["heard_first_try"] == section["asked"])
                per_section.setdefault(f"{path.stem} {number} {section['asked']} by {section['engine']}",
                                       []).append(heard[-1])
            axis += [j["axis_jump"] for j in report["joins"]]
            density += [j["density_jump"] for j in report["joins"]]
            sections = report["sections"]
            for number, join in enumerate(report["joins"], start=1):
                name = (f"{path.stem} {number}: {sections[number - 1]['asked']} by {sections[number - 1]['engine']}"
                        f" -> {sections[number]['asked']} by {sections[number]['engine']}")
                per_join.setdefault(name, []).append((join["axis_jump"], join["density_jump"]))
                modes[name] = (sections[number - 1]["asked"], sections[number]["asked"])
    cache = ensure_corpus_cache(cfg)
    corpus = corpus_join_jumps(cache, verifier.analyzer)
    by_mode = axes_by_mode(cache)
    print(json.dumps({
        "plans": [p.stem for p in PLANS], "seeds": args.seeds, "overrides": args.set, "sections": len(heard),
        "heard_as_asked": round(float(np.mean(heard)), 3), "heard_as_asked_first_try": round(float(np.mean(first)), 3),
        "per_section": {name: round(float(np.mean(v)), 2) for name, v in per_section.items()},
        "joins": len(axis), "axis_jump_median": round(float(np.median(axis)), 3),
        "density_jump_median": round(float(np.median(density)), 3),
        "per_join": {name: {"axis_jump_median": round(float(np.median([a for a, _ in v])), 3),
                            "density_jump_median": round(float(np.median([d for _, d in v])), 3),
                            "corpus_nearest_between_modes": nearest_between(*(by_mode[m] for m in modes[name]))}
                     for name, v in per_join.items()},
        "corpus": {"axis_jump_median": corpus["axis_jump"]["median"],
                   "density_jump_median": corpus["density_jump"]["median"], "pairs": corpus["pairs"]},
        "seconds_per_piece": round(float(np.mean(seconds)), 2)}, indent=1))


if __name__ == "__main__":
    main()
