"""`python -m engines prepare`: sources -> shards (parsed, resumable) -> segment cache (analysed, tokenized).

    prepare(cfg)                        the music21 corpus, into <data.cache_dir>/corpus
    prepare(cfg, midi_dir="songs/")     a folder of MIDI, into <data.cache_dir>/midi-songs
    ensure_corpus_cache(cfg)            the cache the studio reads: built, unpacked from assets/, or prepared
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.config import Config
from engines.data import cache as cache_format
from engines.data.cache import FEATURE_NAMES, SEGMENT_DTYPE, CacheWriter, SegmentCache
from engines.data.manifest import lookup, read_manifest
from engines.data import segmenting
from engines.data.segmenting import segment_piece
from engines.data.shards import SHARD_FORMAT, Source, failure_reasons, parse_all, read_shard, shard_paths
from engines.errors import StudioError
from engines.folders import check_writable
from engines.music import analyzer as analyzer_module
from engines.music import calibration
from engines.music.analyzer import AXES, MODES, ChromaticAnalyzer
from engines.music.notes import Segment
from engines.tokenizers import midi as midi_tokenizer

MIDI_EXTENSIONS = (".mid", ".midi")


def fingerprint(cfg: Config) -> str:
    """Hash of everything that decides a cache's content; a cache built otherwise is rebuilt.

    Code enters through explicit version constants (bump them when behaviour changes, not for comments),
    the analyzer's calibration values, the tokenizer's configuration and miditok's version.
    """
    from importlib.metadata import version

    d = cfg.data
    calibration_values = {k: v for k, v in vars(calibration).items() if k.isupper()}
    parts = {
        "data": [d.segment_bars, d.hop_bars, sorted(d.collections), d.min_notes, d.validation_fraction,
                 d.test_fraction],
        "analyzer": [cfg.analyzer.prototypes, cfg.analyzer.softmax_temperature, analyzer_module.ANALYZER_VERSION,
                     calibration_values],
        "code": [SHARD_FORMAT, cache_format.CACHE_FORMAT, segmenting.SEGMENTING_VERSION,
                 str(midi_tokenizer.tokenizer_config().to_dict()), version("miditok")],
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def split_of(piece_id: str, validation_fraction: float, test_fraction: float) -> int:
    """0 train, 1 validation, 2 test: from a hash of the piece id, so a piece never spans splits."""
    u = int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16) / 0x100000000
    return 2 if u < test_fraction else 1 if u < test_fraction + validation_fraction else 0


def corpus_cache_dir(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) / "corpus"


def midi_sources(midi_dir: str | Path) -> list[Source]:
    root = Path(midi_dir)
    if not root.is_dir():
        raise StudioError(f"MIDI folder '{root}' does not exist")
    files = sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in MIDI_EXTENSIONS and p.is_file())
    if not files:
        raise StudioError(f"MIDI folder '{root}' holds no .mid or .midi files")
    collection = root.resolve().name or "midi"
    return [Source("midi", collection, f, str(root)) for f in files]


def _build_shard(job) -> dict:
    """Worker: one shard's pieces -> segment rows, notes and tokens with offsets local to this shard."""
    source, shard, cfg_data, analyzer_cfg, labels, midi_root = job
    collection, path = source.collection, source.path
    analyzer = ChromaticAnalyzer(analyzer_cfg)
    pieces, rows, notes, tokens = [], [], [], []
    n_notes = n_tokens = 0
    for piece in read_shard(Path(shard)):
        label = lookup(labels, piece.piece_id, path if source.kind == "midi" else "", midi_root) if labels else None
        segments = segment_piece(piece, cfg_data["segment_bars"], cfg_data["hop_bars"], cfg_data["min_notes"])
        if not segments:
            continue
        split = split_of(piece.piece_id, cfg_data["validation_fraction"], cfg_data["test_fraction"])
        for seg in segments:
            # the tempo as the cache stores it (float32), so that re-analysing the cache (relabel) sees exactly
            # the segment analysed here
            seg.tempo_qpm = float(np.float32(seg.tempo_qpm))
            analysis = analyzer.analyze(seg)
            ids = midi_tokenizer.encode_segment(seg, "remi")
            row = np.zeros((), SEGMENT_DTYPE)
            row["piece"], row["bar_start"], row["num_bars"] = len(pieces), seg.bar_start, seg.num_bars
            row["ts_num"], row["ts_den"], row["tempo"] = seg.ts_num, seg.ts_den, seg.tempo_qpm
            row["note_offset"], row["note_count"] = n_notes, len(seg.notes)
            row["token_offset"], row["token_count"] = n_tokens, len(ids)
            row["split"] = split
            _write_analysis(row, analysis)
            if label is not None:
                row["label_source"] = 1
                row["mode"] = MODES.index(label["mode"])
                row["scores"] = np.eye(len(MODES))[row["mode"]]
                for name in ("rebracketing", "temporal_complexity"):
                    if name in label:
                        row[name] = label[name]
                for i, axis in enumerate(AXES):
                    if axis in label:
                        row["axes"][i] = label[axis]
            rows.append(row)
            notes.append(seg.notes)
            tokens.append(ids.astype(np.int16))
            n_notes += len(seg.notes)
            n_tokens += len(ids)
        pieces.append({"id": piece.piece_id, "collection": collection, "title": piece.title,
                       "source": source.relative})
    return {"pieces": pieces, "rows": np.array(rows, SEGMENT_DTYPE) if rows else np.zeros(0, SEGMENT_DTYPE),
            "notes": np.concatenate(notes) if notes else None, "tokens": np.concatenate(tokens) if tokens else None}


