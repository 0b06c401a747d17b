"""The engine API the studio (and scripts) call: browse the corpus, generate, hear, export, evaluate.

    engine = StudioEngine(load_config())
    views = engine.generate(Request("diffusion", mode="BLUE", n=2, settings={"steps": 20}))

Everything returned is plain data (engines/views.py: dicts, lists, paths), so `studio/` never touches torch or
numpy internals. One StudioEngine is shared by all users of the app; it holds no per-user state. It is made of
one part per seam, each in its own file:

    corpus.py      browse and filter the corpus, view and hear a segment, analyse an upload
    generation.py  generation jobs through engines/generation (verified, live view, Stop)
    exports.py     analysis, MIDI, WAV and codec renders of segments, written once and atomically
    evaluation.py  the evaluation suite with progress, and its report as files and examples
    arrange.py     a piece from a plan of sections, section by section; one section regenerated in place
"""
from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from engines.api.arrange import ArrangeAPI
from engines.api.corpus import RANGE_FILTERS, BrowseQuery, CorpusAPI
from engines.api.evaluation import EvaluationAPI
from engines.api.exports import ExportAPI
from engines.api.generation import GenerationAPI
from engines.config import Config
from engines.data.cache import SegmentCache
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.generation import Request
from engines.generation.musical import METRE_NAMES
from engines.music.instruments import GM_INSTRUMENTS
from engines.music.performance import DYNAMICS
from engines.arrange.plan import SECTION_BARS
from engines.music.analyzer import AXES, MODE_COLORS, MODES, WHITE, ChromaticAnalyzer
from engines.registry import ModelRegistry
from engines.views import (ArrangementView, GeneratedView, GenerationProgress, GenerationResult, NoteView,
                           SegmentView, UploadView, note_view)

__all__ = ["StudioEngine", "BrowseQuery", "Request", "ArrangementView", "GeneratedView", "GenerationProgress",
           "GenerationResult", "NoteView", "SegmentView", "UploadView", "note_view", "RANGE_FILTERS", "AXES", "MODES",
           "MODE_COLORS", "WHITE", "METRE_NAMES", "GM_INSTRUMENTS", "DYNAMICS", "SECTION_BARS"]


class StudioEngine(CorpusAPI, GenerationAPI, ExportAPI, EvaluationAPI, ArrangeAPI):
    def __init__(self, cfg: Config, cache: SegmentCache | None = None, out_dir: str | Path | None = None):
        from engines.sessions.locations import check_private_database, move_legacy_database

        check_private_database(cfg.sessions.database, cfg.sessions.stimuli_dir)   # before anything is served
        move_legacy_database(cfg.sessions.database, cfg.sessions.stimuli_dir)
        self.cfg = cfg
        self.cache = cache if cache is not None else ensure_corpus_cache(cfg)
        # Renders and exports of this process only: another studio or user never shares (or clobbers) them.
        self.out_dir = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="chromatic-studio-"))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir is None:   # ours alone: removed when the process ends (a kill -9 leaves it to the OS's tmp)
            atexit.register(shutil.rmtree, self.out_dir, True)
        self._collection_rows = self.cache.collection_of_rows()
        self._search_keys = np.char.lower(np.array([p["id"] for p in self.cache.pieces]))
        render = cfg.render
        self.models = ModelRegistry(cfg.model.checkpoints_dir, cfg.generation.batching)
        self._analyzer = ChromaticAnalyzer(cfg.analyzer)
        self._verifier = None
        self._verifier_lock = threading.Lock()
        self._stops: dict[str, threading.Event] = {}  # run id -> stop flag of a running generation or evaluation
        self._render_key = hashlib.sha1(repr((render.sample_rate, render.soundfont, render.gain,
                                              render.tail_seconds)).encode()).hexdigest()[:8]
        from engines.explorer import LatentExplorer

        self.explorer = LatentExplorer(self)
        self._listening = None
        self._listening_lock = threading.Lock()
        self._corpus_joins = None   # measured on first use (engines/api/arrange.py)
        self._corpus_joins_lock = threading.Lock()
        # sessions.open_creation, or (null) open unless the studio is served beyond this machine: app.py sets
        # `served_beyond_localhost` before anything opens the sessions
        self.served_beyond_localhost = False

    @property
    def listening(self):
        """The A/B listening sessions (engines/sessions/listening.py), opened on first use."""
        with self._listening_lock:
            if self._listening is None:
                from engines.sessions.listening import ListeningService
                from engines.sessions.store import SessionStore

                s = self.cfg.sessions
                self._listening = ListeningService(
                    self, SessionStore(s.database), s.stimuli_dir, serve_dir=self.out_dir / "listening",
                    allowed_folders=s.allowed_folders, open_creation=self.open_creation)
            return self._listening

    @property
    def open_creation(self) -> bool:
        """May anyone create listening sessions (else an organiser key is needed)?"""
        configured = self.cfg.sessions.open_creation
        return (not self.served_beyond_localhost) if configured is None else configured

    def warm_up(self) -> None:
        """Load the VAE and compile the latent map's inverse transform, so the first click is fast; then the
        judge and the copy index verified generation uses. Meant for a background thread at start-up; a
        missing checkpoint or map is not an error here."""
        try:
            self.explorer.warm()
        except StudioError:
            pass
        self.verifier.copies   # builds the copy index (a second or two) before the first request needs it
