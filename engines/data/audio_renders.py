"""Piano renders of corpus segments for the audio codec: FluidSynth, mono, at the codec's sample rate, on disk.

    rendered_segments(cfg, split, n, sample_rate) -> RenderSet (clips back to back + offsets, float16)

`n` segments of a split, evenly spaced over it (so every collection shows up), are rendered once with
the project's renderer (engines/render, the configured soundfont and gain; program 0, acoustic grand
piano) and cached under <data.cache_dir>/audio/ keyed by split, n, sample rate and soundfont; a later call
reads the file. Each clip is peak-limited to [-1, 1] and keeps the render's release tail.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.folders import write_atomically


@dataclass
class RenderSet:
    audio: np.ndarray        # float16, every clip back to back
    offsets: np.ndarray      # int64 (n + 1,): clip i is audio[offsets[i]:offsets[i + 1]]
    rows: np.ndarray         # cache rows rendered
    sample_rate: int

    def __len__(self) -> int:
        return len(self.rows)

    def clip(self, i: int) -> np.ndarray:
        return self.audio[self.offsets[i]:self.offsets[i + 1]].astype(np.float32)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.sample_rate


def rendered_segments(cfg: Config, split: str, n: int, sample_rate: int) -> RenderSet:
    from engines.data.midi_io import segment_to_score
    from engines.render.fluidsynth_renderer import find_soundfont, render_score

    cache = ensure_corpus_cache(cfg)
    indices = cache.split_indices(split)
    rows = indices[np.linspace(0, len(indices) - 1, min(n, len(indices))).astype(int)]
    soundfont = str(find_soundfont(cfg.render.soundfont))
    key = hashlib.sha1(repr((split, len(rows), sample_rate, soundfont, cfg.render.gain, rows[:5].tolist()))
                       .encode()).hexdigest()[:10]
    path = Path(cfg.data.cache_dir) / "audio" / f"renders-{split}-{len(rows)}-{sample_rate}-{key}.npz"
    if path.is_file():
        with np.load(path) as data:
            return RenderSet(data["audio"], data["offsets"], data["rows"], int(data["sample_rate"]))
    clips = []
    for row in rows.tolist():
        stereo = render_score(segment_to_score(cache.segment(row)), sample_rate=sample_rate, soundfont=soundfont,
                              gain=cfg.render.gain, tail_seconds=0.5)
        mono = stereo.mean(axis=1)
        peak = float(np.abs(mono).max()) if len(mono) else 0.0
        clips.append((mono / peak * 0.95 if peak > 1 else mono).astype(np.float16))
    offsets = np.concatenate([[0], np.cumsum([len(c) for c in clips])]).astype(np.int64)
    result = RenderSet(np.concatenate(clips), offsets, rows.astype(np.int64), sample_rate)
    write_atomically(path, lambda tmp: np.savez(tmp, audio=result.audio, offsets=result.offsets, rows=result.rows,
                                                sample_rate=sample_rate))
    return result
