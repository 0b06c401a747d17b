"""What every generative engine offers, in one shape: a Request in, Segments out.

    generator = GENERATORS["diffusion"].load("assets/checkpoints/diffusion.pt", device="cpu")
    settings = generator.settings_for(cfg, {"steps": 20})          # the config's defaults, then overrides
    segments = generator.run(Request("diffusion", mode="BLUE", n=4, seed=1, settings=settings))

A `Generator` has a `name`, a `Settings` dataclass (its own sampling fields and its default number of
candidates for verified generation, engines/generation/verify.py), `load(path, device)`, `run(request,
on_step)` and `preview(state, rows)` for the live view: `on_step(step, total, state)` is called
while it samples (a denoising step, a token) and returns True to stop early; `preview` turns that state into
piano rolls. Nothing here knows about the studio, files or the judge.

Requests of several users may share one batch (engines/generation/batching.py): `batch_key(request)` says
which may (the same key; None: it runs alone), and `run_batch(jobs)` samples them together, each request's
rows as `run` would give them alone, handing each back with `job.finish` as soon as its rows are done.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Hashable, Protocol

import numpy as np

from engines.errors import StudioError
from engines.music.notes import Segment

OnStep = Callable[[int, int, Any], bool]   # (step done, total steps, the engine's state) -> stop?
MAX_CANDIDATES = 32


def candidates_field(default: int):
    """The `candidates` field every engine's Settings has: its default K for verified generation."""
    from dataclasses import field

    from engines.settings import check

    return field(default=default, metadata=check(lambda v: 1 <= v <= MAX_CANDIDATES,
                                                 f"an integer 1..{MAX_CANDIDATES}"))


@dataclass
class Request:
    """One generation request, the same for every engine."""

    engine: str = "vae"
    mode: str = "WHITE"                  # a chromatic mode, or WHITE for none
    n: int = 4                           # results wanted
    seed: int = 0
    attributes: dict | None = None       # targets in the analyzer's scale, any of ANALYZER_ATTRIBUTES, e.g. {"energy": 0.8}
    tonic: str | None = None             # the key's tonic, e.g. "G" (None: C, where the engines write)
    init_midi: Any = None                # a MIDI file or Segment (a file's first) to inpaint or continue
    keep_bars: list[int] | None = None   # its bars to keep, 1-based (the GPT continues after the first k: 1..k)
    # the mode the bars written begin in, moving to `mode` by their end (arranging writes a section's opening
    # so): the diffusion engine fades its guidance from one mode to the other along the roll, the GPT's prompt
    # pulls half as hard on a continuation; the VAE, which follows the bars before in its latent, ignores it
    fade_from: str | None = None
    settings: Any = None                 # the engine's Settings, or a dict overriding the config's; None: config
    candidates: int | None = None        # candidates drawn per result (1 = unchecked); None: the engine's default
    # what a musician sets besides the mode (engines/generation/musical.py); None: as the engine writes
    tempo: float | None = None           # quarter notes per minute, 30..300
    metre: str | None = None             # one the corpus has, e.g. "3/4"
    scale: str | None = None             # "major" or "minor": the parallel key when heard in the other
    instrument: int | None = None        # General MIDI program 1..128 (1 = piano, 41 = violin)
    dynamics: str | None = None          # pp .. ff

    def init_segment(self, cfg=None) -> Segment:
        """The segment to start from: `init_midi` as given, or the first segment of that file (read with
        `cfg`'s limits, the defaults without one)."""
        if isinstance(self.init_midi, Segment):
            return self.init_midi
        from engines.analysis import midi_file_segments
        from engines.config import Config

        _, segments = midi_file_segments(self.init_midi, cfg or Config())
        return segments[0]


@dataclass
class Preview:
    """What the live view draws: `rows` piano rolls and each one's bar length in roll steps."""

    sounding: np.ndarray                 # (rows, steps, pitches) float32 in [0, 1]
    bar_steps: list[int]


class Generator(Protocol):
    name: ClassVar[str]                  # the registry key, e.g. "diffusion"
    label: ClassVar[str]                 # how the studio names it
    short_name: ClassVar[str]            # in tables: VAE, DIFFUSION, GPT
    Settings: ClassVar[type]             # its settings dataclass (engines/config.py: generation.sampling.<name>)
    writes_in_c: ClassVar[bool]          # it writes in C (the suite compares it with real segments moved to C)
    live: ClassVar[bool]                 # it calls on_step while sampling (the studio shows a live view)
    max_batch: ClassVar[int]             # the most segments one run() draws
    batch_rows: ClassVar[int | None]     # the most rows one run_batch() samples for several requests (None: max_batch)
    init_verb: ClassVar[str]             # what it does with init_midi: "inpainted", "continued" ("" = nothing)
    codec_preview: ClassVar[bool]        # the studio also plays its results through the audio codec
    live_label: ClassVar[str]            # the live view's progress line, with {step} and {total}

    @classmethod
    def load(cls, path, device="cpu") -> "Generator": ...

    @classmethod
    def files_beside(cls, path) -> list: ...

    def run(self, request: Request, on_step: OnStep | None = None) -> list[Segment]: ...

    def for_mode(self, settings, mode: str): ...

    def preview(self, state, rows: int) -> Preview: ...

    def batch_key(self, request: Request) -> Hashable | None: ...

    def run_batch(self, jobs: list) -> None: ...


