"""The evaluation suite every engine shares (and `--real`, the corpus measured the same way):

    frechet      Fréchet distance between the generated set and held-out real segments (test split) in the
                 judge's embedding (the analyzer's standardised features without a judge), with the
                 real-vs-real baseline (training-split segments against the same test set, as many as were
                 generated) and a bootstrap interval over the generated set
    diversity    per mode: intra-class variance and mean pairwise distance of the embeddings; and the copy
                 check against every segment of the training split (duplicate, near-copy and rare near-copy
                 rates, engines/evaluation/diversity.copy_rates); the real row's figure is the floor: held-out
                 real music nearly copies a training segment 7-11 % of the time
    judge        the learned judge's consistency: per requested mode, the share it hears in that mode
    analyzer     the same by the analyzer
    music_stats  musical statistics of the real and generated sets with their overlap areas

`suite_metrics(samples, cfg, ...)` works on {mode: [Segment]}; `engine_samples` draws those from a shipped
engine with the configured sampling; `evaluate_real` measures validation-split segments by their own modes.
Results are cached by (what was measured, its checkpoint's hash, the settings) under
<data.cache_dir>/evaluations, so the Evaluate tab and a repeated command are instant.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.evaluation.diversity import copy_rates, per_mode_diversity
from engines.evaluation.frechet import feature_embedding, frechet_distance
from engines.evaluation.music_stats import compare_sets
from engines.folders import write_atomically
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.music.notes import Segment, shift_to_c, transpose_notes

SUITE_VERSION = 3         # part of the cache key: raise it when what the suite measures changes
BASELINE_POOL = 4000      # training segments the real-vs-real baseline is drawn from
BOOTSTRAP = 200


def copy_index(cfg: Config):
    """The copy index of the training split (a second or two to build), kept for the last corpus measured
    (ensure_corpus_cache opens a new SegmentCache each call, so the corpus is known by its fingerprint)."""
    from engines.generation.copies import CopyIndex

    cache = ensure_corpus_cache(cfg)
    fingerprint = cache.meta.get("fingerprint")
    if fingerprint is None or _LAST_COPY_INDEX.get("fingerprint") != fingerprint:
        _LAST_COPY_INDEX.update(fingerprint=fingerprint, index=CopyIndex.build(cache))
    return _LAST_COPY_INDEX["index"]


_LAST_COPY_INDEX: dict = {}   # one index at a time: the studio's memory holds no index per corpus ever measured


def writes_in_c(engine: str) -> bool:
    """Whether an engine writes in C (the suite then compares it with real segments moved to C); "real": no."""
    from engines.generation import GENERATORS

    return engine in GENERATORS and GENERATORS[engine].writes_in_c


def real_sample(cfg: Config, split: str, n: int, seed: int, in_c: bool) -> list[Segment]:
    """n segments of a split (a seeded draw), moved to C when the engine compared writes in C."""
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    chosen = np.sort(np.random.default_rng(seed).choice(indices, min(n, len(indices)), replace=False))
    out = []
    for row in chosen:
        segment = cache.segment(int(row))
        segment.meta["mode"] = MODES[int(cache.segments["mode"][row])]
        if in_c:
            semitones = shift_to_c(int(cache.segments["key"][row]) % 12)
            segment.notes = transpose_notes(segment.notes, semitones, cfg.data.pitch_low, cfg.data.pitch_high)
        out.append(segment)
    return out


class Embedder:
    """Segments -> embedding rows: the judge's penultimate layer, or the analyzer's features standardised on
    the real test set."""

    def __init__(self, judge, reference: list[Segment]):
        self.judge = judge
        if judge is None:
            features = feature_embedding(reference)
            self.mean, self.std = features.mean(0), features.std(0) + 1e-9
        self.name = "learned judge (penultimate layer)" if judge is not None else \
            "analyzer features, standardised (no judge checkpoint)"

    def __call__(self, segments: list[Segment]) -> np.ndarray:
        kept = [s for s in segments if len(s.notes)]
        if self.judge is not None:
            return self.judge.embed(kept)
        return (feature_embedding(kept) - self.mean) / self.std


def _bootstrap_frechet(generated: np.ndarray, real: np.ndarray, samples: int, seed: int) -> list[float]:
    """95 % bootstrap interval of the distance over resamplings of the generated set, bias-corrected: the
    resampled distances shifted by their mean's excess over the estimate. (Resampling with replacement
    repeats points, which shrinks a set's spread and inflates the distance, so the plain percentile interval
    would sit above the estimate.)"""
    rng = np.random.default_rng(seed)
    distance = frechet_distance(generated, real)
    draws = np.array([frechet_distance(generated[rng.integers(0, len(generated), len(generated))], real)
                      for _ in range(samples)])
    shifted = draws - (draws.mean() - distance)
    low, high = np.percentile(shifted, [2.5, 97.5])
    return [round(float(max(low, 0.0)), 4), round(float(high), 4)]


def _consistency(hits: dict[str, list[bool]]) -> dict:
    per_mode = {m: round(float(np.mean(h)), 4) for m, h in hits.items() if h}
    return {"overall": round(float(np.mean(list(per_mode.values()))), 4) if per_mode else None,
            "per_mode": per_mode}


def suite_metrics(samples: dict[str, list[Segment]], cfg: Config, judge=None, seed: int = 0, in_c: bool = True,
                  bootstrap: int = BOOTSTRAP, baseline_pool: int = BASELINE_POOL, real_count: int = 1000) -> dict:
    """The suite's keys for generated (or real) `samples` {requested mode: [Segment]} (module docstring)."""
    generated = [s for mode in samples for s in samples[mode] if len(s.notes)]
    requested = [mode for mode in samples for s in samples[mode] if len(s.notes)]
    if len(generated) < 2:
        raise ValueError("the suite needs at least two generated segments with notes")
    test = [s for s in real_sample(cfg, "test", real_count, seed, in_c) if len(s.notes)]
    train = [s for s in real_sample(cfg, "train", max(baseline_pool, len(generated)), seed + 1, in_c) if len(s.notes)]
    embed = Embedder(judge, test)
    real_embedding, generated_embedding = embed(test), embed(generated)
    train_embedding = embed(train)
    baseline = train_embedding[np.random.default_rng(seed).choice(len(train_embedding), len(generated_embedding),
                                                                  replace=False)]
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    heard = [analyzer.analyze(s).mode for s in generated]
    result = {
        "frechet": {"distance": round(frechet_distance(generated_embedding, real_embedding), 4),
                    "real_baseline": round(frechet_distance(baseline, real_embedding), 4),
                    "interval": _bootstrap_frechet(generated_embedding, real_embedding, bootstrap, seed),
                    "embedding": embed.name, "real_segments": len(test)},
        "diversity": {"per_mode": per_mode_diversity(generated_embedding, requested),
                      "copies": copy_rates(generated, copy_index(cfg))},
        "analyzer": {"consistency": _consistency(_hits(requested, heard))},
        "music_stats": compare_sets(test, generated),
        "empty_rate": round(1 - len(generated) / max(sum(len(v) for v in samples.values()), 1), 4),
    }
    if judge is not None:
        result["judge"] = {"consistency": _consistency(_hits(requested, [r["mode"] for r in judge.judge(generated)]))}
    else:
        result["judge"] = {"error": "no judge checkpoint (python -m engines train --engine judge)"}
    return result


