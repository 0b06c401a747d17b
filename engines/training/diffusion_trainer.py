"""`python -m engines train --engine diffusion`: train the piano-roll denoiser on the segment cache.

The loss is the MSE of the prediction (x0, epsilon or v) at uniformly drawn steps, with condition dropout for
classifier-free guidance; validation is the same loss with a fixed generator, so epochs compare. The loop
(EMA weights, learning-rate schedule, resume, best.pt / last.pt, metrics.jsonl, loss.png, DDP) is
engines/training/ema_loop.py. The checkpoint also holds how often each metre occurs per mode and the median
tempo per mode and metre (mode_statistics), which generation draws from; then diffusion_finalize.py runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import METRES, RollDataset, WHITE_INDEX
from engines.models.conditioning import mode_targets
from engines.models.denoiser import RollDenoiser, checkpoint_payload, diffusion_loss
from engines.sampling.diffusion import NoiseScheduler
from engines.training.ema_loop import LoopSettings, train_with_ema
from engines.training.vae_trainer import _data_meta


def _datasets(cfg: Config, limit: int = 0, key_to_c: bool | None = None):
    """Training and validation RollDatasets (in C unless `key_to_c` is False; default: the denoiser's setting)."""
    cache = ensure_corpus_cache(cfg)
    train, val = cache.split_indices("train"), cache.split_indices("validation")
    if limit:
        train, val = train[:limit], val[:max(limit // 4, 8)]
    key_to_c = cfg.model.diffusion.key_to_c if key_to_c is None else key_to_c
    return (RollDataset.for_config(cache, train, cfg.data, key_to_c),
            RollDataset.for_config(cache, val, cfg.data, key_to_c))


MIN_SEGMENTS_FOR_TEMPO = 20  # fewer segments of a mode in a metre than this: use the mode's median tempo


def mode_statistics(dataset: RollDataset) -> dict:
    """Per mode (and WHITE = all): how often each metre occurs, the median tempo, and the median tempo in each
    metre, so generation can draw a metre and play it at a tempo the corpus uses for that mode in that metre.

    Why per metre: in the corpus the tempo follows the notation more than the mode. A BLACK segment in 4/2
    (Palestrina) has a median of 160 quarters a minute, one in 2/4 or 4/4 (folk song) 100; one tempo per mode
    would play every BLACK 2/4 segment at 160, and the analyzer would hear its energy as RED's.
    {"metre_counts": (9, M), "tempo": (9,), "metre_tempo": (9, M)} with M = len(METRES)."""
    counts = np.zeros((WHITE_INDEX + 1, len(METRES)), np.int64)
    tempo = np.zeros(WHITE_INDEX + 1)
    metre_tempo = np.zeros((WHITE_INDEX + 1, len(METRES)))
    modes, metres, tempos = dataset.modes.numpy(), dataset.metres.numpy(), np.exp(dataset.log_tempo.numpy())
    for m in range(WHITE_INDEX + 1):
        rows = modes == m if m < WHITE_INDEX else np.ones_like(modes, bool)
        counts[m] = np.bincount(metres[rows], minlength=len(METRES))
        tempo[m] = float(np.median(tempos[rows])) if rows.any() else 100.0
        for k in range(len(METRES)):
            here = rows & (metres == k)
            metre_tempo[m, k] = float(np.median(tempos[here])) if here.sum() >= MIN_SEGMENTS_FOR_TEMPO else tempo[m]
    return {"metre_counts": torch.as_tensor(counts), "tempo": torch.as_tensor(tempo, dtype=torch.float32),
            "metre_tempo": torch.as_tensor(metre_tempo, dtype=torch.float32)}


@torch.no_grad()
def validate(model: RollDenoiser, loader: DataLoader, scheduler: NoiseScheduler, device) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(1234)  # the same steps and noise every epoch
    total, batches = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        total += diffusion_loss(model, scheduler, batch, 0.0, generator).item()
        batches += 1
    return total / max(batches, 1)


def train_diffusion(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False,
                    limit: int = 0, seed: int = 0, workers: int = 1, finalize: bool = True) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs);
    `finalize` False leaves diffusion_finalize to a later `train --finalize-only`."""
    dc = cfg.model.diffusion
    scheduler = NoiseScheduler(dc.num_steps, dc.noise_schedule, dc.prediction)
    train_set, val_set = _datasets(cfg, limit)
    # what a mode request aims at when no attribute is given: inside the mode's region (conditioning.py)
    extra = {"data": _data_meta(cfg), **mode_statistics(train_set),
             "mode_targets": mode_targets(train_set.cache.segments[np.sort(train_set.indices)])}
    settings = LoopSettings(dc.learning_rate, dc.weight_decay, dc.batch_size, dc.epochs, dc.ema_decay)
    best = train_with_ema(
        lambda: RollDenoiser(dc, cfg.data.roll_steps, cfg.data.num_pitches), train_set, val_set, settings,
        loss_fn=lambda model, batch: diffusion_loss(model, scheduler, batch, dc.condition_dropout),
        validate_fn=lambda ema, loader, device: {"val_loss": validate(ema, loader, scheduler, device)},
        payload_fn=lambda ema, row: checkpoint_payload(ema, row, extra),
        out_dir=out_dir, max_minutes=max_minutes, resume=resume, seed=seed, workers=workers)
    if finalize and best and (Path(out_dir) / "best.pt").is_file():  # rank 0 (the others return {})
        from engines.training.diffusion_finalize import finalize_diffusion

        best["finalize"] = finalize_diffusion(Path(out_dir) / "best.pt", cfg, n_per_mode=2 if limit else 16,
                                              seed=seed, limit=limit)
    return best
