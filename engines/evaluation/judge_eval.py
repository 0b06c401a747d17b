"""`python -m engines evaluate --engine judge`: the learned judge on the held-out test split.

    accuracy        share of test segments whose mode the judge reads as the cache does (goal >= 90 %)
    per_mode        that share per labelled mode (recall)
    confusion       8 x 8 counts, rows: the label, columns: the judge
    attribute_mae   mean absolute error of each attribute head
"""
from __future__ import annotations

import numpy as np

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.models.chromatic_judge import JUDGE_ATTRIBUTES, TrainedJudge, row_targets
from engines.music.analyzer import MODES


def evaluate_judge(checkpoint: str, cfg: Config, test_limit: int = 0) -> dict:
    judge = TrainedJudge.load(checkpoint)
    cache = ensure_corpus_cache(cfg)
    rows = cache.split_indices("test")
    rows = rows[:test_limit] if test_limit else rows
    labels = cache.segments["mode"][rows].astype(int)
    targets = row_targets(cache.segments[rows])
    probabilities, attributes = [], []
    for start in range(0, len(rows), 1024):
        p, a, _ = judge.run([cache.segment(int(r)) for r in rows[start:start + 1024]])
        probabilities.append(p)
        attributes.append(a)
    predicted = np.concatenate(probabilities).argmax(1)
    attributes = np.concatenate(attributes)
    confusion = np.zeros((len(MODES), len(MODES)), int)
    np.add.at(confusion, (labels, predicted), 1)
    recall = {m: round(float(confusion[i, i] / max(confusion[i].sum(), 1)), 4) for i, m in enumerate(MODES)}
    return {"engine": "judge", "checkpoint": str(checkpoint), "n": int(len(rows)),
            "accuracy": round(float((predicted == labels).mean()), 4), "per_mode": recall,
            "confusion": confusion.tolist(),
            "attribute_mae": {name: round(float(np.abs(attributes[:, k] - targets[:, k]).mean()), 4)
                              for k, name in enumerate(JUDGE_ATTRIBUTES)}}
