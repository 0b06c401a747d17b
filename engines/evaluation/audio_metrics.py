"""Audio round-trip metrics for the codec, and the log-mel spectrogram its training loss uses (pure torch).

    si_snr(reference, estimate)       scale-invariant signal-to-noise ratio in dB (Le Roux et al. 2019): both
                                      made zero-mean, the estimate projected on the reference
    mel_filterbank(sr, n_fft, n_mels) triangular filters on the HTK mel scale, (n_mels, n_fft // 2 + 1)
    log_mel(x, sr, n_fft, n_mels)     log(mel power + 1e-5) of a Hann-windowed STFT with hop n_fft / 4
    log_mel_l1(a, b, sr)              mean |log_mel(a) - log_mel(b)| at n_fft 512, 1024 and 2048 (EnCodec's
                                      multi-scale spectral term uses the same scales)
    chroma(x, sr)                     12-bin chroma: STFT power of the bins from A1 (55 Hz) to 5 kHz summed by
                                      the pitch class each bin's frequency rounds to, (frames, 12)
    chroma_correlation(a, b, sr)      the mean over frames of the Pearson correlation of a's and b's chroma
                                      (frames where the reference b is silent, or either is flat, left out)
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


CHROMA_FFT, CHROMA_HOP = 4096, 1024
CHROMA_LOW_HZ, CHROMA_HIGH_HZ = 55.0, 5000.0


@lru_cache(maxsize=8)
def _pitch_class_matrix(sample_rate: int, n_fft: int) -> torch.Tensor:
    """(12, n_fft // 2 + 1): 1 where a bin's frequency rounds to that pitch class (inside the chroma's band)."""
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft
    inside = (freqs >= CHROMA_LOW_HZ) & (freqs <= CHROMA_HIGH_HZ)
    pitch = 69 + 12 * torch.log2(freqs.clamp(min=1e-6) / 440.0)
    pc = torch.round(pitch).long() % 12
    matrix = torch.zeros(12, len(freqs))
    matrix[pc[inside], torch.nonzero(inside).squeeze(1)] = 1.0
    return matrix


def chroma(x: torch.Tensor, sample_rate: int, n_fft: int = CHROMA_FFT, hop: int = CHROMA_HOP) -> torch.Tensor:
    """x (T,) -> (frames, 12) chroma power."""
    x = torch.as_tensor(x, dtype=torch.float32).reshape(-1)
    if len(x) < n_fft:
        x = torch.nn.functional.pad(x, (0, n_fft - len(x)))
    spec = torch.stft(x, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True, center=True,
                      pad_mode="constant")
    return (_pitch_class_matrix(sample_rate, n_fft) @ spec.abs().pow(2)).T


def chroma_correlation(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int,
                       silence: float = 1e-3) -> float:
    """Mean frame-wise Pearson correlation of the chroma of `estimate` and `reference` (module docstring); frames
    where the reference's chroma energy is under `silence` times its loudest frame's are left out. NaN when
    no frame is left."""
    a, b = chroma(estimate, sample_rate), chroma(reference, sample_rate)
    frames = min(len(a), len(b))
    a, b = a[:frames], b[:frames]
    energy = b.sum(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    keep = (energy > silence * energy.max().clamp(min=1e-12)) & (norm > 1e-12)
    if not bool(keep.any()):
        return float("nan")
    return float(((a * b).sum(1)[keep] / norm[keep]).mean())
