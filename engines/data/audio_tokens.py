"""The GPT's MIDI -> audio task: a segment's opening bars and the codec tokens of their FluidSynth render.

    seconds   = model.autoregressive.audio_seconds (2 s: 100 codec frames at 50 a second)
    bars      = opening_bars(segment, seconds)          the bars that sound in those seconds
    REMI      = opening_remi(tokens, bars)              the REMI of those bars (tempo and metre included)
    audio     = render_opening(segment, seconds, ...)   FluidSynth, mono, cut or padded to exactly `seconds`
    codes     = codec.encode_batch(audio)[:codebooks]   the coarse `codebooks` of the codec's n_q

    audio_task_set(cfg, codec, split, n, seconds, codebooks) -> AudioTaskSet(rows, bars, codes (n, q, frames))

The set is built once per split, size, length, codebooks and codec weights (`codec_fingerprint`), and kept in
the cache folder as .npz; another codec (retrained, or official weights) gets a set of its own. Segments are
drawn evenly over the split, as the codec's own training renders are, so every collection shows up.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.folders import write_atomically
from engines.music.notes import TICKS_PER_QUARTER, Segment, first_bars

ENCODE_BATCH = 16   # clips the codec encodes at once while a set is built


@dataclass
class AudioTaskSet:
    rows: np.ndarray       # (n,) int64 cache rows
    bars: np.ndarray       # (n,) int64 opening bars whose REMI is given
    codes: np.ndarray      # (n, codebooks, frames) int16 codec codes of their render's first `seconds`

    def __len__(self) -> int:
        return len(self.rows)


def opening_bars(segment: Segment, seconds: float) -> int:
    """The bars of `segment` that sound within its first `seconds` (at least 1, at most all of them)."""
    bar_seconds = segment.bar_length / TICKS_PER_QUARTER * 60.0 / max(segment.tempo_qpm, 1e-6)
    return int(min(max(math.ceil(seconds / bar_seconds - 1e-9), 1), max(segment.num_bars, 1)))


def opening_remi(remi_ids, bars: int) -> list[int]:
    """REMI ids (miditok's, not unified) of the first `bars` bars: everything before the bars+1-th Bar token."""
    from engines.tokenizers.vocabulary import remi_token_names

    remi = [int(t) for t in remi_ids]
    bar_id = remi_token_names().index("Bar_None")
    starts = [i for i, t in enumerate(remi) if t == bar_id]
    return remi[:starts[bars]] if len(starts) > bars else remi


def render_opening(segment: Segment, seconds: float, sample_rate: int, soundfont: str = "",
                   gain: float = 0.5) -> np.ndarray:
    """The FluidSynth render of `segment`'s opening bars, mono float32 of exactly seconds * sample_rate samples
    (padded with silence when the music is shorter), peak-limited to [-1, 1] as the codec's renders are."""
    from engines.data.midi_io import segment_to_score
    from engines.render.fluidsynth_renderer import render_score

    length = int(round(seconds * sample_rate))
    opening = first_bars(segment, opening_bars(segment, seconds))
    if not len(opening.notes):
        return np.zeros(length, np.float32)
    mono = render_score(segment_to_score(opening), sample_rate=sample_rate, soundfont=soundfont, gain=gain,
                        tail_seconds=0.5).mean(axis=1)
    peak = float(np.abs(mono).max()) if len(mono) else 0.0
    mono = mono / peak * 0.95 if peak > 1 else mono
    out = np.zeros(length, np.float32)
    out[:min(length, len(mono))] = mono[:length]
    return out


def codec_fingerprint(codec) -> str:
    """A short hash of the codec's weights: which codec a set of codes (and a GPT trained on them) belongs to."""
    digest = hashlib.sha1()
    for name, tensor in sorted(codec.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def task_frames(codec, seconds: float) -> int:
    """Codec frames in `seconds` of audio."""
    return int(round(seconds * codec.frame_rate))


def audio_task_set(cfg: Config, codec, split: str, n: int, seconds: float, codebooks: int) -> AudioTaskSet:
    """The task's examples for `n` segments of `split` (module docstring), from the cache folder when built."""
    from engines.render.fluidsynth_renderer import find_soundfont

    if not 1 <= codebooks <= codec.n_q_used:
        raise ValueError(f"the codec writes {codec.n_q_used} codebooks; the task cannot use {codebooks}")
    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    rows = np.unique(indices[np.linspace(0, len(indices) - 1, min(n, len(indices))).astype(int)])
    rate = codec.config.sample_rate
    soundfont = str(find_soundfont(cfg.render.soundfont))
    # the corpus cache's fingerprint and every row: a rebuilt corpus gets a set of its own
    key = hashlib.sha1(repr((split, cache.meta.get("fingerprint"), hashlib.sha1(rows.tobytes()).hexdigest(), seconds,
                             codebooks, rate, soundfont, cfg.render.gain, codec_fingerprint(codec))).encode()
                       ).hexdigest()[:12]
    path = Path(cfg.data.cache_dir) / "audio" / f"task-{split}-{len(rows)}-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            return AudioTaskSet(data["rows"], data["bars"], data["codes"])
    frames = task_frames(codec, seconds)
    samples = frames * codec.hop_length
    bars = np.zeros(len(rows), np.int64)
    codes = np.zeros((len(rows), codebooks, frames), np.int16)
    for start in range(0, len(rows), ENCODE_BATCH):
        batch = []
        for i in range(start, min(start + ENCODE_BATCH, len(rows))):
            segment = cache.segment(int(rows[i]))
            bars[i] = opening_bars(segment, seconds)
            batch.append(render_opening(segment, samples / rate, rate, soundfont, cfg.render.gain))
        encoded = codec.encode_batch(np.stack(batch))                  # (n_q, B, frames)
        codes[start:start + len(batch)] = encoded[:codebooks].permute(1, 0, 2)[..., :frames].numpy()
    result = AudioTaskSet(rows.astype(np.int64), bars, codes)
    write_atomically(path, lambda tmp: np.savez(tmp, rows=result.rows, bars=result.bars, codes=result.codes))
    return result