def _hits(requested: list[str], heard: list[str]) -> dict[str, list[bool]]:
    hits: dict[str, list[bool]] = {m: [] for m in MODES}
    for want, got in zip(requested, heard):
        if want in hits:
            hits[want].append(want == got)
    return hits


def engine_samples(engine: str, checkpoint: str, cfg: Config, n_per_mode: int, seed: int,
                   on_mode=None, candidates: int = 1, verifier=None) -> dict[str, list[Segment]]:
    """n_per_mode segments per mode from an engine with the configured sampling (what the studio gives first),
    through engines/generation: the raw model (candidates 1) unless `candidates` > 1 (verified generation with
    `verifier`, engines/generation/verify.py). `on_mode(i, mode)` is called before each mode is drawn;
    returning True stops (the modes so far are kept)."""
    from engines.generation import GENERATORS, Request
    from engines.generation.verify import draw

    if engine not in GENERATORS:
        raise ValueError(f"no generator for engine '{engine}'")
    generator = load_generator(engine, checkpoint, cfg)
    settings = generator.settings_for(cfg)
    if candidates > 1 and verifier is None:
        from engines.generation.verify import Verifier

        verifier = Verifier.for_config(cfg)
    out = {}
    for i, mode in enumerate(tqdm(MODES, desc=f"sampling {engine}", leave=False)):
        if on_mode is not None and on_mode(i, mode):
            break
        request = Request(engine=engine, mode=mode, n=n_per_mode, seed=seed + i, candidates=candidates)
        out[mode] = draw(generator, request, settings, verifier if candidates > 1 else None).segments
    return out


