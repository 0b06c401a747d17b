"""Audio round-trip metrics for the codec, and the log-mel spectrogram its training loss uses (pure torch).

    si_snr(reference, estimate)       scale-invariant signal-to-noise ratio in dB (Le Roux et al. 2019): both
                                      made zero-mean, the estimate projected on the reference
    mel_filterbank(sr, n_fft, n_mels) triangular filters on the HTK mel scale, (n_mels, n_fft // 2 + 1)
    log_mel(x, sr, n_fft, n_mels)     log(mel power + 1e-5) of a Hann-windowed STFT with hop n_fft / 4
    log_mel_l1(a, b, sr)              mean |log_mel(a) - log_mel(b)| at n_fft 512, 1024 and 2048 (EnCodec's
                                      multi-scale spectral term uses the same scales)
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

MEL_SCALES = (512, 1024, 2048)


def si_snr(reference: torch.Tensor, estimate: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(..., T) tensors -> (...) SI-SNR in dB."""
    reference = reference - reference.mean(-1, keepdim=True)
    estimate = estimate - estimate.mean(-1, keepdim=True)
    scale = (estimate * reference).sum(-1, keepdim=True) / (reference.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * reference
    noise = estimate - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


@lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = 64) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, peaks 1, spaced evenly in HTK mel from 0 Hz to Nyquist."""
    bins = n_fft // 2 + 1
    freqs = torch.linspace(0, sample_rate / 2, bins, dtype=torch.float64)
    mels = torch.linspace(0, _hz_to_mel(sample_rate / 2), n_mels + 2, dtype=torch.float64)
    hz = 700.0 * (10 ** (mels / 2595.0) - 1.0)
    lower, centre, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    rising = (freqs[None] - lower) / (centre - lower)
    falling = (upper - freqs[None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def log_mel(x: torch.Tensor, sample_rate: int, n_fft: int = 1024, n_mels: int = 64) -> torch.Tensor:
    """x (..., T) -> (..., n_mels, frames)."""
    shape = x.shape
    window = torch.hann_window(n_fft, device=x.device)
    spec = torch.stft(x.reshape(-1, shape[-1]), n_fft, hop_length=n_fft // 4, window=window, return_complex=True,
                      center=True, pad_mode="reflect")
    power = spec.abs().pow(2)                                          # (N, bins, frames)
    mel = mel_filterbank(sample_rate, n_fft, n_mels).to(x.device) @ power
    return torch.log(mel + 1e-5).reshape(*shape[:-1], n_mels, -1)


def log_mel_l1(a: torch.Tensor, b: torch.Tensor, sample_rate: int, scales=MEL_SCALES) -> torch.Tensor:
    """Mean over scales of the mean absolute log-mel difference of a and b (..., T)."""
    return sum((log_mel(a, sample_rate, n) - log_mel(b, sample_rate, n)).abs().mean() for n in scales) / len(scales)
