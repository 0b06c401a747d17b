"""Corpus browsing and uploads: filter the segments of the corpus, view and hear one, analyse a user's MIDI.

A mixin of engines.api.StudioEngine (it uses the engine's cache, config and file helpers).
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.analysis import ALL_TRACKS, analyze_segments, excerpt_note, midi_file_excerpt, track_choices
from engines.data.cache import SPLITS
from engines.data.midi_io import segment_to_score, write_segment_midi
from engines.errors import StudioError
from engines.music.analyzer import AXES, MODE_COLORS, MODES
from engines.music.features import key_name
from engines.music.notes import TICKS_PER_QUARTER, Segment
from engines.views import SegmentView, UploadView, note_view

RANGE_FILTERS = ("rebracketing", "temporal_complexity") + AXES


@dataclass
class BrowseQuery:
    """What the corpus browser filters on. Empty lists mean 'any'; ranges are inclusive."""

    modes: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    split: str = "all"
    ranges: dict = field(default_factory=dict)   # name in RANGE_FILTERS -> (low, high)
    text: str = ""                               # substring of the piece id
    limit: int = 200


class CorpusAPI:
    def collections(self) -> list[str]:
        return list(self.cache.collections)

    def browse(self, query: BrowseQuery) -> tuple[list[dict], int]:
        """Rows matching the query (at most query.limit, in corpus order) and how many matched in all."""
        matches = self.match_indices(query)
        return [self.row(int(i)) for i in matches[:query.limit]], int(len(matches))

    def random_match(self, query: BrowseQuery, seed: int | None = None) -> int:
        """One segment drawn uniformly from everything the query matches (not only the page shown)."""
        matches = self.match_indices(query)
        if len(matches) == 0:
            raise StudioError("no segment matches these filters; widen them and try again")
        return int(np.random.default_rng(seed).choice(matches))

    def match_indices(self, query: BrowseQuery) -> np.ndarray:
        seg = self.cache.segments
        keep = np.ones(len(seg), bool)
        if query.modes:
            unknown = [m for m in query.modes if m not in MODES]
            if unknown:
                raise StudioError(f"unknown mode '{unknown[0]}'; choose from {', '.join(MODES)}")
            keep &= np.isin(seg["mode"], [MODES.index(m) for m in query.modes])
        if query.collections:
            wanted = [self.cache.collections.index(c) for c in query.collections if c in self.cache.collections]
            keep &= np.isin(self._collection_rows, wanted)
        if query.split != "all":
            if query.split not in SPLITS:
                raise StudioError(f"unknown split '{query.split}'; choose all or one of {', '.join(SPLITS)}")
            keep &= seg["split"] == SPLITS.index(query.split)
        for name, (low, high) in query.ranges.items():
            if name not in RANGE_FILTERS:
                raise StudioError(f"cannot filter on '{name}'; choose from {', '.join(RANGE_FILTERS)}")
            values = seg[name] if name in ("rebracketing", "temporal_complexity") else seg["axes"][:, AXES.index(name)]
            keep &= (values >= low) & (values <= high)
        if query.text.strip():
            piece_match = np.char.find(self._search_keys, query.text.strip().lower()) >= 0
            keep &= piece_match[seg["piece"]]
        return np.nonzero(keep)[0]

    def row(self, index: int) -> dict:
        r = self.cache.segments[index]
        piece = self.cache.pieces[int(r["piece"])]
        return {"index": index, "piece": piece["id"], "collection": self.cache.collections[piece["collection"]],
                "bars": f"{int(r['bar_start']) + 1}-{int(r['bar_start']) + int(r['num_bars'])}",
                "time_signature": f"{r['ts_num']}/{r['ts_den']}", "mode": MODES[r["mode"]],
                "key": _key_of(r), "rebracketing": round(float(r["rebracketing"]), 2),
                "temporal_complexity": round(float(r["temporal_complexity"]), 2),
                **{axis: round(float(v), 2) for axis, v in zip(AXES, r["axes"])}}

    def stored_analysis(self, index: int) -> dict:
        """The cache's analysis of a segment (manifest labels included), in the `analyze --json` shape."""
        r = self.cache.segments[index]
        return {"bars": [int(r["bar_start"]) + 1, int(r["bar_start"]) + int(r["num_bars"])],
                "mode": MODES[r["mode"]], "scores": {m: round(float(s), 4) for m, s in zip(MODES, r["scores"])},
                "axes": {a: round(float(v), 4) for a, v in zip(AXES, r["axes"])},
                "rebracketing": round(float(r["rebracketing"]), 4),
                "temporal_complexity": round(float(r["temporal_complexity"]), 4),
                "key": _key_of(r), "label_source": "manifest" if r["label_source"] else "analyzer"}

    def segment_view(self, index: int) -> SegmentView:
        segment = self.cache.segment(int(index))
        analysis = self.stored_analysis(int(index))
        mode = analysis["mode"]
        region = [{"start": 0.0, "end": segment.length / TICKS_PER_QUARTER, "mode": mode, "color": MODE_COLORS[mode],
                   "label": mode}]
        midi_path = self._file(f"segment-{index}", ".mid", lambda p: write_segment_midi(segment, p))
        facts = {"piece": segment.piece_id, "collection": segment.collection,
                 "bars": f"{analysis['bars'][0]}-{analysis['bars'][1]}",
                 "time_signature": f"{segment.ts_num}/{segment.ts_den}", "tempo_qpm": round(segment.tempo_qpm, 1),
                 "key": analysis["key"], "split": segment.meta["split"], "notes": int(len(segment.notes))}
        if segment.meta["title"] != segment.piece_id:
            facts["title"] = segment.meta["title"]
        return SegmentView(index=int(index), title=f"{segment.piece_id}, bars {facts['bars']}", mode=mode,
                           color=MODE_COLORS[mode], analysis=analysis,
                           notes=note_view(segment.notes, segment.bar_length, segment.num_bars, region,
                                           segment.tempo_qpm),
                           midi_path=str(midi_path), facts=facts)

    def render_segment(self, index: int) -> str:
        """WAV of one corpus segment (rendered once, then served from disk)."""
        segment = self.cache.segment(int(index))
        return str(self._file(f"segment-{index}-{self._render_key}", ".wav",
                              lambda p: self._render_score(segment_to_score(segment), p)))

    def corpus_summary(self) -> dict:
        """`stats --json` of the corpus the studio serves."""
        from engines.data.prepare import corpus_stats

        return corpus_stats(self.cache)

    def axis_points(self, x_axis: str, y_axis: str, n: int = 4000, seed: int = 0) -> dict:
        """A fixed random sample of segments placed by two analyzer axes: {"x", "y", "mode", "index"}."""
        for name in (x_axis, y_axis):
            if name not in RANGE_FILTERS:
                raise StudioError(f"unknown axis '{name}'; choose from {', '.join(RANGE_FILTERS)}")
        seg = self.cache.segments
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(seg), size=min(n, len(seg)), replace=False))

        def values(name):
            return seg[name][pick] if name not in AXES else seg["axes"][pick, AXES.index(name)]

        return {"x": values(x_axis).tolist(), "y": values(y_axis).tolist(),
                "mode": [MODES[m] for m in seg["mode"][pick]], "index": pick.tolist()}

    # ---- uploads --------------------------------------------------------------------------------------
    def analyze_upload(self, path: str | Path, track: str = ALL_TRACKS) -> UploadView:
        """A user's MIDI: validated, analysed per segment (all tracks merged, the melody, or one track:
        `track`, analysis.track_choices), rendered whole. Raises StudioError on bad files."""
        path = Path(path)
        score, segments, full_seconds = midi_file_excerpt(path, self.cfg, track)
        analyses = analyze_segments(segments, self.cfg)
        digest = hashlib.sha1(path.read_bytes()).hexdigest()[:16]
        midi_path = self._file(f"upload-{digest}", ".mid", lambda p: shutil.copyfile(path, p))
        wav_path = self._file(f"upload-{digest}-{self._render_key}", ".wav", lambda p: self._render_score(score, p))
        notes = np.concatenate([_shifted(s) for s in segments])
        q = float(TICKS_PER_QUARTER)
        regions = [{"start": _offset(s) / q, "end": (_offset(s) + s.length) / q, "mode": a["mode"],
                    "color": MODE_COLORS[a["mode"]], "label": f"bars {a['bars'][0]}-{a['bars'][1]}: {a['mode']}"}
                   for s, a in zip(segments, analyses)]
        last = segments[-1]
        bar_lines = sorted({_offset(s) / q + i * s.bar_length / q for s in segments for i in range(s.num_bars + 1)})
        view = note_view(notes, last.bar_length, 0, regions)
        view.bar_lines = bar_lines
        return UploadView(name=path.name, segments=analyses, notes=view, wav_path=str(wav_path),
                          midi_path=str(midi_path), excerpt=excerpt_note(self.cfg.data.max_seconds, full_seconds),
                          tracks=track_choices(score), track=track or ALL_TRACKS)


def _key_of(row) -> str:
    """A cache row's key: 0..11 major keys on C..B, 12..23 the minor ones."""
    return key_name(int(row["key"]) % 12, int(row["key"]) < 12)


def _offset(segment: Segment) -> int:
    """Ticks from the start of the file to the segment (bars of a file segment are regular within a run)."""
    return int(segment.meta.get("offset", 0))


def _shifted(segment: Segment) -> np.ndarray:
    notes = segment.notes.copy()
    notes["start"] += _offset(segment)
    return notes
