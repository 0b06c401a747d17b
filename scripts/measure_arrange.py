"""Measure arranging over the example plans (assets/plans/) and several seeds: how many sections the analyzer
hears as asked (in the section kept, and in the first one written: the unchecked figure), the median jumps at
the joins beside the corpus's own at a phrase boundary, and the seconds per piece. docs/arrange.md quotes it.

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
from engines.arrange.joins import corpus_join_jumps  # noqa: E402
from engines.arrange.plan import load_plan  # noqa: E402
from engines.config import load_config  # noqa: E402
from engines.data.prepare import ensure_corpus_cache  # noqa: E402
from engines.generation.verify import Verifier  # noqa: E402
from engines.registry import ModelRegistry  # noqa: E402

PLANS = sorted((Path(__file__).resolve().parents[1] / "assets" / "plans").glob("*.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(overrides=args.set)
    verifier = Verifier.for_config(cfg)
    arranger = Arranger(ModelRegistry(cfg.model.checkpoints_dir), cfg, verifier)
    heard, first, axis, density, seconds, per_section = [], [], [], [], [], {}
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
    corpus = corpus_join_jumps(ensure_corpus_cache(cfg), verifier.analyzer)
    print(json.dumps({
        "plans": [p.stem for p in PLANS], "seeds": args.seeds, "overrides": args.set, "sections": len(heard),
        "heard_as_asked": round(float(np.mean(heard)), 3), "heard_as_asked_first_try": round(float(np.mean(first)), 3),
        "per_section": {name: round(float(np.mean(v)), 2) for name, v in per_section.items()},
        "joins": len(axis), "axis_jump_median": round(float(np.median(axis)), 3),
        "density_jump_median": round(float(np.median(density)), 3),
        "corpus": {"axis_jump_median": corpus["axis_jump"]["median"],
                   "density_jump_median": corpus["density_jump"]["median"], "pairs": corpus["pairs"]},
        "seconds_per_piece": round(float(np.mean(seconds)), 2)}, indent=1))


if __name__ == "__main__":
    main()
