"""`python -m engines evaluate --engine codec --n 100`: the codec's round trip on held-out piano renders.

    token_rate         tokens per second of audio (codebooks used x frames per second)
    bitrate_kbps       token_rate x log2(bins) / 1000
    si_snr_db          SI-SNR of the round trip (encode, decode, back to x's loudness) against x, mean (and
                       median) over `n` test-split renders
    log_mel_l1         multi-scale log-mel L1 of the same (engines/evaluation/audio_metrics.py)
    x_realtime         audio seconds encoded and decoded per second of compute
The codec is the shipped one, or the official EnCodec when `model.codec.pretrained_path` names its weights.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch

from engines.config import Config
from engines.data.audio_renders import rendered_segments
from engines.evaluation.audio_metrics import log_mel_l1, si_snr
from engines.models.codec import load_codec


def evaluate_codec(checkpoint: str, cfg: Config, n: int = 100) -> dict:
    codec = load_codec(checkpoint, cfg.model.codec.pretrained_path, cfg.model.codec.pretrained_bandwidth)
    sample_rate = codec.config.sample_rate
    renders = rendered_segments(cfg, "test", n, sample_rate)
    snrs, mels, seconds, audio_seconds = [], [], 0.0, 0.0
    for i in range(len(renders)):
        clip = torch.from_numpy(renders.clip(i))
        start = time.perf_counter()
        _, decoded = codec.round_trip(clip)
        seconds += time.perf_counter() - start
        audio_seconds += len(clip) / sample_rate
        snrs.append(float(si_snr(clip, decoded)))
        mels.append(float(log_mel_l1(decoded, clip, sample_rate)))
    token_rate = codec.n_q_used * codec.frame_rate
    return {"engine": "codec", "checkpoint": str(cfg.model.codec.pretrained_path or checkpoint), "n": len(renders),
            "sample_rate": sample_rate, "codebooks": codec.n_q_used, "bins": codec.config.bins,
            "token_rate": round(token_rate, 2),
            "bitrate_kbps": round(token_rate * math.log2(codec.config.bins) / 1000, 3),
            "si_snr_db": round(float(np.mean(snrs)), 3), "si_snr_db_median": round(float(np.median(snrs)), 3),
            "log_mel_l1": round(float(np.mean(mels)), 4), "audio_seconds": round(audio_seconds, 1),
            "x_realtime": round(audio_seconds / max(seconds, 1e-9), 1), "threads": torch.get_num_threads()}
