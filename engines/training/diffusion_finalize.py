"""What follows the denoiser's training: what generation draws from, measured on the training split (the
per-mode metre and tempo statistics of diffusion_trainer.mode_statistics, each mode's interior target,
conditioning.mode_targets, the pool of its segments' attributes each result draws its own from,
conditioning.mode_target_pool, and every segment's attributes and metre, conditioning.attribute_metre_pool),
and the decoding's onset threshold, calibrated on the model's own samples.

The sampler's final x0 is near -1 or +1 in most cells, but a model that is not fully trained leaves the sparse
onset channel unsure (between -1 and 0) in places where the sustain channel is sure, so the threshold decides
how many notes a sample holds, and the number of notes per second is a large part of what the analyzer hears
as energy and motion. The threshold is therefore set from data, not guessed: sample `n_per_mode` segments of
every mode (DDIM, the configured steps and classifier-free guidance) and keep the candidate whose decoded
segments hold, on average, as many notes as the training split's segments do. The result is stored in the
checkpoint's config (`onset_threshold`) with the measurements behind it (`onset_calibration`).

    python -m engines train --engine diffusion ...        (runs this at the end)
    python -m engines train --engine diffusion --finalize-only --out RUN
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.models.conditioning import attribute_metre_pool, mode_target_pool, mode_targets
from engines.models.denoiser import model_from_checkpoint
from engines.models.trained_diffusion import TrainedDiffusion
from engines.music.analyzer import MODES
from engines.training.common import check_finalize_steps, load_checkpoint, pick_device, save_checkpoint

# onset channel values (x0 scale, 0 = p 0.5); + 0.0: no "-0.0". A model trained longer is surer of its onsets
# and still writes too many at 0.9, hence the steps up to 0.99; they move little (run diffusion-v5: 29.7
# notes per sample at 0.9, 28.7 at 0.99, against the corpus's 25.1).
CANDIDATES = tuple(round(float(x), 2) + 0.0 for x in np.arange(-0.9, 0.91, 0.1)) + (0.93, 0.95, 0.97, 0.99)


def corpus_notes_per_segment(cfg: Config) -> float:
    cache = ensure_corpus_cache(cfg)
    return float(np.mean(cache.segments["note_count"][cache.split_indices("train")]))


def calibrate_onset_threshold(engine: TrainedDiffusion, target_notes: float, n_per_mode: int = 16, steps: int = 50,
                              guidance_scale: float = 4.0, seed: int = 0) -> dict:
    """Sets engine.model.config.onset_threshold to the candidate whose samples hold closest to `target_notes`
    notes on average; returns the measurements."""
    rolls = [engine.sample_rolls(mode, n_per_mode, steps, guidance_scale=guidance_scale, seed=seed + i) + (mode,)
             for i, mode in enumerate(MODES)]
    config = engine.model.config
    counts = {}
    for threshold in CANDIDATES:
        config.onset_threshold = threshold
        counts[threshold] = float(np.mean([len(s.notes) for x0, metres, mode in rolls
                                           for s in engine.to_segments(x0, metres, mode)]))
    best = min(CANDIDATES, key=lambda th: abs(counts[th] - target_notes))
    config.onset_threshold = best
    return {"onset_threshold": best, "notes_per_segment": round(counts[best], 2),
            "corpus_notes_per_segment": round(target_notes, 2), "samples": n_per_mode * len(MODES),
            "notes_by_threshold": {str(k): round(v, 2) for k, v in counts.items()}}


# What a mode request aims at, result by result: the axes of one of POOL_SIZE training segments of the mode drawn
# from all of them (POOL_QUANTILE 1), not only from its clearer half (0.5). Measured on the seven-attribute run of
# the first GPU lease (160 results, seeds from 0, 50 DDIM steps, guidance 4): the clearer half 77.5 % heard as
# asked and a Fréchet distance of 36.0; all of the mode 79.4 % and 29.2 (no target at all 29.6). The clearer half
# bunches the results where real music of the mode spreads, and a point deep inside a region the model reaches
# only roughly (axes error 0.17) is no likelier to be heard there.
POOL_QUANTILE = 1.0
POOL_SIZE = 256


# the steps of finalize_diffusion, in order; `train --finalize-only --finalize-step NAME` runs one of them and
# leaves what the others wrote in the checkpoint as it is
STEPS = ("statistics", "targets", "attribute-metres", "onset-threshold")


def finalize_diffusion(checkpoint: str | Path, cfg: Config, n_per_mode: int = 16, seed: int = 0,
                       limit: int = 0, steps: tuple[str, ...] = STEPS) -> dict:
    """Refresh the per-mode metre and tempo statistics ("statistics"), interior targets ("targets") and the
    training segments' attributes and metres ("attribute-metres") of `checkpoint` (a best.pt) from the training
    split and calibrate its onset threshold ("onset-threshold"), in place; returns the summary. `steps`: the
    ones to run (STEPS: all). `limit`: the first N training segments only."""
    from engines.training.diffusion_trainer import _datasets, mode_statistics

    check_finalize_steps(steps, STEPS, "diffusion")
    started = time.time()
    payload = load_checkpoint(checkpoint)
    train_set = _datasets(cfg, limit)[0]
    if "statistics" in steps:
        payload.update(mode_statistics(train_set))
    if "targets" in steps:
        rows = train_set.cache.segments[np.sort(train_set.indices)]
        payload["mode_targets"] = mode_targets(rows)
        payload["mode_target_pool"] = mode_target_pool(rows, clear_quantile=POOL_QUANTILE, size=POOL_SIZE)
    if "attribute-metres" in steps:
        payload["attribute_metres"] = attribute_metre_pool(train_set.cache.segments[train_set.indices],
                                                           train_set.metres)
    summary = {"steps": list(steps)}
    if "onset-threshold" in steps:
        engine = TrainedDiffusion(model_from_checkpoint(payload), payload, pick_device())
        sampling = cfg.generation.sampling.diffusion
        summary.update(calibrate_onset_threshold(engine, corpus_notes_per_segment(cfg), n_per_mode,
                                                 min(sampling.steps, engine.num_steps), sampling.guidance_scale,
                                                 seed))
        payload["config"]["onset_threshold"] = summary["onset_threshold"]
    summary["seconds"] = round(time.time() - started, 1)
    if "onset-threshold" in steps:
        payload["onset_calibration"] = {k: v for k, v in summary.items() if k != "steps"}
    save_checkpoint(payload, checkpoint)
    return summary
