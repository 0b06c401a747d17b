"""The audio codec: EnCodec's architecture from the `encodec` package, trained here or loaded from official weights.

    waveform (B, 1, T) -> SEANetEncoder -> (B, D, frames) -> ResidualVectorQuantizer (n_q codebooks of `bins`)
                       -> codes [n_q, B, frames] -> decode: sum of codewords -> SEANetDecoder -> (B, 1, T)

`encode(waveform) -> codes [n_q, frames]` and `decode(codes) -> waveform` work on one mono clip at
`sample_rate`; encode first scales the clip to `input_rms` (as training saw it), decode returns that
level, and `round_trip` gives the clip back at its own loudness. The project's codec (CodecConfig defaults)
hops 320 samples at 16 kHz: 50 frames and 4 x 50 = 200 tokens per second, 2 kbps. When `pretrained_path`
names the official 24 kHz EnCodec weights on disk, that model is built instead (causal SEANet, 32 codebooks,
used at `pretrained_bandwidth`); nothing is downloaded.

The `encodec` package's own __init__ imports torchaudio (whose CUDA-only wheel cannot load here) for file
I/O we do not use, so its modules are imported without running that __init__ (`encodec_modules`).
"""
from __future__ import annotations

import importlib.util
import math
import sys
import types
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from engines.errors import StudioError
from engines.models.codec_config import CodecConfig

OFFICIAL_24KHZ = {"sample_rate": 24000, "n_filters": 32, "dimension": 128, "ratios": [8, 5, 4, 2], "lstm": 2,
                  "n_q": 32, "bins": 1024, "input_rms": 0.0, "causal": True}
SILENT_RMS = 1e-5  # a clip this quiet is encoded as it is (no gain to blow its noise up)


def loudness_gain(x: torch.Tensor, target_rms: float) -> torch.Tensor:
    """The factor that brings x (..., T) to `target_rms` (1 where target_rms is 0 or x is silent), shaped (..., 1)."""
    rms = x.pow(2).mean(-1, keepdim=True).sqrt()
    if not target_rms:
        return torch.ones_like(rms)
    return torch.where(rms > SILENT_RMS, target_rms / rms.clamp(min=SILENT_RMS), torch.ones_like(rms))


def encodec_modules():
    """(SEANetEncoder, SEANetDecoder, ResidualVectorQuantizer) from the installed encodec package."""
    if "encodec" not in sys.modules:
        spec = importlib.util.find_spec("encodec")
        if spec is None or not spec.submodule_search_locations:
            raise StudioError("the encodec package is not installed; `make venv` installs it (pip install "
                              "--no-deps encodec==0.1.1)")
        package = types.ModuleType("encodec")  # the package without its torchaudio-importing __init__
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["encodec"] = package
    from encodec.modules import SEANetDecoder, SEANetEncoder
    from encodec.quantization import ResidualVectorQuantizer

    return SEANetEncoder, SEANetDecoder, ResidualVectorQuantizer


