"""A user's CSV manifest of labels, which overrides the analyzer for the files it names.

    path,mode,rebracketing,temporal_complexity
    songs/intro.mid,BLUE,,0.7
    bach/bwv1.6,RED            # corpus pieces are named by piece id

Required columns: path, mode. Optional: rebracketing, temporal_complexity and the five axes
(energy, valence, tension, intimacy, motion). Empty cells keep the analyzer's value.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

from engines.errors import StudioError
from engines.music.analyzer import AXES, MODES

OPTIONAL = ("rebracketing", "temporal_complexity") + AXES


def normalise_key(path: str) -> str:
    """'songs/Intro.MID' and './songs/intro.mid' name the same entry: no suffix, forward slashes, lower case."""
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    path = path.lstrip("/")
    stem, ext = os.path.splitext(path)
    return (stem if ext.lower() in (".mid", ".midi", ".krn", ".abc", ".mxl", ".xml", ".musicxml") else path).lower()


def read_manifest(path: str | Path) -> dict[str, dict]:
    """CSV -> {normalised path: {"mode": ..., optional attributes}}. Raises StudioError naming row and column."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"manifest '{path}' does not exist")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns or "mode" not in columns:
            raise StudioError(f"manifest '{path.name}' needs the columns 'path' and 'mode'; it has: {', '.join(columns)}")
        unknown = [c for c in columns if c not in ("path", "mode") + OPTIONAL]
        if unknown:
            raise StudioError(f"manifest '{path.name}' has an unknown column '{unknown[0]}'; "
                              f"allowed: path, mode, {', '.join(OPTIONAL)}")
        labels = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
            mode = row["mode"].upper()
            if mode not in MODES:
                raise StudioError(f"manifest '{path.name}' line {line}: mode '{row['mode']}' is not one of "
                                  f"{', '.join(MODES)}")
            entry = {"mode": mode}
            for column in OPTIONAL:
                if row.get(column):
                    try:
                        value = float(row[column])
                    except ValueError:
                        raise StudioError(f"manifest '{path.name}' line {line}: {column} '{row[column]}' "
                                          "is not a number") from None
                    low = -1.0 if column == "valence" else 0.0
                    if not low <= value <= 1.0:
                        raise StudioError(f"manifest '{path.name}' line {line}: {column} = {value} "
                                          f"must lie in [{low:g}, 1]")
                    entry[column] = value
            labels[normalise_key(row["path"])] = entry
    return labels


def lookup(labels: dict[str, dict], piece_id: str, source_path: str = "", root: str = "") -> dict | None:
    """The manifest entry for a piece: by path relative to root, by piece id, or by file name."""
    candidates = [piece_id.split("#")[0]]
    if source_path:
        if root:
            candidates.insert(0, os.path.relpath(source_path, root))
        candidates.append(os.path.basename(source_path))
    for candidate in candidates:
        entry = labels.get(normalise_key(candidate))
        if entry is not None:
            return entry
    return None
