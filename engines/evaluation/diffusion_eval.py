"""`python -m engines evaluate --engine diffusion`: the diffusion issue's bars, measured on the held-out split.

    consistency   share of samples the analyzer assigns the requested mode (DDIM, classifier-free guidance at
                  the configured scale), per mode and overall
    frechet       Fréchet distance between the analyzer-feature embeddings (engines/evaluation/frechet.py) of
                  those samples and of held-out test segments moved to C (the engine writes in C), with
                  a real-vs-real baseline: validation against test segments, as many as there are samples
    steps_table   the same for DDIM at 10 / 25 / 50 / 100 / 1000 steps, DDPM at 1000 and DPM-Solver++ at 10
                  and 20, with seconds per segment (batches of one mode at a time)
    guidance      classifier guidance toward the requested mode and high rebracketing (the guidance
                  classifier at the suggested strength (3) in generation.sampling.diffusion.classifier_space, on top of
                  classifier-free guidance), with
                  the same modes and seeds as the unguided samples above: mean measured rebracketing of both,
                  the lift, and the consistency of the guided samples
    latency_ms    one segment, DDIM at the configured number of steps, median of three
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from engines.config import Config
from engines.errors import StudioError
from engines.evaluation.frechet import feature_embedding, frechet_distance, standardise
from engines.evaluation.suite import copy_index, real_sample
from engines.generation.diffusion import SUGGESTED_CLASSIFIER_SCALE
from engines.models.guidance_classifier import GuidanceTarget, TrainedGuidanceClassifier
from engines.models.trained_diffusion import TrainedDiffusion
from engines.music.analyzer import MODES, ChromaticAnalyzer

TABLE = (("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100), ("ddim", 1000), ("ddpm", 1000),
         ("dpmsolver++", 10), ("dpmsolver++", 20))


def _analyses(segments_by_mode: dict, analyzer: ChromaticAnalyzer) -> dict:
    """mode -> the Analysis of each sample (None for an empty one: it is in no mode)."""
    out = {}
    for mode, segments in segments_by_mode.items():
        out[mode] = []
        for segment in segments:
            try:
                out[mode].append(analyzer.analyze(segment))
            except StudioError:
                out[mode].append(None)
    return out


def _consistency(analyses: dict) -> dict:
    """From _analyses: the share of each mode's samples heard in that mode, and their mean."""
    per_mode = {mode: round(sum(a is not None and a.mode == mode for a in found) / max(len(found), 1), 4)
                for mode, found in analyses.items()}
    return {"overall": round(float(np.mean(list(per_mode.values()))), 4), "per_mode": per_mode}


def _mean_rebracketing(analyses: dict) -> float:
    """From _analyses: mean measured rebracketing over all samples (an empty one counts 0: it regroups nothing)."""
    values = [a.rebracketing if a is not None else 0.0 for found in analyses.values() for a in found]
    return round(float(np.mean(values)), 4)


def _generate(engine: TrainedDiffusion, n_per_mode: int, sampler: str, steps: int, guidance: float,
              seed: int, **guided) -> tuple[dict, float]:
    """Samples per mode and seconds per segment; `guided` passes classifier_scale and target through."""
    start, out = time.perf_counter(), {}
    for i, mode in enumerate(MODES):
        out[mode] = engine.sample(mode, n=n_per_mode, steps=steps, sampler=sampler, guidance_scale=guidance,
                                  seed=seed + i, **guided)
    return out, (time.perf_counter() - start) / (n_per_mode * len(MODES))