def _write_analysis(row: np.ndarray, analysis) -> None:
    """The analyzer's reading of a segment into its cache row (what relabel rewrites)."""
    row["scores"] = [analysis.scores[m] for m in MODES]
    row["axes"] = [analysis.axes[a] for a in AXES]
    row["rebracketing"], row["temporal_complexity"] = analysis.rebracketing, analysis.temporal_complexity
    row["features"] = [analysis.features[f] for f in FEATURE_NAMES]
    row["key"] = analysis.features["key_tonic"] + (0 if analysis.features["key_major"] else 12)
    row["mode"] = MODES.index(analysis.mode)


def _relabel_rows(job) -> np.ndarray:
    """Worker: re-analyse rows [start, stop) of a cache directory; returns their new segment rows."""
    directory, start, stop, analyzer_cfg = job
    old = np.load(Path(directory) / "segments.npy", mmap_mode="r")[start:stop]
    notes = np.load(Path(directory) / "notes.npy", mmap_mode="r")
    analyzer = ChromaticAnalyzer(analyzer_cfg)
    rows = np.zeros(len(old), SEGMENT_DTYPE)
    for name in SEGMENT_DTYPE.names:
        if name not in ("scores", "axes", "rebracketing", "temporal_complexity", "features", "key", "mode"):
            rows[name] = old[name]
    for k, row in enumerate(old):
        segment = Segment(notes=np.array(notes[row["note_offset"]:row["note_offset"] + row["note_count"]]),
                          ts_num=int(row["ts_num"]), ts_den=int(row["ts_den"]), num_bars=int(row["num_bars"]),
                          tempo_qpm=float(row["tempo"]), bar_start=int(row["bar_start"]))
        _write_analysis(rows[k], analyzer.analyze(segment))
    return rows


def relabel(cfg: Config, directory: str | Path | None = None, workers: int = 0) -> dict:
    """Re-analyse a built cache's segments with the analyzer as it is now (its version or calibration
    changed; nothing else did): the same segments, notes and tokens as a full `prepare` would cut, without
    parsing the corpus again (minutes, not tens of minutes). A cache labelled by a manifest is refused:
    prepare it again with its manifest."""
    directory = Path(directory) if directory else corpus_cache_dir(cfg)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise StudioError(f"no segment cache in '{directory}' to relabel; run `python -m engines prepare`")
    meta = json.loads(meta_path.read_text())
    if meta.get("manifest"):
        raise StudioError(f"the cache in '{directory}' was labelled by a manifest: run `python -m engines prepare "
                          "--manifest ...` again instead")
    started = time.time()
    count = len(np.load(directory / "segments.npy", mmap_mode="r"))
    chunk = 2000
    jobs = [(str(directory), a, min(a + chunk, count), cfg.analyzer) for a in range(0, count, chunk)]
    workers = workers or min(2, os.cpu_count() or 1)
    with build_lock(directory):
        tmp_dir = directory.with_name(directory.name + ".relabel")
        shutil.rmtree(tmp_dir, ignore_errors=True)
        writer = CacheWriter(tmp_dir)
        pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        results = pool.imap(_relabel_rows, jobs) if pool else map(_relabel_rows, jobs)
        for rows in tqdm(results, total=len(jobs), desc="relabelling", unit="chunk", disable=None):
            writer.append("segments", rows)
        if pool:
            pool.close()
            pool.join()
        for name in ("notes", "tokens"):
            array = np.load(directory / f"{name}.npy", mmap_mode="r")
            for a in range(0, len(array), 1 << 22):
                writer.append(name, np.asarray(array[a:a + (1 << 22)]))
        writer.close({**{k: v for k, v in meta.items() if k not in ("cache_format", "counts")},
                      "fingerprint": fingerprint(cfg)})
        for extra in directory.iterdir():   # derived files (e.g. the judge's transposed sets) go with the old labels
            if extra.name not in ("segments.npy", "notes.npy", "tokens.npy", "meta.json"):
                extra.unlink() if extra.is_file() else shutil.rmtree(extra, ignore_errors=True)
        for name in ("segments.npy", "notes.npy", "tokens.npy", "meta.json"):
            os.replace(tmp_dir / name, directory / name)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return {"out": str(directory), "segments": count, "seconds": round(time.time() - started, 1)}


