"""`python -m engines train --engine codec`: the project's EnCodec-architecture codec on FluidSynth piano renders.

    data        `render_segments` training segments and 24 validation segments rendered once at the codec's
                sample rate (engines/data/audio_renders.py), each scaled to `input_rms` as encode() scales a
                clip; training reads random `crop_seconds` crops, `crops_per_segment` per segment and epoch
    loss        `mel_weight` x multi-scale log-mel L1 (n_fft 512 / 1024 / 2048) + `l1_weight` x waveform L1
                - `si_snr_weight` x SI-SNR (dB, capped at 40) + the RVQ's commitment loss; codebooks are EMA k-means as in EnCodec
                (no adversarial loss: at this size and budget the spectral and waveform terms do the work)
    validation  the first 4 s of every validation render: the loss, SI-SNR (dB) and log-mel L1 of the round trip
    loop        engines/training/ema_loop.py with ema_decay 0: the checkpoint holds the weights as trained (the
                EMA k-means codebooks already average, and they are fitted to those weights' encoder)
    init        `init_checkpoint`: start from a codec checkpoint's weights and codebooks (training on from a
                shipped codec with a learning-rate schedule of its own); its architecture must be this config's
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.config import Config
from engines.data.audio_renders import RenderSet, rendered_segments
from engines.evaluation.audio_metrics import log_mel_l1, si_snr
from engines.models.codec import AudioCodec, codec_payload, loudness_gain
from engines.models.codec_config import CodecConfig
from engines.training.ema_loop import LoopSettings, train_with_ema

VALIDATION_SEGMENTS = 24
VALIDATION_SECONDS = 4.0


def clip_at_level(renders: RenderSet, i: int, target_rms: float) -> np.ndarray:
    """Render i scaled as AudioCodec.encode scales a clip (the whole clip to `target_rms`)."""
    clip = renders.clip(i)
    return clip * float(loudness_gain(torch.from_numpy(clip), target_rms))


class CropDataset(Dataset):
    """Random crops of `samples` samples, `per_clip` per render and epoch, of renders at `target_rms`;
    short clips are zero-padded."""

    def __init__(self, renders: RenderSet, samples: int, per_clip: int, target_rms: float = 0.0):
        self.renders, self.samples, self.per_clip, self.target_rms = renders, samples, per_clip, target_rms

    def __len__(self) -> int:
        return len(self.renders) * self.per_clip

    def __getitem__(self, i: int) -> dict:
        clip = clip_at_level(self.renders, i // self.per_clip, self.target_rms)
        out = np.zeros(self.samples, np.float32)
        if len(clip) > self.samples:
            start = int(torch.randint(0, len(clip) - self.samples + 1, ()).item())
            out[:] = clip[start:start + self.samples]
        else:
            out[:len(clip)] = clip
        return {"audio": torch.from_numpy(out)[None]}


class FixedClips(Dataset):
    """The first `samples` samples of every render at `target_rms` (zero-padded): validation."""

    def __init__(self, renders: RenderSet, samples: int, target_rms: float = 0.0):
        self.renders, self.samples, self.target_rms = renders, samples, target_rms

    def __len__(self) -> int:
        return len(self.renders)

    def __getitem__(self, i: int) -> dict:
        clip = clip_at_level(self.renders, i, self.target_rms)[:self.samples]
        out = np.zeros(self.samples, np.float32)
        out[:len(clip)] = clip
        return {"audio": torch.from_numpy(out)[None]}


def codec_loss(model, audio: torch.Tensor, config: CodecConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, reconstruction) for audio (B, 1, T)."""
    recon, commitment = model(audio)
    sounding = audio[:, 0].pow(2).mean(-1) > 1e-6  # SI-SNR means nothing on a silent crop
    snr = si_snr(audio[:, 0], recon[:, 0]).clamp(max=40)
    snr_term = (snr * sounding).sum() / sounding.sum().clamp(min=1)
    loss = (config.mel_weight * log_mel_l1(recon[:, 0], audio[:, 0], config.sample_rate)
            + config.l1_weight * (recon - audio).abs().mean() + config.commitment_weight * commitment
            - config.si_snr_weight * snr_term)
    return loss, recon


@torch.no_grad()
def validate(model: AudioCodec, loader, device, config: CodecConfig) -> dict:
    model.eval()
    losses, snrs, mels = [], [], []
    for batch in loader:
        audio = batch["audio"].to(device)
        loss, recon = codec_loss(model, audio, config)
        losses.append(loss.item())
        snrs += si_snr(audio[:, 0], recon[:, 0]).tolist()
        mels.append(log_mel_l1(recon[:, 0], audio[:, 0], config.sample_rate).item())
    return {"val_loss": float(np.mean(losses)), "val_si_snr": float(np.mean(snrs)), "val_mel_l1": float(np.mean(mels))}


def build_codec(config: CodecConfig) -> AudioCodec:
    """A codec of `config`; with `config.init_checkpoint`, that checkpoint's weights and codebooks."""
    model = AudioCodec(config)
    if config.init_checkpoint:
        from engines.errors import StudioError
        from engines.training.common import load_checkpoint

        payload = load_checkpoint(config.init_checkpoint, engine="codec")
        architecture = ("n_filters", "dimension", "ratios", "lstm", "n_q", "bins", "sample_rate")
        different = [k for k in architecture if list(np.atleast_1d(payload["config"][k])) !=
                     list(np.atleast_1d(getattr(config, k)))]
        if different:
            raise StudioError(f"model.codec.init_checkpoint has another {different[0]} "
                              f"({payload['config'][different[0]]}) than the config ({getattr(config, different[0])})")
        model.load_state_dict(payload["state_dict"])
    return model


def train_codec(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False, limit: int = 0,
                seed: int = 0, workers: int = 1) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the rendered training segments (tests)."""
    cc = cfg.model.codec
    train_renders = rendered_segments(cfg, "train", limit or cc.render_segments, cc.sample_rate)
    val_renders = rendered_segments(cfg, "validation", min(VALIDATION_SEGMENTS, limit or VALIDATION_SEGMENTS),
                                    cc.sample_rate)
    train_set = CropDataset(train_renders, int(cc.crop_seconds * cc.sample_rate), cc.crops_per_segment, cc.input_rms)
    val_set = FixedClips(val_renders, int(VALIDATION_SECONDS * cc.sample_rate), cc.input_rms)
    settings = LoopSettings(cc.learning_rate, cc.weight_decay, cc.batch_size, cc.epochs, ema_decay=0.0,
                            val_batch_size=8)

    def payload(ema, row):
        return codec_payload(ema, row, {"data": {"render_segments": len(train_renders),
                                                 "audio_seconds": round(train_renders.seconds, 1)}})

    return train_with_ema(lambda: build_codec(cc), train_set, val_set, settings,
                          loss_fn=lambda model, batch: codec_loss(model, batch["audio"], cc)[0],
                          validate_fn=lambda ema, loader, device: validate(ema, loader, device, cc),
                          payload_fn=payload, out_dir=out_dir, max_minutes=max_minutes, resume=resume, seed=seed,
                          workers=workers)
