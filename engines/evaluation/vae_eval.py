"""`python -m engines evaluate --engine vae`: the VAE issue's quality bars, measured on the held-out test split.

    reconstruction   note F1 (onset + pitch), precision, recall, piano-roll MSE of the posterior mean, decoded
                     with the onset threshold finalize chose on the validation split; accuracy and perplexity
                     per onset cell (the roll decoder's analogue of token accuracy and perplexity)
    active_units     share of latent dims whose posterior mean varies across the test set (variance > 0.01)
    kl               mean KL(q(z|x, mode) || p(z | mode)) per segment
    consistency      share of prior samples (at the mode's calibrated temperature, not steered) the analyzer assigns
                     the requested mode, per mode and overall
    attributes       Spearman correlation between the shift along an attribute vector (-2..2) of prior draws
                     and the attribute the analyzer measures on the decoded segments (mean per shift)
    interpolation    decoded neighbours along 10-step slerp paths between two prior draws of one mode differ
                     less than the two endpoints do
    latency_ms       one 4-bar segment sampled and decoded as the studio samples it (steered by the judge beside
                     the checkpoint, when there is one), median
"""
from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import RollDataset
from engines.errors import StudioError
from engines.evaluation.reconstruction import note_f1
from engines.generation import GENERATORS
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.models.trained_vae import TrainedVAE
from engines.models.vae import gaussian_kl

SHIFTS = np.linspace(-2, 2, 9)


@torch.no_grad()
def reconstruction(vae: TrainedVAE, cfg: Config, limit: int, seed: int) -> tuple[dict, torch.Tensor, float]:
    """Scores, posterior means (N, D) and mean KL on (a fixed subset of) the test split."""
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices("test")
    if limit and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    loader = DataLoader(RollDataset.for_config(cache, indices, cfg.data, vae.model.config.key_to_c), batch_size=256)
    predicted, target, valid, means, kls, squared, nll = [], [], [], [], [], [], []
    for batch in loader:
        mean, logvar = vae.model.encode(batch["roll"], batch["mode"])
        out = vae.model.decode(mean, batch["mode"], vae.model.batch_attributes(batch))
        predicted.append(vae.onset_probabilities(out["onset"]) >= vae.onset_threshold)
        target.append(batch["roll"][:, 0] > 0.5)
        valid.append(batch["valid"])
        probs = torch.stack([torch.sigmoid(out["onset"]), torch.sigmoid(out["sustain"])], 1)
        squared.append(((probs - (batch["roll"] > 0).float()) ** 2).mean(dim=(1, 2, 3)))
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            out["onset"], (batch["roll"][:, 0] > 0.5).float(), reduction="none")           # (B, T, P)
        nll.append(bce[batch["valid"]].flatten())                                          # cells inside the segment
        means.append(mean)
        kls.append(gaussian_kl(mean, logvar, vae.model.prior_mean(batch["mode"])).sum(1))
    predicted, target, valid = torch.cat(predicted), torch.cat(target), torch.cat(valid)
    scores = note_f1(predicted, target, valid)
    means = torch.cat(means)
    # The decoder's "tokens" are the roll's onset cells (a Bernoulli each), so accuracy and perplexity are per
    # cell inside the segment; most cells are empty, so the accuracy of the sounding ones is the recall above.
    result = {"f1": round(scores["f1"], 4), "precision": round(scores["precision"], 4),
              "recall": round(scores["recall"], 4), "roll_mse": round(float(torch.cat(squared).mean()), 6),
              "cell_accuracy": round(float((predicted == target)[valid].float().mean()), 6),
              "cell_perplexity": round(float(torch.cat(nll).mean().exp()), 6),
              "segments": int(len(indices))}
    return result, means, float(torch.cat(kls).mean())


def _analyze_all(analyzer: ChromaticAnalyzer, segments) -> list:
    out = []
    for segment in segments:
        try:
            out.append(analyzer.analyze(segment))
        except StudioError:  # an empty decode: counts as not consistent
            out.append(None)
    return out


