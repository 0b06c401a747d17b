"""Field metadata shared by the typed config and the engines' generation settings.

    steps: int = field(default=50, metadata=check(lambda v: 1 <= v <= 1000, "an integer 1..1000")
                                            | control("Steps", 5, 1000, 5))

`check` is what the config and the settings validate (engines/config.py raises StudioError naming the key and
what is allowed); `control` is how the studio shows the field (a slider, radio or text box); `settings_schema`
turns a settings dataclass into plain dicts for the UI, so the studio builds its inputs without importing an
engine.
"""
from __future__ import annotations

import dataclasses
import typing


def check(predicate, allowed: str) -> dict:
    """Field metadata: `field(default=4, metadata=check(lambda v: v > 0, "an integer > 0"))`."""
    return {"check": (predicate, allowed)}


def control(label: str, minimum: float | None = None, maximum: float | None = None, step: float | None = None,
            choices: list | None = None, info: str = "", advanced: bool = False) -> dict:
    """Field metadata for the studio: a slider (minimum, maximum, step), a radio (choices: values or
    (label, value) pairs) or a text box (neither). `advanced` fields go in a closed accordion."""
    return {"control": {"label": label, "minimum": minimum, "maximum": maximum, "step": step, "choices": choices,
                        "info": info, "advanced": advanced}}


def settings_schema(settings) -> list[dict]:
    """One dict per field of a settings dataclass (class or instance) that has a control:
    {"name", "value", "kind": "slider" | "radio" | "text" | "checkbox", "integer", label, minimum, ...}."""
    cls = settings if isinstance(settings, type) else type(settings)
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("control")
        if spec is None:
            continue
        value = getattr(settings, f.name) if not isinstance(settings, type) else (
            f.default if f.default is not dataclasses.MISSING else f.default_factory())
        hint = hints[f.name]
        kind = "radio" if spec["choices"] else "checkbox" if hint is bool else \
            "slider" if spec["minimum"] is not None else "text"
        out.append({"name": f.name, "value": value, "kind": kind, "integer": hint is int, **spec})
    return out
