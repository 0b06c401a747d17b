"""After training: encode the training split and store the latent directions in the checkpoint.

Vectors (each (D,)): one per attribute (rebracketing, temporal complexity, the five emotion axes; mean latent
of the top quarter minus the bottom quarter) and one style vector per mode (mean latent of that mode's
segments minus the mean of all), so "towards mode X" is a shift by vectors["mode:X"].
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import RollDataset
from engines.music.analyzer import AXES, MODES
from engines.models.trained_vae import TrainedVAE
from engines.sampling.latent import attribute_vector
from engines.training.common import load_checkpoint, save_checkpoint


@torch.no_grad()
def encode_split(vae: TrainedVAE, cfg: Config, split: str = "train", limit: int = 0, seed: int = 0):
    """(latents (N, D), cache row indices (N,)) for a split, optionally a fixed random subset of it."""
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    if limit and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    d = cfg.data
    loader = DataLoader(RollDataset(cache, indices, d.steps_per_beat, d.pitch_low, d.pitch_high, d.segment_bars),
                        batch_size=512)
    latents = [vae.encode_rolls(batch["roll"], batch["mode"]) for batch in loader]
    return torch.cat(latents), indices


def latent_vectors(latents: torch.Tensor, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Attribute and mode-style vectors from latents (N, D) and their cache rows (SEGMENT_DTYPE)."""
    vectors = {}
    for name in ("rebracketing", "temporal_complexity"):
        vectors[name] = attribute_vector(latents, torch.as_tensor(rows[name].astype(np.float32)))
    for i, axis in enumerate(AXES):
        vectors[axis] = attribute_vector(latents, torch.as_tensor(rows["axes"][:, i].astype(np.float32)))
    overall = latents.mean(0)
    for i, mode in enumerate(MODES):
        members = torch.as_tensor(rows["mode"] == i)
        if members.any():
            vectors[f"mode:{mode}"] = latents[members].mean(0) - overall
    return vectors


def finalize_vae(checkpoint: str, cfg: Config, limit: int = 20000) -> dict:
    """Add latent vectors to a checkpoint in place; returns their names and norms."""
    vae = TrainedVAE.load(checkpoint)
    latents, indices = encode_split(vae, cfg, "train", limit)
    rows = ensure_corpus_cache(cfg).segments[indices]
    vectors = latent_vectors(latents, rows)
    payload = load_checkpoint(checkpoint)
    payload["vectors"] = {k: v.contiguous() for k, v in vectors.items()}
    save_checkpoint(payload, checkpoint)
    return {k: round(float(v.norm()), 3) for k, v in vectors.items()}
