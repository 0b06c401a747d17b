"""Trained models, loaded once and shared by every user of the studio (and the CLI), behind one lock.

Torch is imported only when a model is first asked for, so the studio starts (and browses) without it.
"""
from __future__ import annotations

import threading
from pathlib import Path

from engines.errors import StudioError

ENGINES = ("vae",)  # diffusion and autoregressive join as their issues land


class ModelRegistry:
    def __init__(self, checkpoints_dir: str | Path):
        self.checkpoints_dir = Path(checkpoints_dir)
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def checkpoint_path(self, engine: str) -> Path:
        if engine not in ENGINES:
            raise StudioError(f"unknown engine '{engine}'; available: {', '.join(ENGINES)}")
        return self.checkpoints_dir / f"{engine}.pt"

    def available(self) -> list[str]:
        return [e for e in ENGINES if self.checkpoint_path(e).is_file()]

    def get(self, engine: str):
        """The loaded model of `engine` (loaded on first use). Raises StudioError when it has no checkpoint."""
        path = self.checkpoint_path(engine)
        with self._lock:
            if engine not in self._models:
                if not path.is_file():
                    raise StudioError(f"no {engine.upper()} checkpoint at '{path}'; train one with "
                                      f"`python -m engines train --engine {engine}` and copy its best.pt there")
                from engines.models.trained_vae import TrainedVAE
                from engines.training.common import pick_device

                self._models[engine] = TrainedVAE.load(path, device=pick_device())
            return self._models[engine]
