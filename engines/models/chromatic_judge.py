"""The learned chromatic judge of the evaluation suite: which mode a clean segment is in, and its attributes,
as a network hears them; its penultimate layer is the fixed embedding of the Fréchet distance.

    roll      (B, 2, T, P) a clean roll in its own key (absolute pitch: register is part of the modes)
              -> (B, 2P, T) channels, its chroma (B, 24, T: onsets and sustain folded to pitch classes, which
              is what key, major/minor leaning and chromaticism are read from), and the metre's grid
              (B, 4, T) of bar lines, beats, half beats and the steps inside the segment
              (engines/models/guidance_classifier.metric_grids)
    condition the metre's embedding + an MLP of log tempo (energy and motion are per second)
    levels    FiLM residual blocks (the denoiser's) at T, T/2, T/4, T/8
    pool      mean and max over the steps inside the segment
    embedding (B, embedding_dim) = SiLU(Linear(pool)) -> heads: mode logits (B, 8) and attributes (B, 7):
              rebracketing, temporal complexity (0..1) and the five axes (-1..1), as the analyzer reads them

Trained on clean corpus segments only (`python -m engines train --engine judge`); the diffusion engine's
guidance classifier is a different model, trained on noisy rolls.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.data.torch_dataset import METRES, metre_index
from engines.errors import StudioError
from engines.models.denoiser import FiLMBlock
from engines.models.guidance_classifier import metric_grids
from engines.models.judge_config import JudgeConfig
from engines.music.analyzer import AXES, MODES
from engines.music.notes import Segment, notes_to_roll

JUDGE_ATTRIBUTES = ("rebracketing", "temporal_complexity") + AXES


class ChromaticJudge(nn.Module):
    def __init__(self, config: JudgeConfig, steps: int = 64, pitches: int = 88, pitch_low: int = 21):
        super().__init__()
        self.config, self.steps, self.pitches, self.pitch_low = config, steps, pitches, pitch_low
        c = config.condition_dim
        self.metre_embedding = nn.Embedding(len(METRES), c)
        self.tempo_mlp = nn.Sequential(nn.Linear(1, c), nn.SiLU(), nn.Linear(c, c))
        channels = [config.base_channels * m for m in config.channel_mults]
        self.register_buffer("grids", metric_grids(steps), persistent=False)   # (M, 4, T)
        fold = torch.zeros(pitches, 12)
        fold[torch.arange(pitches), (torch.arange(pitches) + pitch_low) % 12] = 1
        self.register_buffer("fold", fold, persistent=False)                  # (P, 12) pitch -> pitch class
        self.stem = nn.Conv1d(2 * pitches + 24 + self.grids.shape[1], channels[0], 3, padding=1)
        self.blocks, self.downsample = nn.ModuleList(), nn.ModuleList()
        c_prev = channels[0]
        for i, ch in enumerate(channels):
            self.blocks.append(FiLMBlock(c_prev, ch, c, config.dropout))
            self.downsample.append(nn.Conv1d(ch, ch, 4, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
            c_prev = ch
        self.norm = nn.GroupNorm(8, c_prev)
        self.to_embedding = nn.Linear(2 * c_prev, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.mode_head = nn.Linear(config.embedding_dim, len(MODES))
        self.attribute_head = nn.Linear(config.embedding_dim, len(JUDGE_ATTRIBUTES))

    def forward(self, roll: torch.Tensor, metre: torch.Tensor, log_tempo: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """roll (B, 2, T, P), metre (B,), log_tempo (B,) -> mode logits (B, 8), attributes (B, 7), embedding (B, E)."""
        b = roll.shape[0]
        cond = self.metre_embedding(metre) + self.tempo_mlp((log_tempo - 4.6)[:, None])  # log 100 qpm ~ 4.6
        grid = self.grids[metre]                                                     # (B, 4, T)
        inside = grid[:, 3:4]                                                        # (B, 1, T) steps in the segment
        flat = roll.permute(0, 1, 3, 2).reshape(b, 2 * self.pitches, self.steps) * inside  # nothing past the end
        chroma = (roll @ self.fold).clamp(max=1).permute(0, 1, 3, 2).reshape(b, 24, self.steps) * inside
        h = self.stem(torch.cat([flat, chroma, grid], 1))
        for block, downsample in zip(self.blocks, self.downsample):
            h = downsample(block(h, cond))
        h = F.silu(self.norm(h))                                                     # (B, C, T / 8)
        mask = F.adaptive_max_pool1d(inside, h.shape[2])                             # (B, 1, T / 8)
        mean = (h * mask).sum(2) / mask.sum(2).clamp(min=1)
        peak = h.masked_fill(mask == 0, float("-inf")).amax(2)
        embedding = F.silu(self.to_embedding(torch.cat([mean, peak], 1)))           # (B, E)
        features = self.dropout(embedding)
        return self.mode_head(features), self.attribute_head(features), embedding


def judge_loss(model: ChromaticJudge, batch: dict, attribute_weight: float) -> tuple[torch.Tensor, dict]:
    """Mode cross-entropy + attribute_weight * MSE of the attributes; and counts for accuracy."""
    logits, attributes, _ = model(batch["roll"], batch["metre"], batch["log_tempo"])
    loss = F.cross_entropy(logits, batch["mode"]) + attribute_weight * F.mse_loss(attributes, batch["targets"])
    predicted = logits.argmax(1)
    return loss, {"hits": int((predicted == batch["mode"]).sum()), "n": len(predicted),
                  "predicted": predicted, "absolute_error": (attributes - batch["targets"]).abs().sum(0)}


def judge_payload(model: ChromaticJudge, metrics: dict, extra: dict | None = None) -> dict:
    return {"engine": "judge", "config": asdict(model.config), "steps": model.steps, "pitches": model.pitches,
            "pitch_low": model.pitch_low,
            "modes": list(MODES), "attributes": list(JUDGE_ATTRIBUTES), "state_dict": model.state_dict(),
            "metrics": metrics, **(extra or {})}


class TrainedJudge:
    """The shipped judge: `judge(segments)` -> modes, probabilities, attributes; `embed(segments)` -> (N, E)."""

    def __init__(self, payload: dict, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.model = ChromaticJudge(JudgeConfig(**payload["config"]), payload["steps"], payload["pitches"],
                                    payload.get("pitch_low", 21))
        self.model.load_state_dict(payload["state_dict"])
        self.model.to(self.device).eval().requires_grad_(False)
        self.data = payload.get("data", {})
        self.metrics = payload.get("metrics", {})

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "TrainedJudge":
        from engines.training.common import load_checkpoint

        return cls(load_checkpoint(path, map_location=device, engine="judge"), device)

    def _inputs(self, segments: list[Segment]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        steps_per_beat = self.model.steps // 16
        low = self.model.pitch_low
        bars = self.data.get("segment_bars", 4)
        if any(s.num_bars > bars for s in segments):
            raise StudioError(f"the judge reads segments of up to {bars} bars")
        # a shorter segment (a GPT output that ended early) is read with silence after its end
        rolls = [notes_to_roll(s.notes, s.bar_length, bars, steps_per_beat, low, low + self.model.pitches - 1)
                 for s in segments]
        for r in rolls:
            r[1] = r[1] > 0  # sustain as 0/1, as it was trained (velocity would only tell corpus from engine)
        metres = torch.tensor([metre_index(s.ts_num, s.ts_den) for s in segments])
        tempo = torch.tensor(np.log([max(s.tempo_qpm, 1.0) for s in segments]), dtype=torch.float32)
        return torch.from_numpy(np.stack(rolls)).float(), metres, tempo

    @torch.no_grad()
    def run(self, segments: list[Segment], batch_size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(probabilities (N, 8), attributes (N, 7), embeddings (N, E)) of the segments."""
        out = ([], [], [])
        for start in range(0, len(segments), batch_size):
            roll, metre, tempo = (x.to(self.device) for x in self._inputs(segments[start:start + batch_size]))
            logits, attributes, embedding = self.model(roll, metre, tempo)
            for bucket, value in zip(out, (logits.softmax(1), attributes, embedding)):
                bucket.append(value.cpu().numpy())
        width = (len(MODES), len(JUDGE_ATTRIBUTES), self.model.config.embedding_dim)
        return tuple(np.concatenate(b) if b else np.zeros((0, w)) for b, w in zip(out, width))

    def judge(self, segments: list[Segment]) -> list[dict]:
        """[{mode, scores {mode: p}, attributes {name: x}}] per segment."""
        probabilities, attributes, _ = self.run(segments)
        return [{"mode": MODES[int(p.argmax())], "scores": dict(zip(MODES, p.round(4).tolist())),
                 "attributes": dict(zip(JUDGE_ATTRIBUTES, a.round(4).tolist()))}
                for p, a in zip(probabilities, attributes)]

    def embed(self, segments: list[Segment]) -> np.ndarray:
        return self.run(segments)[2]
