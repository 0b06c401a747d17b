"""`python -m engines train --engine guidance-classifier`: train the noise-aware classifier that steers the
diffusion sampler (engines/models/guidance_classifier.py).

Training rolls are noised to uniformly drawn steps of the denoiser's forward process (`model.diffusion.num_steps`
and `noise_schedule`; the checkpoint records them). The labels are the
cache's mode and "high rebracketing": above the training split's 75th percentile of rebracketing. Validation
reports the loss and both accuracies at every noise level and at low noise (t < T/10), with a fixed generator
so epochs compare. The loop is engines/training/ema_loop.py, as for the denoiser.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.models.guidance_classifier import NoisyRollClassifier, classifier_loss, classifier_payload
from engines.music.analyzer import AXES
from engines.sampling.diffusion import NoiseScheduler
from engines.training.diffusion_trainer import _datasets
from engines.training.ema_loop import LoopSettings, train_with_ema
from engines.training.vae_trainer import _data_meta


def high_rebracketing_threshold(attributes: torch.Tensor, quantile: float) -> float:
    """The rebracketing value above which a segment counts as "high" (the quantile of the training split)."""
    return float(np.quantile(attributes[:, 0].numpy(), quantile))


@torch.no_grad()
def validate(model: NoisyRollClassifier, loader: DataLoader, scheduler: NoiseScheduler, threshold: float,
             rebracketing_weight: float, device) -> dict:
    model.eval()
    generator = torch.Generator().manual_seed(1234)  # the same steps and noise every epoch
    keys = ("mode_hits", "high_hits", "n", "true_high", "high")
    total, batches, sums, low_noise = 0.0, 0, dict.fromkeys(keys, 0), dict.fromkeys(keys, 0)
    attribute_error = np.zeros(len(model.config.attributes))   # summed |error| at low noise, per attribute
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, counts = classifier_loss(model, scheduler, batch, threshold, rebracketing_weight, generator)
        total, batches = total + loss.item(), batches + 1
        sums = {k: sums[k] + counts[k] for k in sums}
        _, counts = classifier_loss(model, scheduler, batch, threshold, rebracketing_weight, generator,
                                    max_step=max(scheduler.num_steps // 10, 1))
        low_noise = {k: low_noise[k] + counts[k] for k in low_noise}
        attribute_error += np.asarray(counts["attribute_error"]).reshape(-1)
    n, n_low = max(sums["n"], 1), max(low_noise["n"], 1)
    metrics = {"val_loss": total / max(batches, 1), "val_mode_acc": sums["mode_hits"] / n,
               "val_high_acc": sums["high_hits"] / n, "val_high_recall": sums["true_high"] / max(sums["high"], 1),
               "val_mode_acc_low_noise": low_noise["mode_hits"] / n_low,
               "val_high_acc_low_noise": low_noise["high_hits"] / n_low,
               "val_high_recall_low_noise": low_noise["true_high"] / max(low_noise["high"], 1)}
    axes = [i for i, name in enumerate(model.config.attributes) if name in AXES]
    if axes:   # the attribute head's mean absolute error over the five axes, at low noise (unit scale)
        metrics["val_axes_mae_low_noise"] = float(attribute_error[axes].mean() / n_low)
    return metrics


def train_guidance_classifier(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False,
                              limit: int = 0, seed: int = 0, workers: int = 1) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs)."""
    gc = cfg.model.guidance_classifier
    scheduler = NoiseScheduler(cfg.model.diffusion.num_steps, cfg.model.diffusion.noise_schedule)
    train_set, val_set = _datasets(cfg, limit, key_to_c=gc.key_to_c)
    threshold = high_rebracketing_threshold(train_set.attributes, gc.high_rebracketing_quantile)
    settings = LoopSettings(gc.learning_rate, gc.weight_decay, gc.batch_size, gc.epochs, gc.ema_decay)
    data = _data_meta(cfg)

    def payload(ema, row):
        return {**classifier_payload(ema, scheduler, row, threshold), "data": data}

    return train_with_ema(
        lambda: NoisyRollClassifier(gc, cfg.data.roll_steps, cfg.data.num_pitches), train_set, val_set, settings,
        loss_fn=lambda model, batch: classifier_loss(model, scheduler, batch, threshold, gc.rebracketing_weight,
                                                     step_power=gc.step_power, high_weight=gc.high_weight)[0],
        validate_fn=lambda ema, loader, device: validate(ema, loader, scheduler, threshold, gc.rebracketing_weight,
                                                         device),
        payload_fn=payload, out_dir=out_dir, max_minutes=max_minutes, resume=resume, seed=seed, workers=workers)
