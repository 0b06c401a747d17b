"""Typed configuration: dataclasses with defaults in code, YAML files and `--set key.path=value` only override.

    cfg = load_config("assets/configs/fast_render.yaml", ["generation.sampling.temperature=0.8"])
    cfg.model.generative.type      # 'vae'

Every field may carry `metadata={"check": (predicate, "what is allowed")}`; a value that fails it, a key that
does not exist, or a value of the wrong type raises StudioError naming the full key and what is allowed.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from engines.errors import StudioError
from engines.generation import GENERATORS, AutoregressiveSettings, DiffusionSettings, VAESettings
from engines.generation.base import MAX_CANDIDATES
from engines.music.analyzer import AnalyzerConfig
from engines.models.codec_config import CodecConfig
from engines.models.diffusion_config import DiffusionConfig
from engines.models.guidance_config import GuidanceClassifierConfig
from engines.models.gpt_config import GPTConfig
from engines.models.judge_config import JudgeConfig
from engines.models.vae_config import VAEConfig
from engines.settings import check  # noqa: F401  (re-exported: the configs' field checks)




# Collections of the music21 corpus used by default: every one that parses into metered, pitched music.
DEFAULT_COLLECTIONS = (
    "bach", "palestrina", "essenFolksong", "ryansMammoth", "oneills1850", "nottingham-dataset", "trecento",
    "monteverdi", "beethoven", "mozart", "haydn", "josquin", "schumann_robert", "schumann_clara", "airdsAirs",
    "miscFolk", "ciconia", "corelli", "cpebach", "handel", "joplin", "luca", "lusitano", "schubert", "verdi",
    "weber", "beach", "chopin", "johnson_j_r", "liliuokalani", "leadSheet",
)


@dataclass
class DataConfig:
    segment_bars: int = field(default=4, metadata=check(lambda v: 1 <= v <= 16, "an integer from 1 to 16"))
    hop_bars: int = field(default=4, metadata=check(lambda v: 1 <= v <= 16, "an integer from 1 to 16"))
    # Piano-roll steps per quarter note; 4 = sixteenth notes. Bars longer than 4 quarters use coarser steps
    # (powers of two) so that every bar fits 4 * steps_per_beat steps.
    steps_per_beat: int = field(default=4, metadata=check(lambda v: v in (2, 4, 6, 12), "one of 2, 4, 6, 12"))
    pitch_low: int = field(default=21, metadata=check(lambda v: 0 <= v <= 127, "a MIDI pitch 0..127"))
    pitch_high: int = field(default=108, metadata=check(lambda v: 0 <= v <= 127, "a MIDI pitch 0..127"))
    collections: list[str] = field(default_factory=lambda: list(DEFAULT_COLLECTIONS))
    min_notes: int = field(default=4, metadata=check(lambda v: v >= 1, "an integer >= 1"))
    cache_dir: str = "data/cache"
    shipped_cache: str = "assets/corpus/segment_cache.npz"
    # Fractions of pieces (not segments) in train / validation / test; a piece lives in one split only.
    validation_fraction: float = field(default=0.1, metadata=check(lambda v: 0 < v < 0.5, "a number in (0, 0.5)"))
    test_fraction: float = field(default=0.1, metadata=check(lambda v: 0 < v < 0.5, "a number in (0, 0.5)"))
    max_file_mb: float = field(default=20.0, metadata=check(lambda v: v > 0, "a number > 0"))
    max_notes: int = field(default=200_000, metadata=check(lambda v: v > 0, "an integer > 0"))
    max_seconds: float = field(default=900.0, metadata=check(lambda v: v > 0, "a number of seconds > 0"))

    def validate(self) -> None:
        if self.pitch_low >= self.pitch_high:
            raise StudioError(f"data.pitch_low ({self.pitch_low}) must be below data.pitch_high ({self.pitch_high})")
        if self.validation_fraction + self.test_fraction >= 0.9:
            raise StudioError("data.validation_fraction + data.test_fraction must leave at least 10 % for training")

    @property
    def num_pitches(self) -> int:
        return self.pitch_high - self.pitch_low + 1

    @property
    def roll_steps(self) -> int:
        return self.segment_bars * 4 * self.steps_per_beat


@dataclass
class SamplingConfig:
    """Each engine's sampling settings in its own section (generation.sampling.diffusion.steps, ...), their
    dataclasses beside each engine in engines/generation/. `temperature` and `top_k` are shared keys: when
    set they apply to every engine that has them (the VAE's prior temperature, the GPT's sampling)."""

    temperature: float | None = field(default=None, metadata=check(lambda v: v is None or 0 < v <= 5,
                                                                    "a number in (0, 5], or null"))
    top_k: int | None = field(default=None, metadata=check(lambda v: v is None or (isinstance(v, int) and v >= 0),
                                                           "an integer >= 0 (0 = off), or null"))
    seed: int = 0
    vae: VAESettings = field(default_factory=VAESettings)
    diffusion: DiffusionSettings = field(default_factory=DiffusionSettings)
    autoregressive: AutoregressiveSettings = field(default_factory=AutoregressiveSettings)

    # keys of the first flat section, and where each lives now (a YAML file that uses one is told)
    moved_keys = {"num_steps": "diffusion.steps", "guidance_scale": "diffusion.guidance_scale",
                  "classifier_scale": "diffusion.classifier_scale", "classifier_space": "diffusion.classifier_space",
                  "eta": "diffusion.eta", "sampler": "diffusion.sampler", "top_p": "autoregressive.top_p",
                  "prompt_guidance": "autoregressive.prompt_guidance", "beam_width": "autoregressive.beam_width",
                  "max_bars": "autoregressive.max_bars"}
    moved_notes = {"classifier_scale": " (the old key was only the strength the studio suggested; the new one "
                                       "applies classifier guidance to every diffusion run, 0 = off)"}


@dataclass
class VerifyConfig:
    """Verified generation (engines/generation/verify.py): candidates drawn per result, ranked by the judge."""

    # candidates per result for every engine; null: each engine's own default (generation.sampling.<engine>)
    candidates: int | None = field(default=None, metadata=check(lambda v: v is None or 1 <= v <= MAX_CANDIDATES,
                                                                f"an integer 1..{MAX_CANDIDATES}, or null"))
    # a candidate this similar to a training segment (Jaccard of onsets and pitches, best transposition) is a copy
    copy_threshold: float = field(default=0.8, metadata=check(lambda v: 0 < v <= 1, "a number in (0, 1]"))
    # weight of the judge's L1 distance to asked attributes against its log-probability of the asked mode
    attribute_weight: float = field(default=5.0, metadata=check(lambda v: v >= 0, "a number >= 0"))


@dataclass
class BatchingConfig:
    """Requests of many users sharing one batch (engines/generation/batching.py): the one place that decides
    how much the studio works on at once. Bigger batches raise throughput under load; a lone user is never
    made to wait (README, "Many musicians at once")."""

    # requests one batch of an engine may hold (1 = no batching: every request samples alone)
    max_batch: int = field(default=16, metadata=check(lambda v: 1 <= v <= 64, "an integer 1..64"))
    # how long a batch waits for more requests while others are arriving (a lone request never waits)
    window_ms: float = field(default=20.0, metadata=check(lambda v: 0 <= v <= 1000, "0..1000 milliseconds"))
    # generation requests the studio works on at once; the rest wait in Gradio's queue. null: 4 per request a
    # batch may hold (4 x max_batch), so batches can fill; with max_batch 1, 4, as before batching
    concurrency: int | None = field(default=None, metadata=check(lambda v: v is None or 1 <= v <= 256,
                                                                 "an integer 1..256, or null"))

    # threads each tensor operation may use (torch.set_num_threads), set once when the studio starts. null: torch's
    # own choice (every core), fastest for a lone user; 1 lets the engines' batches and the requests' own work
    # (judging, decoding) run side by side instead of sharing both cores op by op: more throughput under load,
    # a lone user waits longer (README, "Many musicians at once")
    threads: int | None = field(default=None, metadata=check(lambda v: v is None or 1 <= v <= 256,
                                                             "an integer 1..256, or null"))

    @property
    def requests_at_once(self) -> int:
        return self.concurrency if self.concurrency is not None else 4 * self.max_batch


def _arrange_candidates(default: int | None = None):
    return field(default=default, metadata=check(lambda v: v is None or 1 <= v <= MAX_CANDIDATES,
                                                 f"an integer 1..{MAX_CANDIDATES}, or null"))


@dataclass
class ArrangeCandidates:
    """Candidates per 4-bar window when arranging, by engine; null: the engine's own
    (generation.sampling.<engine>.candidates, as in the Generate tab)."""

    vae: int | None = _arrange_candidates()
    diffusion: int | None = _arrange_candidates()
    # the GPT writes token by token: 4 candidates keep an 8-bar section under 3 s on 2 cores (8 take 3.5 s)
    autoregressive: int | None = _arrange_candidates(4)


@dataclass
class ArrangeConfig:
    """Arranging a piece (engines/arrange/arranger.py): how each 4-bar window of a section is drawn."""

    # candidates per window, ranked by the judge, by engine
    candidates: ArrangeCandidates = field(default_factory=ArrangeCandidates)
    # how much the window that opens a section is also ranked by how smoothly it joins the bars before it
    # (engines/arrange/joins.join_cost: 1 = a jump as large as real music's median at a phrase boundary);
    # 0: by the judge alone
    join_weight: float = field(default=12.0, metadata=check(lambda v: v >= 0, "a number >= 0"))
    # denoising steps of the diffusion engine's windows (its own generation.sampling.diffusion.steps: null)
    diffusion_steps: int | None = field(default=15, metadata=check(lambda v: v is None or 1 <= v <= 1000,
                                                                   "an integer 1..1000, or null"))
    # how far each VAE window's latent is pulled toward the bars before it (generation.sampling.vae.follow:
    # null); less than the Generate tab's 0.5, so that a section after one of another mode reaches its own
    vae_follow: float | None = field(default=0.25, metadata=check(lambda v: v is None or 0 <= v <= 1,
                                                                  "a number in 0..1, or null"))
    # the first bars of a section longer than 4 bars move from the mode before to its own (Request.fade_from);
    # off: measured on the example plans it smoothed the joins little (median axis jump 0.337 -> 0.333) and
    # cost sections heard as asked (87 % -> 81 %)
    fade: bool = False
    # a section the analyzer does not hear in its mode, over all its bars, is written again from another seed, up
    # to this many times in all; the first heard as asked is kept, else the judge's best (1: as first written)
    section_tries: int = field(default=4, metadata=check(lambda v: 1 <= v <= 8, "an integer 1..8"))
    # the window that opens a section after another aims, on every axis the section leaves free, this far from
    # the bars before it toward the mode's interior (Generator.axis_target; engines whose model follows axes:
    # diffusion); 0: at the bars before, and the mode label and the section's later windows bring the mode;
    # null: it aims where any request for the mode does. Measured on the example plans (10 seeds), median axis
    # jump at a join: null 0.281 (5 seeds), 0.5 0.239 (5 seeds), 0.25 0.195, 0.1 0.176, 0 0.159 (real 0.174)
    bridge: float | None = field(default=0.0, metadata=check(lambda v: v is None or 0 <= v <= 1,
                                                             "a number in 0..1, or null"))


@dataclass
class GenerationConfig:
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    arrange: ArrangeConfig = field(default_factory=ArrangeConfig)


@dataclass
class GenerativeConfig:
    # the engine the studio's Generate tab starts with: a key of engines.generation.GENERATORS
    type: str = field(default="vae", metadata=check(lambda v: v in GENERATORS, "one of " + ", ".join(GENERATORS)))


@dataclass
class ModelConfig:
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    checkpoints_dir: str = "assets/checkpoints"   # <engine>.pt files the studio and CLI load
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    guidance_classifier: GuidanceClassifierConfig = field(default_factory=GuidanceClassifierConfig)
    autoregressive: GPTConfig = field(default_factory=GPTConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)


@dataclass
class RenderConfig:
    sample_rate: int = field(default=44100, metadata=check(lambda v: 8000 <= v <= 96000, "8000..96000 Hz"))
    soundfont: str = ""  # empty: soundfonts/, then system sf2/sf3 files, then pretty_midi's TimGM6mb.sf2
    pool_size: int = field(default=2, metadata=check(lambda v: 1 <= v <= 16, "an integer from 1 to 16"))
    gain: float = field(default=0.5, metadata=check(lambda v: 0 < v <= 5, "a number in (0, 5]"))
    tail_seconds: float = field(default=1.0, metadata=check(lambda v: 0 <= v <= 10, "0..10 seconds"))


@dataclass
class StudioConfig:
    host: str = "127.0.0.1"
    port: int = field(default=7860, metadata=check(lambda v: 1 <= v <= 65535, "a TCP port 1..65535"))
    share: bool = False
    browser_page_size: int = field(default=200, metadata=check(lambda v: v >= 10, "an integer >= 10"))
    # at start-up, load the VAE, compile the map's numba code and build the copy index while the page loads, so
    # the first click is fast (about 5 s of CPU); false: each is paid when first needed (servers for raters)
    warm_up: bool = True


@dataclass
class SessionsConfig:
    # A/B listening sessions (engines/sessions/): a SQLite file (WAL) or any SQLAlchemy URL, e.g.
    # postgresql+psycopg://user:pass@host/db for a shared deployment; stimuli are rendered under stimuli_dir,
    # which the studio serves to raters: the database never lies inside it (engines/sessions/listening.py)
    database: str = "data/private/sessions.sqlite"
    stimuli_dir: str = "data/listening"
    # Folders a "folder" system may read MIDI from, besides the upload area (<stimuli_dir>/uploads)
    allowed_folders: list[str] = field(default_factory=list)
    # May anyone who reaches the studio create sessions? null: yes on 127.0.0.1, no when the studio listens
    # on other addresses (--listen, studio.host 0.0.0.0), where creating needs an organiser key
    open_creation: bool | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    analyzer: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    studio: StudioConfig = field(default_factory=StudioConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Defaults, then the YAML file at `path`, then each `key.path=value` override (value parsed as YAML)."""
    values: dict = {}
    if path:
        path = Path(path)
        if not path.is_file():
            raise StudioError(f"config file '{path}' does not exist")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise StudioError(f"config file '{path}' is not valid YAML: {exc}") from None
        if not isinstance(values, dict):
            raise StudioError(f"config file '{path}' must hold a mapping of keys, not {type(values).__name__}")
    _apply_overrides(values, overrides)
    return _build(Config, values, "")


