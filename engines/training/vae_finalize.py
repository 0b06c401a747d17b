"""After training: everything the checkpoint needs beyond the network's weights, fitted on training latents.

    vectors          (each (D,)) one per attribute (rebracketing, temporal complexity, the five emotion axes;
                     mean latent of the top quarter minus the bottom quarter) and one style vector per mode
                     (mean latent of that mode's segments minus the mean of all): "towards mode X" is a
                     shift by vectors["mode:X"]
    latent_map       UMAP of a fixed subset of training latents (engines/models/latent_map.py)
    onset_threshold  the decoding threshold with the best note F1 on the validation split
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import RollDataset
from engines.evaluation.reconstruction import note_f1
from engines.music.analyzer import AXES, MODES
from engines.models.latent_map import fit_latent_map
from engines.models.trained_vae import TrainedVAE
from engines.sampling.latent import attribute_vector
from engines.training.common import save_checkpoint


@torch.no_grad()
def encode_split(vae: TrainedVAE, cfg: Config, split: str = "train", limit: int = 0, seed: int = 0):
    """(latents (N, D), cache row indices (N,)) for a split, optionally a fixed random subset of it."""
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    if limit and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    loader = DataLoader(RollDataset.for_config(cache, indices, cfg.data, vae.model.config.key_to_c), batch_size=512)
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


THRESHOLDS = tuple(round(0.5 + 0.025 * i, 3) for i in range(19))  # 0.5 .. 0.95


@torch.no_grad()
def calibrate_onset_threshold(vae: TrainedVAE, cfg: Config, limit: int = 0) -> tuple[float, float]:
    """The onset probability threshold with the best note F1 on the validation split, and that F1.

    The onset loss weighs positives up (notes are ~0.3 % of the roll), so the model's probabilities run
    high; choosing the decoding threshold on held-out validation data (never test) undoes that bias.
    """
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices("validation")
    if limit and limit < len(indices):
        indices = indices[:limit]
    loader = DataLoader(RollDataset.for_config(cache, indices, cfg.data, vae.model.config.key_to_c), batch_size=512)
    probabilities, targets, valid = [], [], []
    for batch in loader:
        mean, _ = vae.model.encode(batch["roll"], batch["mode"])
        out = vae.model.decode(mean, batch["mode"], vae.model.batch_attributes(batch))
        probabilities.append(vae.onset_probabilities(out["onset"]))
        targets.append(batch["roll"][:, 0] > 0.5)
        valid.append(batch["valid"])
    probabilities, targets, valid = torch.cat(probabilities), torch.cat(targets), torch.cat(valid)
    scores = {t: note_f1(probabilities >= t, targets, valid)["f1"] for t in THRESHOLDS}
    best = max(scores, key=scores.get)
    return best, scores[best]


def finalize_vae(checkpoint: str, cfg: Config, limit: int = 0, map_points: int = 6000, seed: int = 0,
                 log=print) -> dict:
    """Add vectors, the latent map and the onset threshold to a checkpoint in place.

    `limit` caps the training latents used (0 = the whole training split); returns a summary.
    """
    started = time.time()
    vae = TrainedVAE.load(checkpoint)
    threshold, f1 = calibrate_onset_threshold(vae, cfg, limit // 4 if limit else 0)
    latents, indices = encode_split(vae, cfg, "train", limit, seed)
    rows = ensure_corpus_cache(cfg).segments[indices]
    vectors = latent_vectors(latents, rows)
    subset = np.sort(np.random.default_rng(seed).choice(len(latents), min(map_points, len(latents)), replace=False))
    latent_map, _ = fit_latent_map(latents[subset].numpy(), indices[subset], seed=42)
    if log:
        log(f"finalize: {len(latents)} latents, map of {len(subset)} fitted ({time.time() - started:.0f} s)")
    payload = vae.payload  # the file as loaded: weights, config, metrics
    payload["vectors"] = {k: v.contiguous() for k, v in vectors.items()}
    payload["onset_threshold"] = threshold
    payload["onset_threshold_validation_f1"] = f1
    payload["latent_map"] = latent_map
    payload["finalize_seconds"] = round(time.time() - started, 1)
    save_checkpoint(payload, checkpoint)
    return {"onset_threshold": threshold, "validation_f1": round(f1, 4), "latents": len(latents),
            "map_points": len(subset), "seconds": payload["finalize_seconds"],
            "vector_norms": {k: round(float(v.norm()), 3) for k, v in vectors.items()}}
