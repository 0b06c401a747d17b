"""The segment cache: memory-mapped arrays on disk, written by streaming, read without loading the corpus.

    <dir>/segments.npy   SEGMENT_DTYPE, one row per segment (metadata, analysis, split, offsets)
    <dir>/notes.npy      NOTE_DTYPE, every segment's notes back to back (ticks from the segment start)
    <dir>/tokens.npy     int16 REMI ids, back to back
    <dir>/meta.json      pieces, collections, failures, fingerprint of the settings that built it

The same content packs into one compressed archive (`pack` / `unpack`), which ships in assets/ so that a
fresh clone does not wait for the corpus to be parsed.
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from engines.errors import StudioError
from engines.music.analyzer import AXES, MODES
from engines.music.notes import NOTE_DTYPE, Segment

CACHE_FORMAT = 2   # 2: the analyzer's feature list grew (displacement)
SPLITS = ("train", "validation", "test")
LABEL_SOURCES = ("analyzer", "manifest")
# Raw features kept per segment: for calibration, filtering and the engines' attribute heads.
FEATURE_NAMES = ("onset_rate", "polyphony", "velocity", "register", "pitch_range", "major_leaning", "key_clarity",
                 "chromaticism", "dissonance", "pc_entropy", "melodic_motion", "leap_fraction", "short_notes",
                 "silence", "syncopation", "cross_bar", "hemiola", "offbeat_phrases", "ioi_entropy",
                 "subdivisions", "density_variation", "irregular_durations", "displacement")

SEGMENT_DTYPE = np.dtype([
    ("piece", "<i4"), ("bar_start", "<i4"), ("num_bars", "u1"), ("ts_num", "u1"), ("ts_den", "u1"),
    ("tempo", "<f4"), ("note_offset", "<i8"), ("note_count", "<i4"), ("token_offset", "<i8"),
    ("token_count", "<i4"), ("split", "u1"), ("mode", "u1"), ("label_source", "u1"), ("key", "u1"),
    ("scores", "<f4", (len(MODES),)), ("axes", "<f4", (len(AXES),)), ("rebracketing", "<f4"),
    ("temporal_complexity", "<f4"), ("features", "<f4", (len(FEATURE_NAMES),)),
])
ARRAYS = {"segments": SEGMENT_DTYPE, "notes": NOTE_DTYPE, "tokens": np.dtype("<i2")}


class CacheWriter:
    """Appends rows to raw files as they come, then turns them into .npy files: constant memory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files = {name: open(self.directory / f"{name}.bin.tmp", "wb") for name in ARRAYS}
        self.counts = {name: 0 for name in ARRAYS}

    def append(self, name: str, rows: np.ndarray) -> int:
        """Write rows; returns the offset (in rows) where they start."""
        offset = self.counts[name]
        self._files[name].write(np.ascontiguousarray(rows, dtype=ARRAYS[name]).tobytes())
        self.counts[name] += len(rows)
        return offset

    def close(self, meta: dict) -> None:
        for name, fh in self._files.items():
            fh.close()
            raw = self.directory / f"{name}.bin.tmp"
            out = self.directory / f"{name}.npy.tmp"
            with open(out, "wb") as dst, open(raw, "rb") as src:
                header = {"descr": np.lib.format.dtype_to_descr(ARRAYS[name]), "fortran_order": False,
                          "shape": (self.counts[name],)}
                np.lib.format.write_array_header_1_0(dst, header)
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
            raw.unlink()
            os.replace(out, self.directory / f"{name}.npy")
        meta = dict(meta, cache_format=CACHE_FORMAT, counts=self.counts)
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1))


class SegmentCache:
    """Read-only view of a built cache; arrays are memory-mapped, segments are materialised on demand."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise StudioError(f"no segment cache in '{self.directory}'; run `python -m engines prepare` first")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("cache_format") != CACHE_FORMAT:
            raise StudioError(f"the segment cache in '{self.directory}' is of an older format; "
                              "run `python -m engines prepare` again")
        self.segments = np.load(self.directory / "segments.npy", mmap_mode="r")
        self.notes = np.load(self.directory / "notes.npy", mmap_mode="r")
        self.tokens = np.load(self.directory / "tokens.npy", mmap_mode="r")
        self.pieces: list[dict] = self.meta["pieces"]
        self.collections: list[str] = self.meta["collections"]

    def __len__(self) -> int:
        return len(self.segments)

    def segment_notes(self, index: int) -> np.ndarray:
        row = self.segments[index]
        return np.array(self.notes[row["note_offset"]:row["note_offset"] + row["note_count"]])

    def segment_tokens(self, index: int) -> np.ndarray:
        row = self.segments[index]
        return np.array(self.tokens[row["token_offset"]:row["token_offset"] + row["token_count"]], np.int32)

    def piece_of(self, index: int) -> dict:
        return self.pieces[int(self.segments[index]["piece"])]

    def segment(self, index: int) -> Segment:
        if not 0 <= index < len(self):
            raise StudioError(f"segment {index} does not exist; the cache holds {len(self)} segments")
        row = self.segments[index]
        piece = self.piece_of(index)
        return Segment(notes=self.segment_notes(index), ts_num=int(row["ts_num"]), ts_den=int(row["ts_den"]),
                       num_bars=int(row["num_bars"]), tempo_qpm=float(row["tempo"]), piece_id=piece["id"],
                       collection=self.collections[piece["collection"]], bar_start=int(row["bar_start"]),
                       meta={"index": index, "split": SPLITS[row["split"]], "title": piece["title"]})

    def collection_of_rows(self) -> np.ndarray:
        """(segments,) collection index of each segment."""
        piece_collection = np.array([p["collection"] for p in self.pieces], np.int32)
        return piece_collection[self.segments["piece"]]

    def split_indices(self, split: str) -> np.ndarray:
        if split not in SPLITS:
            raise StudioError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
        return np.nonzero(self.segments["split"] == SPLITS.index(split))[0]


def pack(directory: Path, archive: Path) -> None:
    """Cache directory -> one compressed .npz archive (deterministic bytes: fixed zip timestamps)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name in ARRAYS:
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(2026, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as dst, open(directory / f"{name}.npy", "rb") as src:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
        info = zipfile.ZipInfo("meta.json", date_time=(2026, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, (directory / "meta.json").read_text())
    os.replace(tmp, archive)


def archive_meta(archive: Path) -> dict:
    """meta.json of a packed archive, read without unpacking it."""
    with zipfile.ZipFile(archive) as zf:
        return json.loads(zf.read("meta.json"))


def unpack(archive: Path, directory: Path) -> None:
    """The shipped archive -> a cache directory: streamed into a sibling folder, then swapped in whole, so a
    killed unpack never leaves a mix of old and new files."""
    tmp = directory.with_name(directory.name + ".unpacking")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for name in [f"{n}.npy" for n in ARRAYS] + ["meta.json"]:
            with zf.open(name) as src, open(tmp / name, "wb") as dst:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)
