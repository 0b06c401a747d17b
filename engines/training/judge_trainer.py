"""`python -m engines train --engine judge`: the learned chromatic judge of the evaluation suite
(engines/models/chromatic_judge.py) on clean corpus segments.

    data        the training split's rolls in their own keys (RollDataset, key_to_c off), sustain as 0/1 (the
                corpus has no dynamics, so velocity would only tell corpus from engine); labels: the cache's
                mode (the analyzer's, or a manifest's) and seven attributes (rebracketing, temporal
                complexity, the five axes)
    augment     each training example moved by one of `transpositions` (+-1, 2, 3 semitones) or not at random,
                labelled as the analyzer hears the moved copy (transposed_labels): the stem reads each pitch
                with its own weights, so without it the judge learns the corpus's pitches by heart
    target      the mode as (1 - soft_weight) * the label + soft_weight * the analyzer's soft scores of that copy
                (soft_mode_targets): how near a segment lies to the next mode is what the label alone hides
    validation  loss (against the label alone), mode accuracy, the 8 x 8 confusion matrix (rows: the label,
                columns: the judge) and the attributes' mean absolute errors, on the validation split
    loop        engines/training/ema_loop.py, as the other engines
"""
from __future__ import annotations

import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.cache import FEATURE_NAMES, SegmentCache
from engines.data.torch_dataset import RollDataset
from engines.folders import write_atomically
from engines.models.chromatic_judge import (JUDGE_ATTRIBUTES, JUDGE_FEATURES, ChromaticJudge, judge_loss,
                                            judge_payload, row_targets)
from engines.music import calibration
from engines.music.analyzer import ANALYZER_VERSION, AXES, MODES, ChromaticAnalyzer, normalise_features
from engines.music.notes import transpose_notes
from engines.training.ema_loop import LoopSettings, train_with_ema
from engines.training.vae_trainer import _data_meta


def feature_targets(raw: np.ndarray) -> np.ndarray:
    """(..., len(FEATURE_NAMES)) raw analyzer features -> (..., len(JUDGE_FEATURES)) in [0, 1]: those the
    analyzer calibrates mapped between their corpus 5th and 95th percentiles, as it does; the rest are
    fractions already."""
    columns = {name: raw[..., FEATURE_NAMES.index(name)] for name in JUDGE_FEATURES}
    ranges = {name: calibration.FEATURE_RANGES.get(name, (0.0, 1.0)) for name in JUDGE_FEATURES}
    normalised = normalise_features(columns, ranges)
    return np.stack([normalised[name] for name in JUDGE_FEATURES], -1).astype(np.float32)


_WORKER_CACHE = {}


