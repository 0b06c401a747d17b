"""Is this segment a copy of a training segment? Answered in about a millisecond against the whole train split.

    index = CopyIndex.build(cache)                  # once per corpus (a second or two for 57 000 segments)
    similarity, row = index.nearest(segment)        # the closest training segment and how close
    index.is_copy(segment)                          # similarity >= threshold (0.8)
    index.near_twins(row)                           # how often a training segment's pattern recurs in training

Similarity is the evaluation suite's (engines/evaluation/diversity.note_similarity): the Jaccard similarity
of two segments' (onset tick, pitch) sets at the best transposition within a tritone either way; >= 0.8 is a
near copy, 1 a duplicate. Comparing a segment with every training segment that way would take seconds, so an
inverted index shortlists them first: each segment is cut into shingles, one per pair of consecutive notes in
(onset, pitch) order, as (onset of the first, onset gap, pitch interval). A shingle does not change when the
segment is transposed, and a changed note spoils only the two shingles it is in, so a near copy shares most of
them. The `shortlist` training segments with the highest estimated shingle Jaccard are then measured exactly.
"""
from __future__ import annotations

import numpy as np

from engines.evaluation.diversity import note_similarity
from engines.music.notes import Segment

SHORTLIST = 8


def shingles(starts: np.ndarray, pitches: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, shingle key) of every pair of consecutive notes of the same owner; notes must be sorted by
    (owner, start, pitch). The key packs onset (12 bits), gap (12 bits) and interval + 128 (8 bits)."""
    same = owners[1:] == owners[:-1]
    start = np.minimum(starts[:-1], 4095).astype(np.int64)
    gap = np.minimum(starts[1:] - starts[:-1], 4095).astype(np.int64)
    interval = (pitches[1:].astype(np.int64) - pitches[:-1].astype(np.int64)) + 128
    keys = (start << 20) | (gap << 8) | interval
    return owners[:-1][same], keys[same]


class CopyIndex:
    def __init__(self, cache, rows: np.ndarray, keys: np.ndarray, starts: np.ndarray, owners: np.ndarray,
                 sizes: np.ndarray, note_keys: np.ndarray, note_starts: np.ndarray, threshold: float = 0.8,
                 shortlist: int = SHORTLIST):
        self.cache = cache
        self.rows = rows          # (N,) cache rows indexed
        self.keys = keys          # (K,) distinct shingle keys, sorted
        self.starts = starts      # (K + 1,) where each key's postings start in `owners`
        self.owners = owners      # postings: positions in `rows`
        self.sizes = sizes        # (N,) distinct shingles per indexed segment
        self.note_keys = note_keys      # every indexed segment's notes as onset << 7 | pitch, ascending per segment
        self.note_starts = note_starts  # (N + 1,) where each segment's note keys start in `note_keys`
        self.threshold = threshold
        self.shortlist = shortlist

    @classmethod
    def build(cls, cache, split: str = "train", threshold: float = 0.8, shortlist: int = SHORTLIST) -> "CopyIndex":
        """The index of every segment of `split` in a SegmentCache, built with array operations only."""
        rows = cache.split_indices(split)
        meta = cache.segments[rows]
        counts = meta["note_count"].astype(np.int64)
        total = int(counts.sum())
        # positions of every note of the chosen rows in cache.notes, row after row
        first = np.repeat(meta["note_offset"].astype(np.int64) - np.cumsum(counts) + counts, counts)
        notes = cache.notes[first + np.arange(total)]
        owners = np.repeat(np.arange(len(rows)), counts)
        order = np.lexsort((notes["pitch"], notes["start"], owners))
        note_keys = (notes["start"][order].astype(np.int32) << 7) | notes["pitch"][order].astype(np.int32)
        note_starts = np.append(0, np.cumsum(counts)).astype(np.int64)
        owner, key = shingles(notes["start"][order], notes["pitch"][order], owners[order])
        pairs = np.unique((owner.astype(np.int64) << 32) | key)          # each shingle once per segment
        owner, key = (pairs >> 32).astype(np.int32), pairs & 0xFFFFFFFF
        order = np.argsort(key, kind="stable")
        keys, first_of_key = np.unique(key[order], return_index=True)
        starts = np.append(first_of_key, len(order)).astype(np.int64)
        sizes = np.bincount(owner, minlength=len(rows))
        return cls(cache, rows, keys, starts, owner[order], sizes, note_keys, note_starts, threshold, shortlist)

    def note_keys_of(self, position: int) -> np.ndarray:
        """The notes of the indexed segment at `position` (in `rows`) as onset << 7 | pitch, ascending."""
        return self.note_keys[self.note_starts[position]:self.note_starts[position + 1]]

    def segment_keys(self, segment: Segment) -> np.ndarray:
        notes = np.sort(segment.notes, order=["start", "pitch"])
        _, keys = shingles(notes["start"], notes["pitch"], np.zeros(len(notes), np.int32))
        return np.unique(keys)

    def candidates(self, segment: Segment, shortlist: int | None = None, by: str = "jaccard") -> np.ndarray:
        """Positions (in `rows`) of the `shortlist` (default the index's) training segments that share the most
        shingles with `segment`: by the estimated Jaccard of their shingle sets, or by="containment", by the
        share of `segment`'s shingles they hold (for a segment still being written, whose candidates go on
        past where it stands)."""
        keys = self.segment_keys(segment)
        if not len(keys) or not len(self.keys):
            return np.zeros(0, np.int64)
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        at = at[found]
        if not len(at):
            return np.zeros(0, np.int64)
        lengths = self.starts[at + 1] - self.starts[at]
        postings = np.repeat(self.starts[at] - np.cumsum(lengths) + lengths, lengths) + np.arange(int(lengths.sum()))
        shared = np.bincount(self.owners[postings], minlength=len(self.rows))
        if by == "containment":   # ties (a stock formula's many twins) broken toward the shortest candidate
            closeness = shared - self.sizes / (self.sizes.max() + 1.0)
        else:
            closeness = shared / np.maximum(self.sizes + len(keys) - shared, 1)
        k = min(shortlist or self.shortlist, len(closeness))
        best = np.argpartition(-closeness, k - 1)[:k]
        return best[shared[best] > 0]

    def nearest(self, segment: Segment) -> tuple[float, int | None]:
        """(similarity, cache row) of the training segment closest to `segment`; (0.0, None) when none is."""
        best, row = 0.0, None
        for position in self.candidates(segment):
            candidate = int(self.rows[position])
            similarity = note_similarity(segment, self.cache.segment(candidate))
            if similarity > best:
                best, row = similarity, candidate
        return best, row

    def near_twins(self, row: int, limit: int = 2000) -> int:
        """How many other training segments nearly copy the training segment at cache row `row` (similarity
        >= threshold), among the `limit` that share the most shingles with it: how common its pattern is in
        the corpus (a folk formula recurs hundreds of times; a passage of one piece has no twin)."""
        segment = self.cache.segment(int(row))
        others = (int(self.rows[p]) for p in self.candidates(segment, limit) if int(self.rows[p]) != int(row))
        return sum(note_similarity(segment, self.cache.segment(r)) >= self.threshold for r in others)

    def is_copy(self, segment: Segment) -> bool:
        return len(segment.notes) > 0 and self.nearest(segment)[0] >= self.threshold
