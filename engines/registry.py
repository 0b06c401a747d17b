"""Trained models, loaded once and shared by every user of the studio (and the CLI), behind one lock.

`get(engine)` gives the engine's Generator (engines/generation/), loaded from `<checkpoints_dir>/<engine>.pt`.
Torch is imported only when a model is first asked for, so the studio starts (and browses) without it.
The diffusion engine comes with its guidance classifier attached when `guidance-classifier.pt` lies beside it.
The audio codec (`codec.pt`, or official EnCodec weights named in the config) is optional: `codec()` is None
without one. `batcher(engine)` is the engine's one Batcher (engines/generation/batching.py): every user's
requests to that engine go through it, so those that arrive together share a batch.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from engines.errors import StudioError
from engines.generation import GENERATORS

LOG = logging.getLogger("engines.registry")


class ModelRegistry:
    def __init__(self, checkpoints_dir: str | Path, batching=None):
        self.checkpoints_dir = Path(checkpoints_dir)
        self.batching = batching         # engines.config.BatchingConfig; None: no batching
        if batching is not None and batching.threads is not None:
            import torch

            torch.set_num_threads(int(batching.threads))   # every thread that computes later uses this many
        self._models: dict[str, object] = {}
        self._batchers: dict[str, object] = {}
        self._lock = threading.Lock()

    def checkpoint_path(self, engine: str) -> Path:
        if engine not in GENERATORS:
            raise StudioError(f"unknown engine '{engine}'; available: {', '.join(GENERATORS)}")
        return self.checkpoints_dir / f"{engine}.pt"

    def available(self) -> list[str]:
        return [e for e in GENERATORS if self.checkpoint_path(e).is_file()]

    def get(self, engine: str):
        """The Generator of `engine` (loaded on first use). Raises StudioError when it has no checkpoint."""
        path = self.checkpoint_path(engine)
        with self._lock:
            if engine not in self._models:
                if not path.is_file():
                    raise StudioError(f"no {engine.upper()} checkpoint at '{path}'; train one with "
                                      f"`python -m engines train --engine {engine}` and copy its best.pt there")
                from engines.training.common import pick_device

                model = GENERATORS[engine].load(path, device=pick_device())
                self._models[engine] = model
            return self._models[engine]

    def batcher(self, engine: str):
        """The engine's Batcher, made on first use (its model loaded by `get`)."""
        generator = self.get(engine)
        with self._lock:
            if engine not in self._batchers:
                from engines.generation.batching import Batcher

                b = self.batching
                self._batchers[engine] = Batcher(generator, b.max_batch if b else 1,
                                                 (b.window_ms if b else 0.0) / 1000, engine)
            return self._batchers[engine]

    def judge(self):
        """The learned chromatic judge (judge.pt), loaded once; None without one (or when the file is broken)."""
        with self._lock:
            if "judge" not in self._models:
                from engines.models.chromatic_judge import shipped_judge
                from engines.training.common import pick_device

                self._models["judge"] = shipped_judge(self.checkpoints_dir, pick_device())
            return self._models["judge"]

    def codec(self, pretrained_path: str = "", bandwidth: float = 1.5):
        """The audio codec, loaded once: official EnCodec weights at `pretrained_path` when given, else
        `codec.pt` beside the engines; None when there is neither (or the file is broken: logged)."""
        with self._lock:
            if "codec" not in self._models:
                path = self.checkpoints_dir / "codec.pt"
                codec = None
                try:
                    if pretrained_path or path.is_file():
                        from engines.models.codec import load_codec

                        codec = load_codec(path, pretrained_path, bandwidth)
                except Exception as exc:  # noqa: BLE001  (the studio works without a codec)
                    LOG.warning("audio codec not loaded: %s", exc)
                self._models["codec"] = codec
            return self._models["codec"]