def _label_transposed(job: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(modes (n,), targets (n, 7), raw features (n, F)) the analyzer gives cache rows moved by `shift`."""
    directory, rows, shift, low, high, analyzer_config = job
    if directory not in _WORKER_CACHE:   # opened once per worker process
        _WORKER_CACHE[directory] = SegmentCache(directory)
    cache = _WORKER_CACHE[directory]
    analyzer = ChromaticAnalyzer(analyzer_config)
    modes, targets = np.zeros(len(rows), np.int64), np.zeros((len(rows), len(JUDGE_ATTRIBUTES)), np.float32)
    features = np.zeros((len(rows), len(FEATURE_NAMES)), np.float32)
    for k, r in enumerate(rows.tolist()):
        segment = cache.segment(r)
        segment = replace(segment, notes=transpose_notes(segment.notes, shift, low, high))
        a = analyzer.analyze(segment)
        modes[k] = MODES.index(a.mode)
        targets[k] = [a.rebracketing, a.temporal_complexity] + [a.axes[x] for x in AXES]
        features[k] = [float(a.features[name]) for name in FEATURE_NAMES]
    return modes, targets, features


def transposed_labels(cache: SegmentCache, rows: np.ndarray, shifts: list[int], low: int, high: int,
                      analyzer_config=None, processes: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels of every row at every shift: modes (N, S), targets (N, S, 7), raw features (N, S, F).

    Moving a segment changes its register (part of energy, valence and intimacy), so the analyzer labels each
    moved copy afresh; a manifest's mode and attributes are a listener's and stay. Computed once (about
    1.5 ms a segment and shift per process) and kept beside the cache, keyed by the rows, the shifts, the
    analyzer's settings and version.
    """
    key = hashlib.sha1(json.dumps([cache.meta.get("fingerprint"), ANALYZER_VERSION, shifts, low, high,
                                   repr(analyzer_config), "features",
                                   hashlib.sha1(np.ascontiguousarray(rows).tobytes()).hexdigest()]).encode())
    path = cache.directory / f"judge-transposed-{key.hexdigest()[:16]}.npz"
    if path.is_file():
        stored = np.load(path)
        return stored["modes"], stored["targets"], stored["features"]
    segments = cache.segments[rows]
    modes = np.repeat(segments["mode"].astype(np.int64)[:, None], len(shifts), 1)
    targets = np.repeat(row_targets(segments)[:, None], len(shifts), 1)
    features = np.repeat(segments["features"].astype(np.float32)[:, None], len(shifts), 1)
    parts = [(s, part) for s, shift in enumerate(shifts) if shift for part in np.array_split(np.arange(len(rows)), 64)]
    jobs = [(str(cache.directory), rows[part], shifts[s], low, high, analyzer_config) for s, part in parts]
    with ProcessPoolExecutor(processes) as pool:
        results = tqdm(pool.map(_label_transposed, jobs), total=len(jobs), desc="labelling transpositions",
                       file=sys.stdout, mininterval=10)
        for (s, part), (m, t, f) in zip(parts, results):
            modes[part, s], targets[part, s], features[part, s] = m, t, f
    listened = segments["label_source"] != 0  # a manifest's labels hold at every shift
    modes[listened], targets[listened] = modes[listened, :1], targets[listened, :1]
    write_atomically(path, lambda tmp: np.savez(tmp, modes=modes, targets=targets, features=features))
    return modes, targets, features


def soft_mode_targets(modes: np.ndarray, targets: np.ndarray, analyzer: ChromaticAnalyzer) -> np.ndarray:
    """(..., 8) the analyzer's soft scores of labelled rows, from the axes among their targets (..., 7); one-hot
    where the label is not the scores' nearest mode (a manifest's label, which the axes do not explain)."""
    axes = targets[..., [JUDGE_ATTRIBUTES.index(a) for a in AXES]].astype(np.float64)
    axes[..., AXES.index("valence")] = (axes[..., AXES.index("valence")] + 1) / 2   # back to [0, 1]
    scores = analyzer.score_array(axes)
    other = scores.argmax(-1) != modes
    scores[other] = np.eye(len(MODES))[modes[other]]
    return scores.astype(np.float32)


class JudgeDataset(Dataset):
    """RollDataset examples with the sustain channel made 0/1, `targets` (7,) = JUDGE_ATTRIBUTES,
    `features` (F,) = JUDGE_FEATURES in [0, 1] and `scores` (8,) = soft_mode_targets.

    With `shifts` (training), each example is drawn moved by one of them at random, with that copy's labels
    (`labels` = transposed_labels(...)); without, every example is read as it is.
    """

    def __init__(self, rolls: RollDataset, shifts: list[int] | None = None,
                 labels: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                 analyzer: ChromaticAnalyzer | None = None):
        self.rolls = rolls
        self.shifts = list(shifts or [0])
        if labels is None:
            rows = rolls.cache.segments[rolls.indices]
            labels = (rows["mode"].astype(np.int64)[:, None], row_targets(rows)[:, None],
                      rows["features"].astype(np.float32)[:, None])
        self.modes, self.targets = torch.as_tensor(labels[0]), torch.as_tensor(labels[1])  # (N, S), (N, S, 7)
        self.features = torch.as_tensor(feature_targets(labels[2]))                        # (N, S, F)
        self.scores = torch.as_tensor(soft_mode_targets(labels[0], labels[1], analyzer or ChromaticAnalyzer()))

    def __len__(self) -> int:
        return len(self.rolls)

    def __getitem__(self, i: int) -> dict:
        s = int(torch.randint(len(self.shifts), ())) if len(self.shifts) > 1 else 0
        item = self.rolls.item(i, self.shifts[s])
        item["roll"][1] = (item["roll"][1] > 0).float()
        item["mode"], item["targets"], item["features"] = self.modes[i, s], self.targets[i, s], self.features[i, s]
        item["scores"] = self.scores[i, s]
        return item


@torch.no_grad()
def validate(model: ChromaticJudge, loader, device, attribute_weight: float) -> dict:
    model.eval()
    total, batches, hits, n = 0.0, 0, 0, 0
    confusion = np.zeros((len(MODES), len(MODES)), np.int64)
    absolute = torch.zeros(len(JUDGE_ATTRIBUTES))
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        loss, counts = judge_loss(model, batch, attribute_weight)
        total, batches, hits, n = total + loss.item(), batches + 1, hits + counts["hits"], n + counts["n"]
        np.add.at(confusion, (batch["mode"].cpu().numpy(), counts["predicted"].cpu().numpy()), 1)
        absolute += counts["absolute_error"].cpu()
    mae = (absolute / max(n, 1)).tolist()
    return {"val_loss": total / max(batches, 1), "val_mode_acc": hits / max(n, 1),
            **{f"val_mae_{name}": round(v, 4) for name, v in zip(JUDGE_ATTRIBUTES, mae)},
            "confusion": confusion.tolist()}


def train_judge(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False, limit: int = 0,
                seed: int = 0, workers: int = 1) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs)."""
    jc = cfg.model.judge
    cache = ensure_corpus_cache(cfg)
    train, val = cache.split_indices("train"), cache.split_indices("validation")
    if limit:
        train, val = train[:limit], val[:max(limit // 4, 8)]
    shifts = sorted({0, *jc.transpositions})
    labels = transposed_labels(cache, train, shifts, cfg.data.pitch_low, cfg.data.pitch_high, cfg.analyzer,
                               max(workers, 1) + 1)
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    train_set = JudgeDataset(RollDataset.for_config(cache, train, cfg.data, key_to_c=False), shifts, labels,
                             analyzer)
    val_set = JudgeDataset(RollDataset.for_config(cache, val, cfg.data, key_to_c=False), analyzer=analyzer)
    # best.pt is the most accurate epoch: late in a run the cross-entropy rises (the judge grows sure of
    # itself) while accuracy still climbs, so the lowest loss would keep an earlier, less accurate judge
    settings = LoopSettings(jc.learning_rate, jc.weight_decay, jc.batch_size, jc.epochs, jc.ema_decay,
                            select_on="val_mode_acc", select_higher=True)
    data = {**_data_meta(cfg), "segments": int(len(train))}

    return train_with_ema(
        lambda: ChromaticJudge(jc, cfg.data.roll_steps, cfg.data.num_pitches, cfg.data.pitch_low), train_set, val_set,
        settings,
        loss_fn=lambda model, batch: judge_loss(model, batch, jc.attribute_weight, jc.feature_weight,
                                                jc.soft_weight)[0],
        validate_fn=lambda ema, loader, device: validate(ema, loader, device, jc.attribute_weight),
        payload_fn=lambda ema, row: judge_payload(ema, row, {"data": data}), out_dir=out_dir,
        max_minutes=max_minutes, resume=resume, seed=seed, workers=workers)
