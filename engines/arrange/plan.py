"""A piece plan: the ordered sections of a piece to arrange, each with its length, where it should land and
the engine that writes it, checked once so that generation can trust it.

    plan = piece_plan({"tempo": 96, "key": "D minor", "metre": "4/4",
                       "sections": [{"bars": 8, "mode": "BLUE", "engine": "diffusion", "axes": {"energy": 0.3}},
                                    {"bars": 4, "mode": "RED", "engine": "autoregressive"}]})
    plan.sections[1].tempo           # 96.0: a section keeps the piece's tempo, key and metre unless it sets its own
    plan_dict(plan)                  # back to JSON-ready values (`load_plan` reads a file of them)

A section asks for a chromatic mode, or for axis targets (any of energy, valence, tension, intimacy, motion in
the analyzer's scale), or both, and optionally rebracketing and temporal complexity (0..1). Its key, metre and
tempo are its own when given, else the section before's, else the piece's; a piece without them lets the
first section's engine choose. Keys are "D minor", "Bb major" or a tonic alone ("G", major or minor as the
engine writes). A "title" is kept; other extra keys are allowed and ignored, so a plan can carry notes of
its own.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engines.errors import StudioError
from engines.generation.musical import check_tempo, metre_of
from engines.music.analyzer import AXES, MODES, WHITE

SECTION_BARS = (4, 8, 16)
MAX_SECTIONS = 16
SCALES = ("major", "minor")


@dataclass(frozen=True)
class SectionPlan:
    bars: int                                 # 4, 8 or 16
    engine: str                               # vae, diffusion or autoregressive
    mode: str = WHITE                         # a chromatic mode; WHITE: the axes (or nothing) decide
    axes: dict = field(default_factory=dict)  # {axis: value} in the analyzer's scale (valence -1..1, others 0..1)
    rebracketing: float | None = None
    temporal_complexity: float | None = None
    tempo: float | None = None                # quarter notes per minute; None: the engine's
    tonic: str | None = None                  # e.g. "D"; None: C, where the engines write
    scale: str | None = None                  # major or minor; None: as heard
    metre: str | None = None                  # e.g. "3/4"; None: the engine's choice for the mode

    @property
    def key(self) -> str | None:
        return None if self.tonic is None else f"{self.tonic} {self.scale}" if self.scale else self.tonic

    def attributes(self) -> dict:
        """What the engines are conditioned on besides the mode (engines/models/conditioning.py)."""
        asked = dict(self.axes)
        if self.rebracketing is not None:
            asked["rebracketing"] = self.rebracketing
        if self.temporal_complexity is not None:
            asked["temporal_complexity"] = self.temporal_complexity
        return asked


@dataclass(frozen=True)
class PiecePlan:
    sections: tuple[SectionPlan, ...]
    tempo: float | None = None
    key: str | None = None
    metre: str | None = None
    title: str | None = None                  # what the musician calls it

    @property
    def bars(self) -> int:
        return sum(section.bars for section in self.sections)


def parse_key(key, where: str) -> tuple[str | None, str | None]:
    """"D minor" -> ("D", "minor"); "G" -> ("G", None); None or "" -> (None, None)."""
    from engines.models.roll_decoding import tonic_shift

    if key in (None, ""):
        return None, None
    words = str(key).split()
    if not 1 <= len(words) <= 2 or (len(words) == 2 and words[1].lower() not in SCALES):
        raise StudioError(f"{where}: key must be a tonic and major or minor, e.g. 'D minor', got {key!r}")
    try:
        tonic_shift(words[0])
    except StudioError as exc:
        raise StudioError(f"{where}: {exc}") from None
    tonic = words[0][0].upper() + words[0][1:].lower()
    return tonic, words[1].lower() if len(words) == 2 else None


def _number(value, where: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise StudioError(f"{where} must be a number in {low:g}..{high:g}, got {value!r}") from None
    if not low <= number <= high:
        raise StudioError(f"{where} must lie in {low:g}..{high:g}, got {number:g}")
    return number


def _musical(values: dict, where: str) -> dict:
    """The tempo, key and metre a piece or a section sets, checked (absent ones: None)."""
    try:
        tempo = check_tempo(values.get("tempo"))
        metre = values.get("metre") or None
        metre_of(metre)
    except StudioError as exc:
        raise StudioError(f"{where}: {exc}") from None
    tonic, scale = parse_key(values.get("key"), where)
    return {"tempo": tempo, "tonic": tonic, "scale": scale, "metre": metre}


def _section(values, index: int, inherited: dict) -> SectionPlan:
    from engines.generation import GENERATORS

    where = f"section {index + 1}"
    if not isinstance(values, dict):
        raise StudioError(f"{where} must be an object with bars, engine and a mode or axes, got {values!r}")
    bars = values.get("bars")
    if bars not in SECTION_BARS or isinstance(bars, bool):
        raise StudioError(f"{where}: bars must be one of {', '.join(map(str, SECTION_BARS))}, got {bars!r}")
    engine = values.get("engine")
    if engine not in GENERATORS:
        raise StudioError(f"{where}: engine must be one of {', '.join(GENERATORS)}, got {engine!r}")
    mode = str(values.get("mode") or WHITE).upper()
    if mode not in (*MODES, WHITE):
        raise StudioError(f"{where}: unknown mode {values.get('mode')!r}; choose one of {', '.join(MODES)} or WHITE")
    axes = values.get("axes") or {}
    if not isinstance(axes, dict):
        raise StudioError(f"{where}: axes must map axis names to values, got {axes!r}")
    unknown = sorted(set(axes) - set(AXES))
    if unknown:
        raise StudioError(f"{where}: unknown axis {unknown[0]!r}; the axes are {', '.join(AXES)}")
    axes = {name: _number(value, f"{where}: {name}", -1.0 if name == "valence" else 0.0, 1.0)
            for name, value in axes.items() if value is not None}
    rhythm = {name: _number(values.get(name), f"{where}: {name}", 0.0, 1.0)
              for name in ("rebracketing", "temporal_complexity")}
    own = _musical(values, where)
    musical = {name: own[name] if own[name] is not None else inherited[name] for name in own}
    if own["tonic"] is not None and own["scale"] is None:
        musical["scale"] = None   # a tonic alone: major or minor as the engine writes, not the previous section's
    return SectionPlan(bars=int(bars), engine=engine, mode=mode, axes=axes, **rhythm, **musical)


def piece_plan(values) -> PiecePlan:
    """A plan as JSON-ready values -> PiecePlan; StudioError naming the first thing that is wrong."""
    if not isinstance(values, dict):
        raise StudioError(f"a plan must be an object with a list of sections, got {type(values).__name__}")
    sections = values.get("sections")
    if not isinstance(sections, list) or not sections:
        raise StudioError("a plan needs a non-empty list of sections")
    if len(sections) > MAX_SECTIONS:
        raise StudioError(f"a plan has at most {MAX_SECTIONS} sections, got {len(sections)}")
    piece = _musical(values, "the piece")
    planned, inherited = [], piece
    for index, section in enumerate(sections):
        planned.append(_section(section, index, inherited))
        inherited = {name: getattr(planned[-1], name) for name in piece}
    key = None if piece["tonic"] is None else f"{piece['tonic']} {piece['scale']}" if piece["scale"] else piece["tonic"]
    title = values.get("title")
    return PiecePlan(sections=tuple(planned), tempo=piece["tempo"], key=key, metre=piece["metre"],
                     title=str(title) if title else None)


def plan_dict(plan: PiecePlan) -> dict:
    """PiecePlan -> JSON-ready values that piece_plan reads back to the same plan. A section's tempo, key and
    metre are written only where they differ from what it inherits, so that a plan reads as it was written
    and changing the piece's tempo (or key, or metre) changes every section that did not set its own."""
    sections = []
    inherited = {"tempo": plan.tempo, "key": plan.key, "metre": plan.metre}
    for section in plan.sections:
        values = {k: v for k, v in asdict(section).items()
                  if k not in ("tonic", "scale", "tempo", "metre") and v not in (None, {})}
        own = {"tempo": section.tempo, "key": section.key, "metre": section.metre}
        values.update({k: v for k, v in own.items() if v is not None and v != inherited[k]})
        inherited = own
        sections.append(values)
    piece = {"title": plan.title, "tempo": plan.tempo, "key": plan.key, "metre": plan.metre}
    return {**{k: v for k, v in piece.items() if v is not None}, "sections": sections}


def load_plan(path: str | Path) -> PiecePlan:
    """A plan file (JSON) -> PiecePlan; StudioError for a missing file, bad JSON or a bad plan."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"no plan file at '{path}'")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StudioError(f"'{path.name}' is not a JSON plan: {exc}") from None
    return piece_plan(values)