def build(cfg: Config, sources, shard_dir: Path, out_dir: Path, manifest: str | None = None,
          midi_root: str = "", workers: int = 0) -> dict:
    """Shards -> cache directory, streamed in source order (deterministic), swapped in atomically."""
    labels = read_manifest(manifest) if manifest else {}
    tmp_dir = out_dir.with_name(out_dir.name + ".building")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    writer = CacheWriter(tmp_dir)
    cfg_data = {k: getattr(cfg.data, k) for k in ("segment_bars", "hop_bars", "min_notes", "validation_fraction",
                                                  "test_fraction")}
    jobs = [(source, str(path), cfg_data, cfg.analyzer, labels, midi_root)
            for source, path in shard_paths(sources, shard_dir) if path.exists()]
    pieces: list[dict] = []
    collections: list[str] = []
    workers = workers or min(2, os.cpu_count() or 1)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 and len(jobs) > 1 else None
    results = pool.imap(_build_shard, jobs, chunksize=4) if pool else map(_build_shard, jobs)
    for result in tqdm(results, total=len(jobs), desc="segmenting", unit="file", disable=None):
        rows = result["rows"]
        if len(rows) == 0:
            continue
        rows["piece"] += len(pieces)
        rows["note_offset"] += writer.counts["notes"]
        rows["token_offset"] += writer.counts["tokens"]
        for piece in result["pieces"]:
            if piece["collection"] not in collections:
                collections.append(piece["collection"])
            piece["collection"] = collections.index(piece["collection"])
        pieces.extend(result["pieces"])
        writer.append("segments", rows)
        writer.append("notes", result["notes"])
        writer.append("tokens", result["tokens"])
    if pool:
        pool.close()
        pool.join()
    if not pieces:
        writer.close({"pieces": [], "collections": []})
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise StudioError("no segments could be made: every file failed to parse or was too short "
                          f"(segments need {cfg.data.segment_bars} whole bars and {cfg.data.min_notes} notes)")
    failures = failure_reasons(sources, shard_dir)
    writer.close({"pieces": pieces, "collections": collections, "fingerprint": fingerprint(cfg),
                  "failures": failures, "manifest": bool(labels), "segment_bars": cfg.data.segment_bars})
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp_dir, out_dir)
    return {"segments": writer.counts["segments"], "pieces": len(pieces), "failed_files": len(failures)}


def prepare(cfg: Config, midi_dir: str | None = None, manifest: str | None = None, out: str | None = None,
            workers: int = 0) -> dict:
    """Parse (resumable) and build, holding the output directory's build lock. Returns a report."""
    out_dir = Path(out) if out else (Path(cfg.data.cache_dir) / f"midi-{midi_sources(midi_dir)[0][1]}" if midi_dir
                                     else corpus_cache_dir(cfg))
    with build_lock(out_dir):
        return _prepare_unlocked(cfg, midi_dir, manifest, str(out_dir), workers)


