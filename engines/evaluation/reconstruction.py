"""Reconstruction metrics on piano rolls: pure functions over arrays or tensors."""
from __future__ import annotations

import torch


def note_f1(predicted_onsets: torch.Tensor, target_onsets: torch.Tensor, valid: torch.Tensor | None = None) -> dict:
    """Note-level precision, recall and F1 on (onset step, pitch) for boolean rolls (B, T, P).

    A predicted note counts when a target note starts on the same step and pitch. `valid` (B, T) masks
    steps outside the segments. Counts are summed over the batch (micro average).
    """
    predicted, target = predicted_onsets.bool(), target_onsets.bool()
    if valid is not None:
        mask = valid.bool()[:, :, None]
        predicted, target = predicted & mask, target & mask
    true_positive = (predicted & target).sum().item()
    n_predicted, n_target = predicted.sum().item(), target.sum().item()
    precision = true_positive / n_predicted if n_predicted else (1.0 if n_target == 0 else 0.0)
    recall = true_positive / n_target if n_target else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "true_positive": true_positive,
            "predicted": n_predicted, "target": n_target}
