"""After training: everything the checkpoint needs beyond the network's weights, fitted on training latents.

    vectors          (each (D,)) one per attribute (rebracketing, temporal complexity, the five emotion axes;
                     mean latent of the top quarter minus the bottom quarter) and one style vector per mode
                     (mean latent of that mode's segments minus the mean of all): "towards mode X" is a
                     shift by vectors["mode:X"]
    latent_map       UMAP of a fixed subset of training latents (engines/models/latent_map.py)
    onset_threshold  the decoding threshold with the best note F1 on the validation split (reconstructions)
    fitted_prior     p(z | mode): a Gaussian per mode over the latents of its clearest training segments (the
                     upper half of the mode's top scores, as conditioning.mode_targets), and one over all
                     latents for WHITE. The network's prior (N(0, I), or N(mu_mode, I)) covers every region the
                     decoder can read, borders and other modes included; the fitted one is where the mode's
                     music lies (docs/vae.md gives what that did to the raw analyzer consistency).
    sample_onset_threshold
                     the threshold at which samples of the fitted prior hold, on average, as many notes as the
                     training split's segments (as diffusion_finalize calibrates its samples)
    prior_refinement each mode's fitted Gaussian, moved toward the latents the decoder writes the mode from
                     (refine_prior): REFINE_ROUNDS times, REFINE_SAMPLES samples of the mode's prior are decoded
                     and analysed, and the Gaussian is refitted to the latents of those the analyzer hears in the
                     mode, that nearly copy no training segment and whose note count lies within the mode's
                     (REFINE_NOTE_QUANTILES of its training segments): their mean, and their covariance averaged
                     with the clear latents' one (REFINE_SHRINK, so the spread and with it the variety stays).
                     The clear segments' latents are where the mode's music lies, but only 88 % of
                     reconstructions keep their mode and a Gaussian over them covers its borders: this is the
                     Gaussian nearest p(z | mode) x P(heard as the mode, real, new | z).
    attribute_prior  p(z | attributes), for a request that asks attributes and no mode: the latents of the map's
                     training segments encoded with no mode (WHITE, as such a request decodes them), less those
                     whose pattern recurs in the corpus, with their attributes (unit scale). A draw mixes
                     ATTRIBUTE_PRIOR_MIXED of the ATTRIBUTE_PRIOR_NEIGHBOURS whose attributes lie nearest the
                     asked ones (TrainedVAE.neighbourhood_latents). A recurring pattern (a chorale cadence, a
                     folk formula) would pull mixes onto itself, and its samples would be near copies.
    temperature_calibration
                     per mode, the temperature (the fitted prior's spread) a request that sets none samples at:
                     of TEMPERATURES, the warmest whose samples the analyzer hears as asked within
                     TEMPERATURE_MARGIN of the best share (seeds from TEMPERATURE_SEED, never the evaluation's
                     held-out seeds from 10,000), among those whose samples nearly copy a training segment at
                     most TEMPERATURE_COPY_LIMIT of the time. A narrower prior stays nearer the mode's clearest
                     latents, so more of it is heard as asked; the margin keeps the spread, and with it the
                     variety, where narrowing gains little, and the copy limit keeps a mode of recurring formulas
                     away from its idioms.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import WHITE_INDEX, RollDataset
from engines.generation.copies import CopyIndex
from engines.evaluation.reconstruction import note_f1
from engines.models.conditioning import CONDITION_ATTRIBUTES, cache_attributes
from engines.music.analyzer import AXES, MODES, ChromaticAnalyzer
from engines.models.latent_map import fit_latent_map
from engines.models.trained_vae import TrainedVAE
from engines.sampling.latent import attribute_vector
from engines.training.common import save_checkpoint


@torch.no_grad()
def encode_split(vae: TrainedVAE, cfg: Config, split: str = "train", limit: int = 0, seed: int = 0,
                 variances: bool = False):
    """(latents (N, D), cache row indices (N,)) for a split, optionally a fixed random subset of it: the
    posterior means; with `variances`, (means, posterior variances (N, D), indices)."""
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    if limit and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    loader = DataLoader(RollDataset.for_config(cache, indices, cfg.data, vae.model.config.key_to_c), batch_size=512)
    means, spreads = [], []
    for batch in loader:
        mean, logvar = vae.model.encode(batch["roll"].to(vae.device), batch["mode"].to(vae.device))
        means.append(mean.cpu())
        spreads.append(logvar.exp().cpu())
    return (torch.cat(means), torch.cat(spreads), indices) if variances else (torch.cat(means), indices)


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


def fitted_prior(latents: torch.Tensor, variances: torch.Tensor, rows: np.ndarray, clear_quantile: float = 0.5,
                 shrinkage: float = 0.1) -> dict[str, torch.Tensor]:
    """{"mean": (M + 1, D), "scale_tril": (M + 1, D, D)}: per mode (MODES order, then WHITE over all latents)
    the mean and Cholesky factor of the aggregate posterior of its clearest rows (SEGMENT_DTYPE), moment-matched:
    the covariance of the posterior means (N, D) plus the mean posterior variance (N, D). The second term keeps
    the spread of dimensions the decoder ignores (mean near 0, variance near 1). The first is shrunk toward its
    diagonal by `shrinkage`: a mode's few hundred latents would leave a D x D estimate ill-conditioned. A mode
    without rows gets WHITE's."""
    def gaussian(z: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = z.double()
        covariance = torch.cov(z.T) if len(z) > 1 else torch.zeros(z.shape[1], z.shape[1], dtype=z.dtype)
        covariance = (1 - shrinkage) * covariance + shrinkage * torch.diag(torch.diag(covariance))
        covariance += torch.diag(var.double().mean(0)) + 1e-6 * torch.eye(z.shape[1], dtype=z.dtype)
        return z.mean(0).float(), torch.linalg.cholesky(covariance).float()

    top = rows["scores"].max(axis=1)
    everything = gaussian(latents, variances)
    means, factors = [], []
    for index in range(len(MODES)):
        mine = rows["mode"] == index
        if not mine.any():
            mean, factor = everything
        else:
            clear = torch.as_tensor(mine & (top >= np.quantile(top[mine], 1 - clear_quantile)))
            mean, factor = gaussian(latents[clear], variances[clear])
        means.append(mean)
        factors.append(factor)
    means.append(everything[0])
    factors.append(everything[1])
    return {"mean": torch.stack(means).contiguous(), "scale_tril": torch.stack(factors).contiguous()}


ATTRIBUTE_PRIOR_NEIGHBOURS = 16   # training latents nearest the asked attributes a draw mixes from
ATTRIBUTE_PRIOR_MIXED = 4         # how many of them a draw mixes (fewer: nearer, and more copies)
TWIN_SHORTLIST = 50               # training segments a pool row is compared with for recurring patterns


@torch.no_grad()
def attribute_prior(vae: TrainedVAE, cfg: Config, rows: np.ndarray, index: CopyIndex | None = None) -> dict:
    """{"latents" (N, D), "attributes" (N, k) unit scale, "names" (k), "rows" (N,), "neighbours", "mixed"}: the
    attribute prior (module docstring) over the training segments at cache rows `rows`; {} when none is left."""
    cache = ensure_corpus_cache(cfg)
    index = index or CopyIndex.build(cache)
    rare = np.array([index.near_twins(int(row), TWIN_SHORTLIST) == 0 for row in rows], dtype=bool)
    rows = np.asarray(rows)[rare]
    if not len(rows):
        return {}
    loader = DataLoader(RollDataset.for_config(cache, rows, cfg.data, vae.model.config.key_to_c), batch_size=512)
    latents = []
    for batch in loader:
        white = torch.full_like(batch["mode"], WHITE_INDEX)   # as a request without a mode decodes them
        latents.append(vae.model.encode(batch["roll"].to(vae.device), white.to(vae.device))[0].cpu())
    return {"latents": torch.cat(latents).contiguous(),
            "attributes": torch.as_tensor(cache_attributes(cache.segments[rows])).contiguous(),
            "names": list(CONDITION_ATTRIBUTES), "rows": torch.as_tensor(rows.astype(np.int64)),
            "neighbours": ATTRIBUTE_PRIOR_NEIGHBOURS, "mixed": ATTRIBUTE_PRIOR_MIXED}


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


@torch.no_grad()
def calibrate_sample_threshold(vae: TrainedVAE, target_notes: float, n_per_mode: int = 16,
                               seed: int = 0) -> dict:
    """Sets vae.sample_onset_threshold to the candidate whose fitted-prior samples (temperature 1) hold closest
    to `target_notes` notes on average; returns the measurements."""
    # The threshold only reads the decoder's output, so each mode's samples are decoded once and read at
    # every candidate threshold (what vae.sample would give with each one set).
    outputs = [vae.decoder_outputs([(vae.prior_latents(mode, n_per_mode, 1.0, seed + i, "fitted"), mode, None)])[0]
               for i, mode in enumerate(MODES)]
    counts = {}
    for threshold in THRESHOLDS:
        vae.sample_onset_threshold = threshold
        read_at = vae.sampling_threshold("fitted")
        counts[threshold] = float(np.mean([len(s.notes) for out in outputs
                                           for s in vae.outputs_to_segments(out, onset_threshold=read_at)]))
    best = min(THRESHOLDS, key=lambda th: abs(counts[th] - target_notes))
    vae.sample_onset_threshold = best
    return {"sample_onset_threshold": best, "notes_per_segment": round(counts[best], 2),
            "corpus_notes_per_segment": round(target_notes, 2), "samples": n_per_mode * len(MODES),
            "notes_by_threshold": {str(k): round(v, 2) for k, v in counts.items()}}


def heard_as_asked(segments: list, mode: str, analyzer: ChromaticAnalyzer) -> list[bool]:
    """Per segment, whether the analyzer hears it in `mode` (an empty one is in no mode)."""
    return [len(s.notes) > 0 and analyzer.analyze(s).mode == mode for s in segments]


def near_copies(segments: list, copies: CopyIndex | None) -> list[bool]:
    """Per segment, whether it nearly copies a training segment (all False without a copy index)."""
    return [bool(copies and copies.is_copy(s)) for s in segments]


REFINE_ROUNDS = 6        # refits of each mode's Gaussian (docs/vae.md: 2, 4 and 6 measured)
REFINE_SAMPLES = 768     # samples per mode and round
REFINE_SHRINK = 0.8      # the clear latents' covariance's share in each refit (0.5 copied more, 0.9 no better)
REFINE_MIN_HEARD = 32    # fewer samples kept than this: the mode's Gaussian stays as it is
REFINE_SEED = 40_000     # never the temperature calibration's (700) nor the evaluation's (from 10,000)
REFINE_NOTE_QUANTILES = (0.1, 0.9)   # a refit keeps samples whose note count lies within these of the mode's


def mode_note_ranges(rows: np.ndarray, quantiles: tuple[float, float] = REFINE_NOTE_QUANTILES) -> dict:
    """{mode: (fewest, most) notes}: the quantiles of the note counts of the mode's training segments (rows of
    SEGMENT_DTYPE), for refine_prior; a mode without rows has none."""
    return {mode: tuple(float(v) for v in np.quantile(rows["note_count"][rows["mode"] == index], quantiles))
            for index, mode in enumerate(MODES) if (rows["mode"] == index).any()}


@torch.no_grad()
def refine_prior(vae: TrainedVAE, analyzer: ChromaticAnalyzer | None = None, rounds: int = REFINE_ROUNDS,
                 samples: int = REFINE_SAMPLES, seed: int = REFINE_SEED, copies: CopyIndex | None = None,
                 note_ranges: dict[str, tuple[float, float]] | None = None) -> dict:
    """Refits vae.fitted_prior's mode Gaussians (module docstring; WHITE's stays) and returns
    {"modes": {mode: {"heard": [share heard as asked, per round, before its refit], "copies": [share of near
    copies, per round], "outside_notes": [share outside the note range, per round], "note_range"}}, "rounds",
    "samples_per_round", "shrink", "seed", "copies_checked"}. Sampled at temperature 1, before the temperatures
    are calibrated on the refined prior.

    With `copies` (a CopyIndex of the training split), a sample that nearly copies a training segment is not
    refitted to, heard as asked or not: GREEN's samples heard as asked lie near its recurring cadences, and a
    Gaussian refitted to them copied them 16 % of the time at temperature 0.55. With `note_ranges` ({mode:
    (fewest, most)} notes, mode_note_ranges), a sample whose note count lies outside its mode's range is not
    refitted to either: the analyzer hears energy in notes per second, and RED's samples heard as asked drifted
    to twice the notes of RED's training segments (median 74 against 32)."""
    analyzer = analyzer or ChromaticAnalyzer()
    clear_covariance = vae.fitted_prior["scale_tril"].double() @ vae.fitted_prior["scale_tril"].double().mT
    modes = {}
    for index, mode in enumerate(MODES):
        heard_per_round, copied_per_round, outside_per_round = [], [], []
        low, high = (note_ranges or {}).get(mode, (0, float("inf")))
        for round_ in range(rounds):
            latents, heard, copied, outside = [], [], [], []
            for start in range(0, samples, 256):
                segments, z = vae.sample(mode, min(256, samples - start), 1.0,
                                         seed=seed + 1000 * round_ + 100 * index + start // 256)
                latents.append(z)
                heard += heard_as_asked(segments, mode, analyzer)
                copied += near_copies(segments, copies)
                outside += [not low <= len(s.notes) <= high for s in segments]
            heard, copied, outside = torch.tensor(heard), torch.tensor(copied), torch.tensor(outside)
            heard_per_round.append(round(float(heard.float().mean()), 3))
            copied_per_round.append(round(float(copied.float().mean()), 4))
            outside_per_round.append(round(float(outside.float().mean()), 3))
            kept = torch.cat(latents)[heard & ~copied & ~outside].double()          # (kept, D)
            if len(kept) < REFINE_MIN_HEARD:
                break
            covariance = (1 - REFINE_SHRINK) * torch.cov(kept.T) + REFINE_SHRINK * clear_covariance[index]
            covariance += 1e-6 * torch.eye(covariance.shape[0], dtype=covariance.dtype)
            vae.fitted_prior["mean"][index] = kept.mean(0).float()
            vae.fitted_prior["scale_tril"][index] = torch.linalg.cholesky(covariance).float()
        modes[mode] = {"heard": heard_per_round, "copies": copied_per_round, "outside_notes": outside_per_round}
        if note_ranges and mode in note_ranges:
            modes[mode]["note_range"] = [float(v) for v in note_ranges[mode]]
    return {"modes": modes, "rounds": rounds, "samples_per_round": samples, "shrink": REFINE_SHRINK, "seed": seed,
            "copies_checked": copies is not None}


TEMPERATURES = (1.0, 0.85, 0.7, 0.55)   # the fitted prior's spreads tried (the first: the former default)
TEMPERATURE_MARGIN = 0.05                # a cooler spread must be heard as asked this much more often to be kept
TEMPERATURE_SEED = 700
TEMPERATURE_SAMPLES = 256                # samples per mode and temperature
TEMPERATURE_COPY_LIMIT = 0.01            # a spread whose samples nearly copy training segments more often is not kept


def calibrate_temperatures(vae: TrainedVAE, analyzer: ChromaticAnalyzer | None = None,
                           samples: int = TEMPERATURE_SAMPLES, seed: int = TEMPERATURE_SEED,
                           copies: CopyIndex | None = None) -> dict:
    """{"modes": {mode: {"temperature", "heard": {temperature: share}, "copies": {temperature: share}}},
    "samples_per_setting", "seed", "margin", "copy_limit"}: per mode the temperature its fitted-prior samples are
    sampled at (module docstring); sets vae.temperature_calibration. With `copies` (a CopyIndex of the training
    split), a temperature whose samples are near copies more often than TEMPERATURE_COPY_LIMIT is kept only if
    every one is (then the one that copies least): a cooler spread stays nearer the mode's clearest latents, and
    for a mode of recurring formulas (GREEN's cadences) that is nearer its idioms."""
    analyzer = analyzer or ChromaticAnalyzer()
    modes = {}
    for i, mode in enumerate(MODES):
        heard, copied = {}, {}
        for temperature in TEMPERATURES:
            segments, _ = vae.sample(mode, samples, temperature, seed=seed + i)
            heard[temperature] = float(np.mean(heard_as_asked(segments, mode, analyzer)))
            copied[temperature] = float(np.mean(near_copies(segments, copies)))
        allowed = [t for t in TEMPERATURES if copied[t] <= TEMPERATURE_COPY_LIMIT]
        if not allowed:
            allowed = [min(TEMPERATURES, key=lambda t: (copied[t], -t))]
        best = max(heard[t] for t in allowed)
        chosen = next(t for t in allowed if heard[t] >= best - TEMPERATURE_MARGIN)
        modes[mode] = {"temperature": chosen, "heard": {str(t): round(v, 3) for t, v in heard.items()}}
        if copies:
            modes[mode]["copies"] = {str(t): round(v, 4) for t, v in copied.items()}
    vae.temperature_calibration = {"modes": modes, "samples_per_setting": samples, "seed": seed,
                                   "margin": TEMPERATURE_MARGIN,
                                   **({"copy_limit": TEMPERATURE_COPY_LIMIT} if copies else {})}
    return vae.temperature_calibration


def finalize_vae(checkpoint: str, cfg: Config, limit: int = 0, map_points: int = 6000, seed: int = 0,
                 log=print) -> dict:
    """Add vectors, the latent map and the onset threshold to a checkpoint in place.

    `limit` caps the training latents used (0 = the whole training split); returns a summary.
    """
    started = time.time()
    vae = TrainedVAE.load(checkpoint)
    threshold, f1 = calibrate_onset_threshold(vae, cfg, limit // 4 if limit else 0)
    latents, variances, indices = encode_split(vae, cfg, "train", limit, seed, variances=True)
    rows = ensure_corpus_cache(cfg).segments[indices]
    vectors = latent_vectors(latents, rows)
    subset = np.sort(np.random.default_rng(seed).choice(len(latents), min(map_points, len(latents)), replace=False))
    latent_map, _ = fit_latent_map(latents[subset].numpy(), indices[subset], seed=42)
    vae.fitted_prior = fitted_prior(latents, variances, rows)
    copies = CopyIndex.build(ensure_corpus_cache(cfg))
    vae.attribute_prior = attribute_prior(vae, cfg, indices[subset], copies)
    train_notes = float(np.mean(rows["note_count"]))
    sample_calibration = calibrate_sample_threshold(vae, train_notes, seed=seed)
    # a run on a few segments (tests) measures on a few samples
    ranges = mode_note_ranges(rows)
    refinement = (refine_prior(vae, rounds=1, samples=max(8, limit // 16), copies=copies, note_ranges=ranges)
                  if limit else refine_prior(vae, copies=copies, note_ranges=ranges))
    temperatures = calibrate_temperatures(vae, samples=min(TEMPERATURE_SAMPLES, max(8, limit // 16)) if limit
                                          else TEMPERATURE_SAMPLES, copies=copies)
    if log:
        log(f"finalize: {len(latents)} latents, map of {len(subset)} fitted ({time.time() - started:.0f} s)")
    payload = vae.payload  # the file as loaded: weights, config, metrics
    payload["vectors"] = {k: v.contiguous() for k, v in vectors.items()}
    payload["onset_threshold"] = threshold
    payload["onset_threshold_validation_f1"] = f1
    payload["latent_map"] = latent_map
    payload["fitted_prior"] = vae.fitted_prior
    payload["attribute_prior"] = vae.attribute_prior
    payload["sample_onset_threshold"] = vae.sample_onset_threshold
    payload["sample_calibration"] = sample_calibration
    payload["prior_refinement"] = refinement
    payload["temperature_calibration"] = temperatures
    payload["finalize_seconds"] = round(time.time() - started, 1)
    save_checkpoint(payload, checkpoint)
    return {"onset_threshold": threshold, "validation_f1": round(f1, 4), "latents": len(latents),
            "map_points": len(subset), "attribute_prior_latents": len(vae.attribute_prior.get("rows", [])),
            "seconds": payload["finalize_seconds"],
            "sample_onset_threshold": vae.sample_onset_threshold,
            "sample_notes_per_segment": sample_calibration["notes_per_segment"],
            "prior_refinement": {mode: v["heard"] for mode, v in refinement["modes"].items()},
            "temperatures": {mode: v["temperature"] for mode, v in temperatures["modes"].items()},
            "train_notes_per_segment": sample_calibration["corpus_notes_per_segment"],
            "vector_norms": {k: round(float(v.norm()), 3) for k, v in vectors.items()}}
