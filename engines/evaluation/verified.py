"""The raw model beside verified generation, measured the same way (what `evaluate --candidates K` adds):

    consistency   the analyzer's: the share of results heard in the asked mode, overall and per mode
    judge         the same by the learned judge (which also does the selecting: read the analyzer first)
    copies        near-copy and duplicate rates against the whole train split (engines/generation/copies.py)
    latency_ms    one requested segment at batch 1, median of `repeats` runs after a warm-up
    rejected      candidates rejected as copies

Held out: seeds start at HELD_OUT_SEED (never used while the defaults were chosen), and an engine that reads a
prompt gets the GPT evaluation's held-out phrasings (engines/evaluation/autoregressive_eval.mode_prompt), one per
result, each result then drawn on its own. For each mode the raw row draws n results with one candidate each and
the verified row n results with K candidates each, from the same seeds. `consistency.overall` of the engine's
own evaluation stays the raw figure: nothing flatters the model.
"""
from __future__ import annotations

import statistics
import time

from engines.config import Config
from engines.evaluation.diversity import copy_rates
from engines.evaluation.suite import _consistency, _hits, cache_key, cached
from engines.music.analyzer import MODES

HELD_OUT_SEED = 10_000


def verification_report(engine: str, checkpoint: str, cfg: Config, n_per_mode: int = 20, seed: int = 0,
                        candidates: int | None = None, repeats: int = 3, use_cache: bool = True,
                        verifier=None) -> dict:
    """{"candidates", "consistency" {"raw", "verified"}, "judge_consistency" {...}, "copies" {...},
    "latency_ms" {...}, "rejected_copies"} for an engine's checkpoint (module docstring)."""
    from pathlib import Path

    from engines.generation import GENERATORS, Request
    from engines.generation.verify import Verifier, candidates_per_result, draw

    generator = GENERATORS[engine].load(checkpoint)   # every draw below passes the verifier: it samples kept off
    # copies with the verifier's index (draw), as the studio does
    settings = generator.settings_for(cfg)
    verifier = verifier or Verifier.for_config(cfg)
    k = candidates or candidates_per_result(generator, Request(engine=engine), settings, verifier)
    judge = str(Path(cfg.model.checkpoints_dir) / "judge.pt")
    key = cache_key(f"{engine}-verified", checkpoint, {"n": n_per_mode, "seed": seed, "k": k, "judge_checkpoint": judge,
                                                       "settings": settings, "verify": cfg.generation.verify,
                                                       "held_out": HELD_OUT_SEED})

    def compute() -> dict:
        rows = {"raw": {}, "verified": {}}
        rejected = 0
        base = HELD_OUT_SEED + seed
        for m, mode in enumerate(MODES):
            for kind, count in (("raw", 1), ("verified", k)):
                if hasattr(settings, "prompt"):   # one held-out phrasing per result
                    from dataclasses import replace

                    from engines.evaluation.autoregressive_eval import mode_prompt

                    results = [draw(generator, Request(engine=engine, mode=mode, n=1, seed=base + 1000 * m + i,
                                                       candidates=count),
                                    replace(settings, prompt=mode_prompt(mode, i)), verifier, cfg=cfg)
                               for i in range(n_per_mode)]
                else:
                    results = [draw(generator, Request(engine=engine, mode=mode, n=n_per_mode, seed=base + 1000 * m,
                                                       candidates=count), settings, verifier, cfg=cfg)]
                rows[kind][mode] = [s for r in results for s in r.segments]
                rejected += sum(r.rejected_copies for r in results) if kind == "verified" else 0
        return {"candidates": k, "n_per_mode": n_per_mode, "rejected_copies": rejected, "seeds_from": base,
                "prompts": "held out (autoregressive_eval.mode_prompt)" if hasattr(settings, "prompt") else None,
                **_measures(rows, verifier), "latency_ms": _latency(generator, settings, verifier, k, repeats)}

    return cached(cfg, key, compute, use_cache)


def _measures(rows: dict, verifier) -> dict:
    out = {"consistency": {}, "judge_consistency": {}, "copies": {}}
    for kind, samples in rows.items():
        generated = [s for mode in samples for s in samples[mode] if len(s.notes)]
        requested = [mode for mode in samples for s in samples[mode] if len(s.notes)]
        heard = [verifier.analyzer.analyze(s).mode for s in generated]
        out["consistency"][kind] = _consistency(_hits(requested, heard))
        if verifier.judge is not None and generated:
            probabilities, _ = verifier.judge_readings(generated)
            judged = [MODES[int(p.argmax())] for p in probabilities]
            out["judge_consistency"][kind] = _consistency(_hits(requested, judged))
        out["copies"][kind] = copy_rates(generated, verifier.copies)
    return out


def _latency(generator, settings, verifier, k: int, repeats: int) -> dict:
    """Milliseconds for one requested segment, raw and verified (the copy index is built before timing)."""
    from engines.generation import Request
    from engines.generation.verify import draw

    verifier.copies  # noqa: B018  (built once, as the studio builds it at start-up)
    out = {}
    for kind, count in (("raw", 1), ("verified", k)):
        seeds = iter(range(1000, 2000))

        def one():
            draw(generator, Request(engine=generator.name, mode="RED", n=1, seed=next(seeds), candidates=count),
                 settings, verifier)

        one()  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            one()
            times.append(time.perf_counter() - start)
        out[kind] = round(statistics.median(times) * 1000, 1)
    import torch

    out["threads"] = torch.get_num_threads()
    return out


def merge_verification(result: dict, verification: dict) -> dict:
    """The engine's evaluate JSON with the raw and verified figures added beside today's keys: consistency.raw
    and .verified, judge.consistency.raw and .verified, copies.raw and .verified, latency_ms.raw and .verified
    (the engine's own latency figure stays as latency_ms.engine)."""
    result = dict(result)
    consistency = dict(result.get("consistency") or {})
    consistency.update(verification["consistency"])
    result["consistency"] = consistency
    judge = dict(result.get("judge") or {})
    if verification["judge_consistency"]:
        judge["consistency"] = {**judge.get("consistency", {}), **verification["judge_consistency"]}
    result["judge"] = judge
    result["copies"] = verification["copies"]
    engine_latency = result.get("latency_ms")
    result["latency_ms"] = {**verification["latency_ms"],
                            **({"engine": engine_latency} if engine_latency is not None else {})}
    result["verification"] = {key: verification[key] for key in ("candidates", "n_per_mode", "rejected_copies",
                                                                  "seeds_from", "prompts") if key in verification}
    return result