def load_generator(engine: str, checkpoint: str, cfg: Config):
    """The engine's Generator from `checkpoint`, sampling as the studio does: with the training split's copy
    index at hand (an engine set to avoid copies steers away from them)."""
    from engines.generation import GENERATORS

    generator = GENERATORS[engine].load(checkpoint)
    generator.training_copies = lambda: copy_index(cfg)
    return generator


def judge_or_none(cfg: Config):
    path = Path(cfg.model.checkpoints_dir) / "judge.pt"
    if not path.is_file():
        return None
    from engines.models.chromatic_judge import TrainedJudge

    return TrainedJudge.load(path)


def cache_key(what: str, checkpoint: str | None, settings: dict) -> str:
    """The key of one measurement ("<engine>" or "<engine>-<part>"): its settings, and the bytes of the
    checkpoint, of the files the engine loads beside it (Generator.files_beside: the diffusion engine's guidance
    classifier) and of the judge."""
    from engines.generation import GENERATORS

    digest = hashlib.sha1(json.dumps({**settings, "suite": SUITE_VERSION}, sort_keys=True, default=str).encode())
    if checkpoint and Path(checkpoint).is_file():
        generator = GENERATORS.get(what.split("-", 1)[0])
        for path in [Path(checkpoint)] + (generator.files_beside(checkpoint) if generator else []):
            if path.is_file():
                digest.update(hashlib.sha1(path.read_bytes()).digest())
    judge = settings.get("judge_checkpoint")
    if judge and Path(judge).is_file():
        digest.update(hashlib.sha1(Path(judge).read_bytes()).digest())
    return f"{what}-{digest.hexdigest()[:16]}"


def cached(cfg: Config, key: str, compute, use_cache: bool = True) -> dict:
    """compute() once per key; the JSON is kept under <data.cache_dir>/evaluations."""
    path = Path(cfg.data.cache_dir) / "evaluations" / f"{key}.json"
    if use_cache and path.is_file():
        return {**json.loads(path.read_text()), "cached": True}
    result = compute()
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return {**result, "cached": False}


def evaluate_real(cfg: Config, n_per_mode: int = 50, seed: int = 0, use_cache: bool = True) -> dict:
    """The baseline row: validation-split segments, n per mode by their own labels, measured by the suite."""
    judge_path = Path(cfg.model.checkpoints_dir) / "judge.pt"
    settings = {"n": n_per_mode, "seed": seed, "judge_checkpoint": str(judge_path)}

    def compute():
        pool = real_sample(cfg, "validation", 40 * n_per_mode, seed + 2, in_c=False)
        samples = {m: [s for s in pool if s.meta["mode"] == m][:n_per_mode] for m in MODES}
        return {"engine": "real", "n": sum(len(v) for v in samples.values()), "split": "validation",
                **suite_metrics(samples, cfg, judge_or_none(cfg), seed, in_c=False)}

    return cached(cfg, cache_key("real", None, settings), compute, use_cache)


def evaluate_suite(engine: str, checkpoint: str, cfg: Config, n_per_mode: int = 50, seed: int = 0,
                   use_cache: bool = True) -> dict:
    """The suite's keys for a shipped engine (merged into its own evaluation by `evaluate`)."""
    judge_path = Path(cfg.model.checkpoints_dir) / "judge.pt"
    settings = {"n": n_per_mode, "seed": seed, "sampling": cfg.generation.sampling, "data": cfg.data,
                "judge_checkpoint": str(judge_path)}

    def compute():
        samples = engine_samples(engine, checkpoint, cfg, n_per_mode, seed)
        return suite_metrics(samples, cfg, judge_or_none(cfg), seed, in_c=writes_in_c(engine))

    return cached(cfg, cache_key(engine, checkpoint, settings), compute, use_cache)
