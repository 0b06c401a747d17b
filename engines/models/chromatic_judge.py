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
    harmony   what the whole segment sounds like, beside the pooled convolution: its pitch-class histogram
              (sustain, standardised), learned key profiles correlated with it at all 12 rotations (per
              profile the best r, and the histogram rotated to that profile's best key), its entropy, the interval
              vector of notes sounding together (interval classes 0..6), register, range, onset density and
              the top line's moves (how many, how large, with the tempo: melodic motion is per second)
              -> an MLP. Key, major/minor leaning, chromaticism and dissonance are global: a convolution
              over time pooled at the end reads them poorly (with this branch, the transpositions and the feature head,
              the test errors of valence and tension fell from 0.25 and 0.145 to 0.066 and 0.057)
    embedding (B, embedding_dim) = SiLU(Linear(pool, harmony)) -> heads: mode logits (B, 8), attributes (B, 7):
              rebracketing, temporal complexity (0..1) and the five axes (-1..1), as the analyzer reads them

Trained on clean corpus segments only (`python -m engines train --engine judge`); the diffusion engine's
guidance classifier is a different model, trained on noisy rolls.
"""
from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.data.cache import FEATURE_NAMES
from engines.data.torch_dataset import METRES, metre_index
from engines.errors import StudioError
from engines.models.denoiser import FiLMBlock
from engines.models.guidance_classifier import metric_grids
from engines.models.judge_config import JudgeConfig
from engines.music.analyzer import ANALYZER_ATTRIBUTES, MODES
from engines.music.notes import Segment, notes_to_roll

JUDGE_ATTRIBUTES = ANALYZER_ATTRIBUTES
# The analyzer's raw features the axes are made of (engines/data/cache.FEATURE_NAMES but velocity, which the
# judge does not hear): an auxiliary head learns them, each in [0, 1] (normalised as the analyzer does), in
# training only, so the embedding holds the parts the axes are summed from and not only their sums.
JUDGE_FEATURES = tuple(name for name in FEATURE_NAMES if name != "velocity")


def row_targets(rows: np.ndarray) -> np.ndarray:
    """(N, 7) JUDGE_ATTRIBUTES of segment-cache rows."""
    return np.concatenate([rows["rebracketing"][:, None], rows["temporal_complexity"][:, None], rows["axes"]],
                          1).astype(np.float32)


# Sizes of a top-line move, in semitones: steps, thirds, fourths to fifths, sixths to octaves, wider.
TOP_LINE_BINS = ((1, 2), (3, 4), (5, 7), (8, 12), (13, 127))


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
        k = config.key_profiles if config.harmony_dim else 0
        rotate = (torch.arange(12)[:, None] + torch.arange(12)[None, :]) % 12
        self.register_buffer("rotate", rotate, persistent=False)              # (12, 12) [rotation, pc] -> pc
        pitch = torch.arange(pitches)
        interval = (pitch[None, :] - pitch[:, None]) % 12                      # (P, P) q above p, as a class
        interval_class = torch.minimum(interval, 12 - interval)
        ic_fold = torch.zeros(pitches * pitches, 7)
        above = (pitch[None, :] > pitch[:, None]).flatten()                   # each pair once
        ic_fold[above.nonzero()[:, 0], interval_class.flatten()[above]] = 1
        self.register_buffer("ic_fold", ic_fold, persistent=False)            # (P*P, 7)
        self.key_profiles = nn.Parameter(torch.randn(k, 12) * 0.3) if k else None
        # see harmony_features: histogram, per profile its best r and the histogram in its key, entropy, interval
        # vector, chordal share, register, span, onset density, then the top line's moves
        harmony_in = 12 + k * 13 + 1 + 7 + 1 + 3 + (len(TOP_LINE_BINS) + 5 if config.top_line else 0)
        self.harmony = nn.Sequential(nn.Linear(harmony_in, config.harmony_dim), nn.SiLU(),
                                     nn.Linear(config.harmony_dim, config.harmony_dim), nn.SiLU()
                                     ) if config.harmony_dim else None
        self.to_embedding = nn.Linear(2 * c_prev + config.harmony_dim, config.embedding_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.mode_head = nn.Linear(config.embedding_dim, len(MODES))
        self.attribute_head = nn.Linear(config.embedding_dim, len(JUDGE_ATTRIBUTES))
        self.feature_head = nn.Linear(config.embedding_dim, len(JUDGE_FEATURES)) if config.feature_weight else None

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
        pooled = [mean, peak]
        if self.harmony is not None:
            pooled.append(self.harmony(self.harmony_features(roll, inside, log_tempo)))
        embedding = F.silu(self.to_embedding(torch.cat(pooled, 1)))                 # (B, E)
        features = self.dropout(embedding)
        return self.mode_head(features), self.attribute_head(features), embedding


    def harmony_features(self, roll: torch.Tensor, inside: torch.Tensor, log_tempo: torch.Tensor | None = None
                         ) -> torch.Tensor:
        """roll (B, 2, T, P), inside (B, 1, T), log_tempo (B,) -> (B, F) whole-segment features (see the module
        docstring)."""
        sustain = roll[:, 1] * inside[:, 0, :, None]                                 # (B, T, P)
        onset = roll[:, 0] * inside[:, 0, :, None]
        weight = sustain.sum(1)                                                      # (B, P) steps sounding
        total = weight.sum(1, keepdim=True).clamp(min=1)
        hist = (weight @ self.fold) / total                                          # (B, 12) sums to 1
        z = (hist - hist.mean(1, keepdim=True)) / (hist.std(1, keepdim=True) + 1e-3)
        parts = [z]
        if self.key_profiles is not None:
            rotated = z[:, self.rotate]                                              # (B, 12 rot, 12)
            profiles = self.key_profiles - self.key_profiles.mean(1, keepdim=True)
            profiles = profiles / (profiles.norm(dim=1, keepdim=True) + 1e-6)
            corr = rotated @ profiles.T / math.sqrt(12)                              # (B, 12, K) ~ Pearson r
            # each profile's best rotation (soft), and the histogram read from it: the degrees of the key that
            # profile hears, which is what chromaticism (mass off the scale) and major/minor leaning ask
            best = corr.mul(8).softmax(1)                                            # (B, 12 rot, K)
            aligned = torch.einsum("brk,brp->bkp", best, rotated).flatten(1)         # (B, K * 12)
            parts += [corr.amax(1), aligned]
        entropy = -(hist * (hist + 1e-9).log()).sum(1, keepdim=True) / math.log(12)
        pairs = (sustain.transpose(1, 2) @ sustain).flatten(1) @ self.ic_fold       # (B, 7) pair-steps per class
        intervals = pairs / pairs.sum(1, keepdim=True).clamp(min=1)
        steps = inside.sum((1, 2)).clamp(min=1)[:, None]
        chordal = ((sustain.sum(2) >= 2).float().sum(1, keepdim=True)) / steps       # share of steps with 2+ notes
        pitch = torch.arange(self.pitches, device=roll.device, dtype=roll.dtype)
        register = ((weight @ pitch)[:, None] / total + self.pitch_low - 60) / 24
        sounding = weight > 0
        top = torch.where(sounding, pitch, -1.0).amax(1, keepdim=True)
        low = torch.where(sounding, pitch, float(self.pitches)).amin(1, keepdim=True)
        span = (top - low).clamp(min=0) / 48
        density = (onset.amax(2) > 0).float().sum(1, keepdim=True) / steps            # share of steps with onsets
        parts += [entropy, intervals, chordal, register, span, density]
        if self.config.top_line:
            tempo = torch.full_like(density, 4.6) if log_tempo is None else log_tempo[:, None]
            parts += self.top_line_features(sustain, onset, steps, tempo)
        return torch.cat(parts, 1)

    def top_line_features(self, sustain: torch.Tensor, onset: torch.Tensor, steps: torch.Tensor,
                          log_tempo: torch.Tensor) -> list[torch.Tensor]:
        """The top line as the analyzer's skyline reads it (the highest pitch sounding at each onset, held to
        the next): the share of its moves in each TOP_LINE_BINS size, moves and semitones moved per step (and
        their logs, which with log tempo add up to the per-second rates melodic motion is), and log tempo."""
        _, t, p = sustain.shape
        pitch = torch.arange(p, device=sustain.device, dtype=sustain.dtype)
        starts = onset.amax(2) > 0                                                   # (B, T) steps with an onset
        top = torch.where(sustain + onset > 0, pitch, -1.0).amax(2)                  # (B, T) highest sounding
        index = torch.where(starts, torch.arange(t, device=sustain.device), 0).cummax(1).values
        held = top.gather(1, index)                                                  # read at onsets, held
        began = starts.cumsum(1) > 0
        step = (held[:, 1:] - held[:, :-1]).abs() * (began[:, 1:] & began[:, :-1])  # (B, T - 1) semitones
        moves = step > 0
        n = moves.sum(1, keepdim=True).clamp(min=1)
        bins = [((step >= lo) & (step <= hi)).sum(1, keepdim=True) / n for lo, hi in TOP_LINE_BINS]
        per_step_moves = moves.sum(1, keepdim=True) / steps
        per_step_semitones = step.sum(1, keepdim=True) / steps
        return bins + [per_step_moves, per_step_semitones, (per_step_moves + 1e-3).log(),
                       (per_step_semitones + 1e-3).log(), log_tempo - 4.6]


def judge_loss(model: ChromaticJudge, batch: dict, attribute_weight: float, feature_weight: float = 0.0,
               soft_weight: float = 0.0) -> tuple[torch.Tensor, dict]:
    """Mode cross-entropy + attribute_weight * MSE of the attributes (+ feature_weight * MSE of the raw
    features, where the model has that head and the batch its "features"); and counts for accuracy.

    With soft_weight and the batch's "scores" (B, 8), the mode target is (1 - soft_weight) * the label +
    soft_weight * those scores: the analyzer's soft scores say how near a segment lies to the next mode's
    prototype, which a one-hot label hides (distillation, as Hinton et al. 2015)."""
    logits, attributes, embedding = model(batch["roll"], batch["metre"], batch["log_tempo"])
    target = batch["mode"]
    if soft_weight and "scores" in batch:
        label = F.one_hot(batch["mode"], logits.shape[1]).float()
        target = (1 - soft_weight) * label + soft_weight * batch["scores"]
    loss = F.cross_entropy(logits, target) + attribute_weight * F.mse_loss(attributes, batch["targets"])
    if model.feature_head is not None and "features" in batch and feature_weight:
        loss = loss + feature_weight * F.mse_loss(model.feature_head(embedding), batch["features"])
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
        # a judge saved before the harmony branch existed has none
        config = JudgeConfig(**{"harmony_dim": 0, "key_profiles": 0, "feature_weight": 0.0, "top_line": False,
                                **payload["config"]})
        # The feature head is a training aid: judging never uses it, and its width follows the analyzer's
        # feature list of the day the judge was trained, so it is not rebuilt here.
        config.feature_weight = 0.0
        self.model = ChromaticJudge(config, payload["steps"], payload["pitches"],
                                    payload.get("pitch_low", 21))
        self.model.load_state_dict({k: v for k, v in payload["state_dict"].items() if not k.startswith("feature_head.")})
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


def shipped_judge(checkpoints_dir, device: str | torch.device = "cpu") -> TrainedJudge | None:
    """`<checkpoints_dir>/judge.pt` loaded, or None without one. A broken file is logged and also gives None:
    generation goes on with its candidates unranked (engines/generation/verify.py)."""
    from pathlib import Path

    path = Path(checkpoints_dir) / "judge.pt"
    if not path.is_file():
        return None
    try:
        return TrainedJudge.load(path, device=device)
    except Exception as exc:  # noqa: BLE001
        import logging

        logging.getLogger("engines.models").warning("chromatic judge %s not loaded: %s", path, exc)
        return None