class AudioCodec(nn.Module):
    """Encoder, residual VQ and decoder under EnCodec's attribute names (official state dicts load as they are)."""

    def __init__(self, config: CodecConfig, causal: bool = False, n_q_used: int | None = None):
        super().__init__()
        Encoder, Decoder, RVQ = encodec_modules()
        self.config, self.causal = config, causal
        common = dict(channels=1, dimension=config.dimension, n_filters=config.n_filters, ratios=list(config.ratios),
                      lstm=config.lstm, causal=causal, norm="weight_norm")
        self.encoder = Encoder(**common)
        self.decoder = Decoder(**common)
        self.quantizer = RVQ(dimension=config.dimension, n_q=config.n_q, bins=config.bins)
        self.n_q_used = n_q_used or config.n_q    # codebooks encode() writes (the official model: by bandwidth)

    @property
    def hop_length(self) -> int:
        return int(math.prod(self.config.ratios))

    @property
    def frame_rate(self) -> float:
        return self.config.sample_rate / self.hop_length

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training pass: x (B, 1, T) -> reconstruction (B, 1, T'), commitment loss (T' >= T, trimmed here)."""
        z = self.encoder(x)                                            # (B, D, frames)
        q = self.quantizer(z, self.config.sample_rate)
        return self.decoder(q.quantized)[..., :x.shape[-1]], q.penalty

    @torch.no_grad()
    def encode(self, waveform) -> torch.Tensor:
        """Mono waveform (T,) at `sample_rate` -> codes [n_q, frames] (long)."""
        x = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, 1, -1).to(self._device())
        if x.shape[-1] < self.hop_length:
            raise StudioError(f"audio of {x.shape[-1]} samples is shorter than one codec frame ({self.hop_length})")
        x = x * loudness_gain(x, self.config.input_rms)
        codes = self.quantizer.vq.encode(self.encoder(x), n_q=self.n_q_used)  # (n_q, 1, frames)
        return codes[:, 0].cpu()

    @torch.no_grad()
    def encode_batch(self, waveforms) -> torch.Tensor:
        """Mono clips of one length (B, T) -> codes [n_q, B, frames] (long), each clip scaled as encode scales it."""
        x = torch.as_tensor(np.asarray(waveforms), dtype=torch.float32)
        if x.ndim != 2 or x.shape[-1] < self.hop_length:
            raise StudioError(f"encode_batch takes clips shaped (B, T >= {self.hop_length}), got {list(x.shape)}")
        x = x[:, None].to(self._device())
        x = x * loudness_gain(x, self.config.input_rms)
        return self.quantizer.vq.encode(self.encoder(x), n_q=self.n_q_used).cpu()

    @torch.no_grad()
    def decode(self, codes) -> torch.Tensor:
        """codes [n_q, frames] -> mono waveform (frames * hop_length,) float32."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.ndim != 2 or not 1 <= codes.shape[0] <= self.config.n_q:
            raise StudioError(f"codec codes must be shaped [n_q <= {self.config.n_q}, frames], got {list(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.config.bins):
            raise StudioError(f"codec codes must lie in 0..{self.config.bins - 1}")
        quantized = self.quantizer.vq.decode(codes[:, None].to(self._device()))  # (1, D, frames)
        return self.decoder(quantized)[0, 0].cpu()

    @torch.no_grad()
    def round_trip(self, waveform) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes [n_q, frames], the decoded clip at the input's loudness and length (T,))."""
        x = torch.as_tensor(waveform, dtype=torch.float32).reshape(-1)
        codes = self.encode(x)
        decoded = self.decode(codes)[:len(x)]
        return codes, decoded / loudness_gain(x, self.config.input_rms)[0]

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def codec_payload(model: AudioCodec, metrics: dict, extra: dict | None = None) -> dict:
    return {"engine": "codec", "config": asdict(model.config), "state_dict": model.state_dict(),
            "metrics": metrics, **(extra or {})}


def codec_from_checkpoint(payload: dict) -> AudioCodec:
    model = AudioCodec(CodecConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_codec(checkpoint: str | Path, pretrained_path: str = "", bandwidth: float = 1.5) -> AudioCodec:
    """The official EnCodec when `pretrained_path` names its weights (model.codec.pretrained_path), else the
    project's codec checkpoint."""
    if pretrained_path:
        return load_official_encodec(pretrained_path, bandwidth)
    from engines.training.common import load_checkpoint

    return codec_from_checkpoint(load_checkpoint(checkpoint, engine="codec"))


def installed_codec(cfg):
    """The codec the config installs (official weights at model.codec.pretrained_path, else codec.pt in the
    checkpoints folder), or None when there is neither: what the GPT's own audio is decoded with."""
    c = cfg.model.codec
    path = Path(cfg.model.checkpoints_dir) / "codec.pt"
    return load_codec(path, c.pretrained_path, c.pretrained_bandwidth) if path.is_file() or c.pretrained_path \
        else None


def load_official_encodec(path: str | Path, bandwidth: float = 1.5) -> AudioCodec:
    """The official EnCodec 24 kHz model from its weights file on disk (e.g. the torch hub cache's
    encodec_24khz-d7cc33bc.th), using the codebooks `bandwidth` kbps allow (1.5 -> 2, 75 frames/s)."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no EnCodec weights at '{path}' (model.codec.pretrained_path); nothing is downloaded")
    config = CodecConfig(**{k: v for k, v in OFFICIAL_24KHZ.items() if k != "causal"})
    frame_rate = config.sample_rate / math.prod(config.ratios)
    n_q = max(1, int(bandwidth * 1000 // (frame_rate * math.log2(config.bins))))
    model = AudioCodec(config, causal=True, n_q_used=n_q)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001  (a foreign or truncated file)
        raise StudioError(f"'{path.name}' is not the EnCodec 24 kHz state dict ({type(exc).__name__}: {exc})") from None
    return model.eval()
