"""Stage 1 of `prepare`: parse every source file into a shard on disk, in parallel, resumably.

One shard per source file: `<cache>/shards/<key>.npz` with the file's pieces, or `<key>.failed.json` with the
reason it could not be read. A shard that exists is never parsed again, so an interrupted run resumes.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import traceback
from pathlib import Path

from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from engines.music.notes import BAR_DTYPE, NOTE_DTYPE, TEMPO_DTYPE, Piece

# Bump when parsing changes, so old shards are not reused.
SHARD_FORMAT = 3


class Source(NamedTuple):
    """One file to parse: `kind` is 'corpus' (music21) or 'midi'; `root` is the folder ids are relative to."""

    kind: str
    collection: str
    path: str
    root: str

    @property
    def relative(self) -> str:
        return os.path.relpath(self.path, self.root)

    @property
    def piece_id(self) -> str:
        """collection/sub/folder/name: unique within a dataset, stable across machines."""
        return f"{self.collection}/{os.path.splitext(self.relative)[0]}".replace(os.sep, "/")


def shard_key(source: Source) -> str:
    """From the file's path below its root and its size (corpus files, which never change), or its content
    (a user's MIDI, which may be edited in place): the same file parsed anywhere has the same key."""
    if source.kind == "midi":
        with open(source.path, "rb") as fh:
            identity = hashlib.sha1(fh.read()).hexdigest()
    else:
        identity = str(os.path.getsize(source.path))
    stem = f"{SHARD_FORMAT}|{source.kind}|{source.collection}|{source.relative}|{identity}"
    name = os.path.basename(source.path).replace(".", "_")[:40]
    return hashlib.sha1(stem.encode()).hexdigest()[:16] + "_" + name


def write_shard(path: Path, pieces: list[Piece]) -> None:
    tempo_maps = [p.tempos if p.tempos is not None else np.zeros(0, TEMPO_DTYPE) for p in pieces]
    meta = [{"piece_id": p.piece_id, "collection": p.collection, "tempo_qpm": p.tempo_qpm, "title": p.title,
             "notes": len(p.notes), "bars": len(p.bars), "tempos": len(t)} for p, t in zip(pieces, tempo_maps)]
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta)),
             notes=np.concatenate([p.notes for p in pieces]) if pieces else np.zeros(0, NOTE_DTYPE),
             bars=np.concatenate([p.bars for p in pieces]) if pieces else np.zeros(0, BAR_DTYPE),
             tempos=np.concatenate(tempo_maps) if pieces else np.zeros(0, TEMPO_DTYPE))
    os.replace(tmp, path)  # atomic: a killed run never leaves half a shard


def read_shard(path: Path) -> list[Piece]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        notes, bars = data["notes"], data["bars"]
        tempos = data["tempos"] if "tempos" in data else np.zeros(0, TEMPO_DTYPE)  # older shards have none
    pieces, n0, b0, t0 = [], 0, 0, 0
    for m in meta:
        count = m.get("tempos", 0)
        pieces.append(Piece(piece_id=m["piece_id"], collection=m["collection"], tempo_qpm=m["tempo_qpm"],
                            title=m["title"], notes=notes[n0:n0 + m["notes"]], bars=bars[b0:b0 + m["bars"]],
                            tempos=tempos[t0:t0 + count] if count else None))
        n0, b0, t0 = n0 + m["notes"], b0 + m["bars"], t0 + count
    return pieces


def _parse_job(job: tuple[Source, str]) -> tuple[str, str | None]:
    source, out = job
    path = source.path
    try:
        if source.kind == "corpus":
            from engines.data.music21_import import parse_source

            pieces = parse_source(source.collection, path)
        else:
            from engines.data.midi_io import read_midi_piece

            pieces = [read_midi_piece(path, collection=source.collection, piece_id=source.piece_id)]
        write_shard(Path(out), pieces)
        return path, None
    except Exception as exc:  # any failure of one file is recorded and skipped, never fatal
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        failed = Path(out).with_suffix(".failed.json")
        tmp = failed.with_name(failed.name + ".tmp")
        tmp.write_text(json.dumps({"path": path, "reason": reason, "trace": traceback.format_exc()[-2000:]}))
        os.replace(tmp, failed)
        return path, reason


def parse_all(sources: list[Source], shard_dir: Path, workers: int = 0) -> dict:
    """Parse `sources` into shard_dir; returns counts of files parsed now, reused and failed now."""
    shard_dir.mkdir(parents=True, exist_ok=True)
    jobs, reused = [], 0
    for source, out in shard_paths(sources, shard_dir):
        if out.exists() or out.with_suffix(".failed.json").exists():
            reused += 1
            continue
        jobs.append((source, str(out)))
    jobs.sort(key=lambda j: -os.path.getsize(j[0].path))  # big files first: better balance across workers
    workers = workers or max(1, min(len(jobs), os.cpu_count() or 1))
    failed = 0
    if jobs:
        bar = tqdm(total=len(jobs), desc="parsing", unit="file", disable=None)
        if workers == 1:
            results = map(_parse_job, jobs)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=200)
            results = pool.imap_unordered(_parse_job, jobs)
        for _, reason in results:
            failed += reason is not None
            bar.update(1)
        bar.close()
        if workers != 1:
            pool.close()
            pool.join()
    return {"parsed": len(jobs) - failed, "reused": reused, "failed_now": failed}


def shard_paths(sources: list[Source], shard_dir: Path) -> list[tuple[Source, Path]]:
    """Each source with its shard path, in source order (deterministic build order)."""
    return [(s, shard_dir / f"{shard_key(s)}.npz") for s in sources]


def failure_reasons(sources, shard_dir: Path) -> list[dict]:
    out = []
    for source, path in shard_paths(sources, shard_dir):
        failed = path.with_suffix(".failed.json")
        if failed.exists():
            info = json.loads(failed.read_text())
            out.append({"path": source.relative, "collection": source.collection, "reason": info["reason"]})
    return out