def _guidance(engine: TrainedDiffusion, unguided: dict, analyzer: ChromaticAnalyzer, n_per_mode: int, steps: int,
              guidance: float, scale: float, seed: int, space: str = "x0", copies=None) -> dict:
    """Classifier guidance toward each requested mode and high rebracketing, against the unguided samples of
    the same modes and seeds (`unguided`: their _analyses)."""
    target = GuidanceTarget(mode=True, rebracketing="high", space=space)
    guided, seconds = _generate(engine, n_per_mode, "ddim", steps, guidance, seed, classifier_scale=scale,
                                target=target, copies=copies)
    guided = _analyses(guided, analyzer)
    before, after = _mean_rebracketing(unguided), _mean_rebracketing(guided)
    consistency = _consistency(guided)
    return {"classifier_scale": scale, "space": space, "target": target.describe(), "rebracketing_unguided": before,
            "rebracketing_guided": after, "rebracketing_lift": round(after - before, 4),
            "consistency_guided": consistency["overall"], "consistency_guided_per_mode": consistency["per_mode"],
            "seconds_per_segment": round(seconds, 4)}


def _frechet(segments_by_mode: dict, real: np.ndarray) -> float | None:
    """None when fewer than two samples hold notes (a distribution needs at least two points)."""
    generated = feature_embedding([s for group in segments_by_mode.values() for s in group])
    if len(generated) < 2:
        return None
    real_z, generated_z = standardise(real, generated)
    return round(frechet_distance(generated_z, real_z), 4)


def evaluate_diffusion(checkpoint: str, cfg: Config, n_per_mode: int = 50, table_per_mode: int = 4,
                       real_count: int = 1000, seed: int = 0, with_table: bool = True,
                       classifier: str | None = None) -> dict:
    """The report (module docstring). `classifier`: a guidance-classifier checkpoint; without one, "guidance"
    says none was found."""
    torch.manual_seed(seed)
    engine = TrainedDiffusion.load(checkpoint)
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    sampling = cfg.generation.sampling.diffusion
    steps, guidance = min(sampling.steps, engine.num_steps), sampling.guidance_scale
    real = feature_embedding(real_sample(cfg, "test", real_count, seed, in_c=True))
    copies = copy_index(cfg) if sampling.avoid_copies else None   # kept off copies, as the studio samples
    samples, _ = _generate(engine, n_per_mode, "ddim", steps, guidance, seed, copies=copies)
    sample_analyses = _analyses(samples, analyzer)
    baseline_set = feature_embedding(real_sample(cfg, "validation", n_per_mode * len(MODES), seed, in_c=True))
    result = {
        "engine": "diffusion", "checkpoint": str(checkpoint), "n": n_per_mode * len(MODES),
        "sampler": {"name": "ddim", "steps": steps, "guidance_scale": guidance,
                    "avoid_copies": bool(sampling.avoid_copies)},
        "consistency": _consistency(sample_analyses),
        "frechet": {"distance": _frechet(samples, real),
                    "real_baseline": round(frechet_distance(*standardise(real, baseline_set)[::-1]), 4),
                    "embedding": "analyzer features (engines/evaluation/frechet.py)"},
        "notes_per_segment": round(float(np.mean([len(s.notes) for g in samples.values() for s in g])), 2),
    }
    if classifier and Path(classifier).is_file():
        engine.classifier = TrainedGuidanceClassifier.load(classifier)
        result["guidance"] = _guidance(engine, sample_analyses, analyzer, n_per_mode, steps, guidance,
                                       SUGGESTED_CLASSIFIER_SCALE, seed, sampling.classifier_space, copies)
    else:
        result["guidance"] = {"error": f"no guidance classifier at '{classifier}'"}
    if with_table:
        table = []
        for sampler, table_steps in TABLE:
            if table_steps > engine.num_steps:
                continue
            generated, seconds = _generate(engine, table_per_mode, sampler, table_steps, guidance, seed)
            table.append({"sampler": sampler, "steps": table_steps,
                          "consistency": _consistency(_analyses(generated, analyzer))["overall"],
                          "frechet": _frechet(generated, real), "seconds_per_segment": round(seconds, 4)})
        result["steps_table"] = table
    times = []
    for i in range(3):
        start = time.perf_counter()
        engine.sample(MODES[i], n=1, steps=steps, guidance_scale=guidance, seed=i)
        times.append(time.perf_counter() - start)
    result["latency_ms"] = round(statistics.median(times) * 1000, 1)
    return result