def with_overrides(cfg: Config, overrides: list[str] | tuple[str, ...]) -> Config:
    """A new Config: `cfg` with `key.path=value` overrides, checked as load_config checks them."""
    values = cfg.to_dict()
    _apply_overrides(values, overrides)
    return _build(Config, values, "")


def build_section(cls, values: dict, prefix: str):
    """One config section (a dataclass) from plain values, checked as load_config checks them; messages name
    the key as `prefix` + field, e.g. generation.sampling.diffusion.steps."""
    return _build(cls, values, prefix)


def _apply_overrides(values: dict, overrides) -> None:
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise StudioError(f"override '{item}' must look like key.path=value, e.g. model.vae.beta=0.5")
        node = values
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise StudioError(f"override '{item}': '{part}' is a value, not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""


def _build(cls, values: Any, prefix: str):
    if not isinstance(values, dict):
        raise StudioError(f"config key '{prefix.rstrip('.')}' is a section; give it keys, not {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    moved = getattr(cls, "moved_keys", {})
    for name in unknown:
        if name in moved:
            note = getattr(cls, "moved_notes", {}).get(name, "")
            raise StudioError(f"config key '{prefix}{name}' has moved: use '{prefix}{moved[name]}'{note}")
    if unknown:
        raise StudioError(f"unknown config key '{prefix}{unknown[0]}'; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, value in values.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key + ".")
            continue
        if hint is dict or typing.get_origin(hint) is dict:
            # A mapping merges into its default, so one prototype can be overridden on its own.
            if not isinstance(value, dict):
                raise StudioError(f"config key '{key}' must be a mapping, got {value!r}")
            default = fields[name].default_factory() if fields[name].default_factory is not dataclasses.MISSING else {}
            value = {**default, **value}
        else:
            value = _coerce(key, value, hint)
        predicate, allowed = fields[name].metadata.get("check", (None, ""))
        if predicate is not None and not predicate(value):
            raise StudioError(f"config key '{key}' = {value!r} is not allowed; expected {allowed}")
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate:
        try:
            validate()
        except StudioError as exc:
            raise StudioError(f"config section '{prefix.rstrip('.') or 'root'}': {exc}") from None
    return obj


def _coerce(key: str, value: Any, hint) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise StudioError(f"config key '{key}' = {value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise StudioError(f"config key '{key}' must be a list, got {value!r}")
        (item_type, *_) = typing.get_args(hint) or (Any,)
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or len(args) != 1:
            return value
        return _coerce(key, value, args[0])   # Optional[X]: null, or an X
    if hint is bool:
        if not isinstance(value, bool):
            raise StudioError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StudioError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 4e-4 (no dot) as a string; it is a number to anyone else
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StudioError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise StudioError(f"config key '{key}' must be text, got {value!r}")
        return str(value)
    return value