def consistency(vae: TrainedVAE, analyzer: ChromaticAnalyzer, n_per_mode: int, seed: int) -> dict:
    per_mode = {}
    for i, mode in enumerate(MODES):
        # at the temperature a request that sets none gets (the checkpoint's calibration for the mode)
        segments, _ = vae.sample(mode, n=n_per_mode, temperature=vae.temperature_for(mode), seed=seed + i,
                                 steer=0.0)
        analyses = _analyze_all(analyzer, segments)
        per_mode[mode] = round(sum(a is not None and a.mode == mode for a in analyses) / n_per_mode, 4)
    return {"overall": round(float(np.mean(list(per_mode.values()))), 4), "per_mode": per_mode}


def attribute_response(vae: TrainedVAE, analyzer: ChromaticAnalyzer, name: str, n: int, seed: int) -> dict:
    """Mean measured attribute of decoded segments at each shift; Spearman between shift and that mean."""
    modes = [MODES[i % len(MODES)] for i in range(n)]
    z = torch.cat([vae.sample_latents(mode, 1, seed=seed + i) for i, mode in enumerate(modes)])  # prior draws
    vector = vae.attribute_vector(name)
    means = []
    for amount in SHIFTS:
        values = []
        for zi, mode in zip(z + float(amount) * vector, modes):
            (analysis,) = _analyze_all(analyzer, vae.decode(zi[None], mode))
            if analysis is not None:
                values.append(analysis.rebracketing if name == "rebracketing" else analysis.temporal_complexity)
        means.append(float(np.mean(values)) if values else float("nan"))
    rho = spearmanr(SHIFTS, means).statistic
    return {"spearman": round(float(rho), 4), "shifts": SHIFTS.tolist(), "means": [round(m, 4) for m in means]}


def _onsets(segment) -> set:
    return {(int(n["start"]), int(n["pitch"])) for n in segment.notes}


def _distance(a, b) -> float:
    """Jaccard distance of (onset, pitch) sets."""
    x, y = _onsets(a), _onsets(b)
    return 1.0 - len(x & y) / max(len(x | y), 1)


def interpolation_smoothness(vae: TrainedVAE, pairs: int, seed: int) -> dict:
    ratios, smooth = [], 0
    for p in range(pairs):
        mode = MODES[p % len(MODES)]
        z1, z2 = vae.sample_latents(mode, 2, seed=seed + p)  # two prior draws of one mode
        path = vae.decode(vae.interpolate(z1, z2, 10), mode)
        neighbours = [_distance(a, b) for a, b in zip(path, path[1:])]
        endpoints = _distance(path[0], path[-1])
        ratios.append(float(np.mean(neighbours)) / max(endpoints, 1e-9))
        smooth += max(neighbours) < endpoints
    return {"pairs": pairs, "mean_neighbour_to_endpoint_ratio": round(float(np.mean(ratios)), 4),
            "paths_with_every_step_smaller": round(smooth / pairs, 4)}


def latency_ms(vae: TrainedVAE, steer: float = 0.0, repeats: int = 30) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        vae.sample(MODES[i % len(MODES)], n=1, seed=i, steer=steer)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 3)


def evaluate_vae(checkpoint: str, cfg: Config, n_per_mode: int = 50, test_limit: int = 2000, seed: int = 0,
                 attribute_samples: int = 24, interpolation_pairs: int = 16) -> dict:
    torch.manual_seed(seed)
    vae = GENERATORS["vae"].load(checkpoint).model   # with the judge that steers it (latency), when there is one
    # the step each drawn latent takes toward the asked mode (critic_steering; 0: none, or no judge beside)
    steer = float(cfg.generation.sampling.vae.steer) if vae.critic is not None else 0.0
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    recon, means, kl = reconstruction(vae, cfg, test_limit, seed)
    variance = means.var(0)
    result = {
        "engine": "vae", "checkpoint": str(checkpoint), "n": n_per_mode * len(MODES),
        "consistency": consistency(vae, analyzer, n_per_mode, seed),
        "reconstruction": recon,
        "active_units": round(float((variance > 0.01).float().mean()), 4),
        "kl": round(kl, 3),
        "attributes": {name: attribute_response(vae, analyzer, name, attribute_samples, seed)
                       for name in ("rebracketing", "temporal_complexity") if name in vae.vectors},
        "interpolation": interpolation_smoothness(vae, interpolation_pairs, seed),
        "latency_ms": latency_ms(vae, steer),
        "steer": steer,
    }
    return result
