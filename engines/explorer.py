"""The Latent Explorer's engine side: the VAE's latent map, decoding any place on it, interpolation strips and
attribute arithmetic. Plain data in and out (latents travel as lists of floats), so the studio holds a latent
in gr.State without importing torch.

    map_points()                   the UMAP of training latents: x, y, mode, segment number, label
    latent_of_segment(i)           a corpus segment's posterior mean
    latent_at(x, y)                inverse UMAP: any place on the map -> a latent
    decode(latent, mode)           -> LatentView (notes, analysis, MIDI, WAV)
    interpolate(a, b, steps, ...)  -> Strip: one view per step, plus the steps stitched into one MIDI and WAV
    shift(latent, amounts, ...)    latent + Σ amount · attribute vector (+ amount · "towards mode X")
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.errors import StudioError
from engines.music.analyzer import AXES, MODES, WHITE
from engines.music.notes import TICKS_PER_QUARTER, Segment

SHIFT_VECTORS = ("rebracketing", "temporal_complexity") + AXES   # sliders of the explorer, in this order


@dataclass
class LatentView:
    title: str
    latent: list[float]
    analysis: dict | None            # None when the latent decodes to no notes
    color: str
    notes: object                    # engines.views.NoteView
    midi_path: str
    wav_path: str | None


@dataclass
class Strip:
    steps: list[LatentView]
    notes: object                    # NoteView of all steps one after another, each shaded by its mode
    midi_path: str                   # all steps one after another
    wav_path: str | None             # None when no step holds a note


class LatentExplorer:
    def __init__(self, engine):
        self.engine = engine  # engines.api.StudioEngine: its model registry, files and renderer

    @property
    def vae(self):
        return self.engine.models.get("vae").model   # the TrainedVAE behind the generator

    def _map(self):
        latent_map = self.vae.latent_map
        if latent_map is None:
            raise StudioError("this VAE checkpoint has no latent map; re-run `python -m engines train --engine vae "
                              "--finalize-only --out RUN` to fit one")
        return latent_map

    def warm(self) -> None:
        """Load the VAE and compile umap's inverse transform (call from a background thread at start-up)."""
        self._map().warm()

    # ---- where latents come from ------------------------------------------------------------------------
    def map_points(self) -> dict:
        latent_map = self._map()
        rows = self.engine.cache.segments[latent_map.rows]
        labels = [f"{self.engine.cache.pieces[int(r['piece'])]['id']}, bars {int(r['bar_start']) + 1}-"
                  f"{int(r['bar_start']) + int(r['num_bars'])}" for r in rows]
        return {"x": latent_map.embedding[:, 0].tolist(), "y": latent_map.embedding[:, 1].tolist(),
                "mode": [MODES[m] for m in rows["mode"]], "index": latent_map.rows.tolist(), "label": labels}

    def latent_of_segment(self, index: int) -> list[float]:
        if not 0 <= int(index) < len(self.engine.cache.segments):
            raise StudioError(f"segment {index} does not exist; the corpus has {len(self.engine.cache.segments)}")
        segment = self.engine.cache.segment(int(index))
        mode = self.engine.stored_analysis(int(index))["mode"]
        return self.vae.encode([segment], mode)[0].tolist()

    def latent_at(self, x: float, y: float) -> list[float]:
        if not (np.isfinite(x) and np.isfinite(y)):
            raise StudioError(f"a map place needs two finite numbers, got ({x}, {y})")
        return self._map().inverse(np.array([[x, y]]))[0].tolist()

    def place_of(self, latent: list[float]) -> tuple[float, float]:
        """Where a latent lies on the map (LatentMap.project): the marker of a shifted latent."""
        x, y = self._map().project(np.asarray(self._tensor(latent)))[0]
        return float(x), float(y)

    def sample(self, mode: str, seed: int, temperature: float = 1.0) -> list[float]:
        return self.vae.sample_latents(mode, 1, temperature, seed)[0].tolist()

    # ---- what is done with them -------------------------------------------------------------------------
    def decode(self, latent: list[float], mode: str = WHITE, title: str = "") -> LatentView:
        z = self._tensor(latent)
        (segment,) = self.vae.decode(z[None], mode)
        return self._view(segment, latent, title or f"decoded under {mode}")

    def interpolate(self, a: list[float], b: list[float], steps: int = 8, method: str = "slerp",
                    mode: str = WHITE) -> Strip:
        if not 2 <= int(steps) <= 32:
            raise StudioError(f"an interpolation strip has 2..32 steps, got {steps}")
        path = self.vae.interpolate(self._tensor(a), self._tensor(b), int(steps), method)
        segments = self.vae.decode(path, mode)
        views = [self._view(s, z.tolist(), f"step {i + 1}/{len(segments)}") for i, (s, z) in enumerate(zip(segments, path))]
        midi, wav = self.engine.export_segments(segments, "strip")
        return Strip(steps=views, notes=_strip_notes(segments, views), midi_path=midi, wav_path=wav)

    def shift(self, latent: list[float], amounts: dict, towards_mode: str | None = None,
              mode_amount: float = 0.0) -> list[float]:
        """latent + Σ amounts[name] · vector(name) (+ mode_amount · vector("mode:X"))."""
        z = self._tensor(latent)
        for name, amount in amounts.items():
            if name not in SHIFT_VECTORS:
                raise StudioError(f"unknown attribute '{name}'; choose from {', '.join(SHIFT_VECTORS)}")
            if amount:
                z = self.vae.shift(z, name, float(amount))
        if towards_mode and towards_mode != WHITE and mode_amount:
            if towards_mode not in MODES:
                raise StudioError(f"unknown mode '{towards_mode}'; choose one of {', '.join(MODES)}")
            z = self.vae.shift(z, f"mode:{towards_mode}", float(mode_amount))
        return z.tolist()

    # ---- helpers ----------------------------------------------------------------------------------------
    def _tensor(self, latent):
        import torch

        z = torch.as_tensor(np.asarray(latent, np.float32))
        if z.shape != (self.vae.latent_dim,) or not torch.isfinite(z).all():
            raise StudioError(f"a latent here is {self.vae.latent_dim} finite numbers; got shape {tuple(z.shape)}")
        return z

    def _view(self, segment: Segment, latent: list[float], title: str) -> LatentView:
        return LatentView(title=title, latent=list(latent), **self.engine.segment_result(segment, "latent"))


def _strip_notes(segments: list[Segment], views: list[LatentView]):
    """One NoteView of the steps played in a row; each step's span is coloured by the mode the analyzer hears."""
    from engines.views import note_view

    q = float(TICKS_PER_QUARTER)
    offsets = np.cumsum([0] + [s.length for s in segments])
    notes = np.concatenate([s.notes for s in segments])  # a copy
    notes["start"] += np.repeat(offsets[:-1], [len(s.notes) for s in segments]).astype(notes["start"].dtype)
    regions = [{"start": offsets[i] / q, "end": offsets[i + 1] / q,
                "mode": v.analysis["mode"] if v.analysis else WHITE, "color": v.color,
                "label": f"{i + 1}: {v.analysis['mode'] if v.analysis else 'empty'}"} for i, v in enumerate(views)]
    view = note_view(notes, segments[0].bar_length, 0, regions)
    view.bar_lines = [float(o) / q for o in offsets]
    return view
