"""`python -m engines train --engine judge`: the learned chromatic judge of the evaluation suite
(engines/models/chromatic_judge.py) on clean corpus segments.

    data        the training split's rolls in their own keys (RollDataset, key_to_c off), sustain as 0/1 (the
                corpus has no dynamics, so velocity would only tell corpus from engine); labels: the cache's
                mode (the analyzer's, or a manifest's) and seven attributes (rebracketing, temporal
                complexity, the five axes)
    validation  loss, mode accuracy, the 8 x 8 confusion matrix (rows: the label, columns: the judge) and the
                attributes' mean absolute errors, on the validation split
    loop        engines/training/ema_loop.py, as the other engines
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import RollDataset
from engines.models.chromatic_judge import JUDGE_ATTRIBUTES, ChromaticJudge, judge_loss, judge_payload
from engines.music.analyzer import MODES
from engines.training.ema_loop import LoopSettings, train_with_ema
from engines.training.vae_trainer import _data_meta


class JudgeDataset(Dataset):
    """RollDataset examples with the sustain channel made 0/1 and `targets` (7,) = JUDGE_ATTRIBUTES."""

    def __init__(self, rolls: RollDataset):
        self.rolls = rolls
        rows = rolls.cache.segments[rolls.indices]
        self.targets = torch.as_tensor(np.concatenate(
            [rows["rebracketing"][:, None], rows["temporal_complexity"][:, None], rows["axes"]], 1).astype(np.float32))

    def __len__(self) -> int:
        return len(self.rolls)

    def __getitem__(self, i: int) -> dict:
        item = self.rolls[i]
        item["roll"][1] = (item["roll"][1] > 0).float()
        item["targets"] = self.targets[i]
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
    train_set = JudgeDataset(RollDataset.for_config(cache, train, cfg.data, key_to_c=False))
    val_set = JudgeDataset(RollDataset.for_config(cache, val, cfg.data, key_to_c=False))
    settings = LoopSettings(jc.learning_rate, jc.weight_decay, jc.batch_size, jc.epochs, jc.ema_decay)
    data = {**_data_meta(cfg), "segments": int(len(train))}

    return train_with_ema(
        lambda: ChromaticJudge(jc, cfg.data.roll_steps, cfg.data.num_pitches, cfg.data.pitch_low), train_set, val_set,
        settings,
        loss_fn=lambda model, batch: judge_loss(model, batch, jc.attribute_weight)[0],
        validate_fn=lambda ema, loader, device: validate(ema, loader, device, jc.attribute_weight),
        payload_fn=lambda ema, row: judge_payload(ema, row, {"data": data}), out_dir=out_dir,
        max_minutes=max_minutes, resume=resume, seed=seed, workers=workers)