def attach_beside(file, load: Callable, attach: Callable, what: str) -> None:
    """attach(load(file)) when `file` (a model an engine reads beside its checkpoint) exists; a broken or unfit
    one is logged and the engine goes on without it."""
    if not file.is_file():
        return
    try:
        attach(load(file))
    except Exception as exc:  # noqa: BLE001  (the engine then samples without it)
        import logging

        logging.getLogger("engines.generation").warning("%s %s not attached: %s", what, file, exc)


class GeneratorBase:
    """Shared plumbing: settings from the config and a request, and the checks every engine makes."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type] = object
    live: ClassVar[bool] = False
    writes_in_c: ClassVar[bool] = True
    max_batch: ClassVar[int] = 64
    batch_rows: ClassVar[int | None] = None
    init_verb: ClassVar[str] = ""
    codec_preview: ClassVar[bool] = False
    live_label: ClassVar[str] = "Step {step} of {total}"

    def __init__(self, model):
        self.model = model               # the engine's Trained* class (engines/models/)
        # the training split's CopyIndex (engines/generation/copies.py), or a callable that builds it: set by
        # whoever loads the generator with a corpus at hand (the studio, evaluate, the CLI); an engine that
        # steers away from copies while it samples reads it through copy_index()
        self.training_copies = None

    def copy_index(self):
        """The training split's CopyIndex (built on first use), or None where no corpus was given."""
        if callable(self.training_copies):
            self.training_copies = self.training_copies()
        return self.training_copies

    def copies_for(self, settings):
        """The CopyIndex sampling with `settings` steers away from: the training split's where the settings ask to
        avoid copies (engines/sampling/copy_guard.py), else None."""
        return self.copy_index() if getattr(settings, "avoid_copies", False) else None

    @classmethod
    def files_beside(cls, path) -> list:
        """Files `load(path)` also reads beside the checkpoint, which change what it writes (an evaluation is
        keyed by them too). By default none."""
        return []

    @classmethod
    def settings_for(cls, cfg, overrides=None):
        """The config's generation.sampling.<name>, with the shared keys (generation.sampling.temperature,
        top_k) where this engine has them, then `overrides` (a dict, or a Settings used as it is)."""
        if isinstance(overrides, cls.Settings):
            return overrides
        if overrides is not None and not isinstance(overrides, dict):
            raise StudioError(f"{cls.name} settings must be a mapping of names to values, not {overrides!r}")
        from engines.config import build_section

        sampling = cfg.generation.sampling
        values = dataclasses.asdict(getattr(sampling, cls.name))
        for shared in ("temperature", "top_k"):
            if getattr(sampling, shared) is not None and shared in values:
                values[shared] = getattr(sampling, shared)
        names = {f.name for f in dataclasses.fields(cls.Settings)}
        unknown = sorted(set(overrides or {}) - names)
        if unknown:
            raise StudioError(f"the {cls.name} engine has no setting '{unknown[0]}'; its settings are "
                              f"{', '.join(sorted(names))}")
        values.update(overrides or {})
        return build_section(cls.Settings, values, f"generation.sampling.{cls.name}.")

    @classmethod
    def settings_of(cls, request: Request):
        """The request's settings: a Settings as given, or the code's defaults with a dict's overrides (run
        through settings_for(cfg, ...) first to start from a config's)."""
        if isinstance(request.settings, cls.Settings):
            return request.settings
        if request.settings is not None and not isinstance(request.settings, dict):
            raise StudioError(f"{cls.name} settings must be a mapping or {cls.Settings.__name__}, "
                              f"not {type(request.settings).__name__}")
        from engines.config import build_section

        return build_section(cls.Settings, dict(request.settings or {}), f"generation.sampling.{cls.name}.")

    def asked_mode(self, request: Request, settings) -> str:
        """The mode a request asks for (the GPT reads it from its prompt)."""
        return (request.mode or "WHITE").upper()

    def candidates(self, request: Request, settings) -> int:
        """Candidates per result: the request's, else the settings' default."""
        try:
            k = settings.candidates if request.candidates is None else int(request.candidates)
        except (TypeError, ValueError):
            raise StudioError(f"candidates per result must be a whole number 1..{MAX_CANDIDATES}, got "
                              f"{request.candidates!r}") from None
        if not 1 <= k <= MAX_CANDIDATES:
            raise StudioError(f"candidates per result must lie in 1..{MAX_CANDIDATES}, got {k}")
        return k

    def for_mode(self, settings, mode: str):
        """The settings a request for `mode` is sampled with (the GPT fills in what its checkpoint calibrated for
        the mode where a request left it unset). By default the settings as they are."""
        return settings

    def axis_target(self, mode: str) -> dict:
        """Where this engine aims a request for `mode` on the axes its model follows, in the analyzer's scale
        (the median axes of the mode's clear training segments: conditioning.mode_targets); {} when it does not
        steer by them (the base: the VAE and the GPT, whose raw axes error sits at its floor, and a diffusion
        checkpoint without axis inputs). The arranger aims a section's opening between the bars before and this."""
        return {}

    def diversify(self, settings, round_: int):
        """The settings of a further round of candidates (verified generation draws one when too few of the
        first are heard as asked and are not copies): sampled more freely. By default the same settings."""
        return settings

    def preview(self, state, rows: int) -> Preview:
        raise StudioError(f"the {self.name} engine has no live view")

    def batch_key(self, request: Request) -> Hashable | None:
        """What a request must share with others to be sampled in one batch with them; None: it runs alone.
        A request whose checks fail gets None, so it fails alone, in `run`, with its own message."""
        return None

    def run_batch(self, jobs: list) -> None:
        """Sample the jobs' requests (engines/generation/batching.Job) as one batch."""
        raise NotImplementedError(f"the {self.name} engine samples each request alone")