def _prepare_unlocked(cfg: Config, midi_dir: str | None = None, manifest: str | None = None,
                      out: str | None = None, workers: int = 0) -> dict:
    started = time.time()
    if midi_dir:
        sources = midi_sources(midi_dir)
        out_dir = Path(out) if out else Path(cfg.data.cache_dir) / f"midi-{sources[0][1]}"
    else:
        from engines.data.music21_import import corpus_root, corpus_sources

        sources = [Source("corpus", c, p, str(corpus_root() / c)) for c, p in corpus_sources(cfg.data.collections)]
        out_dir = Path(out) if out else corpus_cache_dir(cfg)
    shard_dir = Path(cfg.data.cache_dir) / "shards"
    parsed = parse_all(sources, shard_dir, workers)
    parse_seconds = time.time() - started
    built = build(cfg, sources, shard_dir, out_dir, manifest, midi_root=str(midi_dir or ""), workers=workers)
    failures = failure_reasons(sources, shard_dir)
    reasons = Counter(f["reason"].split(":")[0] for f in failures)
    return {"out": str(out_dir), "sources": len(sources), **parsed, **built,
            "failure_reasons": dict(reasons), "parse_seconds": round(parse_seconds, 1),
            "total_seconds": round(time.time() - started, 1)}


@contextmanager
def build_lock(directory: Path):
    """One process at a time builds or unpacks a cache directory; others wait here, then re-check."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.with_name(directory.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_corpus_cache(cfg: Config) -> SegmentCache:
    """The corpus cache, ready to read: as built, else unpacked from the shipped archive when that archive
    was built with these settings, else prepared from the corpus (tens of minutes, with a progress bar)."""
    directory = corpus_cache_dir(cfg)
    if not (directory / "meta.json").is_file():   # it must be built: say so now if it cannot be, not after the
        check_writable(directory.parent, "data.cache_dir")   # seconds that fingerprinting (miditok, torch) takes
    wanted = fingerprint(cfg)

    def current() -> bool:
        meta = directory / "meta.json"
        return meta.is_file() and json.loads(meta.read_text()).get("fingerprint") == wanted

    if current():
        return SegmentCache(directory)
    check_writable(directory.parent, "data.cache_dir")
    with build_lock(directory):
        if not current():  # another process may have finished it while we waited
            archive = Path(cfg.data.shipped_cache)
            if archive.is_file() and cache_format.archive_meta(archive).get("fingerprint") == wanted:
                print(f"unpacking the shipped segment cache {archive} -> {directory}", flush=True)
                cache_format.unpack(archive, directory)
            else:
                print("no segment cache matches these settings (the shipped one is for the defaults); parsing "
                      "the corpus: tens of minutes on 2 cores, resumable", flush=True)
                _prepare_unlocked(cfg)
    return SegmentCache(directory)


def corpus_stats(cache: SegmentCache) -> dict:
    """What `python -m engines stats --json` prints."""
    seg = cache.segments
    collection_rows = cache.collection_of_rows()
    splits = {name: int((seg["split"] == i).sum()) for i, name in enumerate(cache_format.SPLITS)}
    modes = {m: int((seg["mode"] == i).sum()) for i, m in enumerate(MODES)}
    n = max(len(seg), 1)
    return {
        "segments": int(len(seg)),
        "pieces": len(cache.pieces),
        "splits": splits,
        "pieces_per_split": {name: len({int(p) for p in seg["piece"][seg["split"] == i]})
                             for i, name in enumerate(cache_format.SPLITS)},
        "modes": modes,
        "mode_shares": {m: round(c / n, 4) for m, c in modes.items()},
        "collections": {c: int((collection_rows == i).sum()) for i, c in enumerate(cache.collections)},
        "notes": int(len(cache.notes)),
        "failed_files": len(cache.meta.get("failures", [])),
        "rebracketing_mean": round(float(np.mean(seg["rebracketing"])), 4),
        "temporal_complexity_mean": round(float(np.mean(seg["temporal_complexity"])), 4),
        "rebracketing": _spread(seg["rebracketing"]),
        "temporal_complexity": _spread(seg["temporal_complexity"]),
    }


def _spread(values: np.ndarray) -> dict:
    """How a [0, 1] attribute spreads over the corpus: mean, quartiles, and the share at exactly 0 (an
    attribute most segments measure as 0 cannot be steered by)."""
    values = np.asarray(values, float)
    if len(values) == 0:
        return {"mean": 0.0, "quartiles": [0.0, 0.0, 0.0], "zero_share": 0.0}
    return {"mean": round(float(values.mean()), 4),
            "quartiles": [round(float(q), 4) for q in np.quantile(values, [0.25, 0.5, 0.75])],
            "zero_share": round(float(np.mean(values == 0)), 4)}
