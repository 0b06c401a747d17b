"""Decoding that steers away from copying a training segment: memorisation-free decoding for REMI.

    guard = CopyGuard(RemiGrammar(vocabulary, 4), index)   # index: engines/generation/copies.CopyIndex
    sample_tokens(model, prompt, n, grammar=guard, ...)    # stands in for the grammar it wraps

MemFree decoding (Ippolito et al. 2022) blocks any token that would complete an n-gram of the training data.
Verbatim n-grams are the wrong unit here: the suite calls a segment a near copy when its (onset, pitch) set
matches a training segment's at Jaccard >= 0.8 at the best transposition within a tritone
(engines/evaluation/diversity.note_similarity), and a stock formula of the corpus is also written by any
segment that shares a scale run. So the guard measures that very similarity while the segment is written:

- Each row keeps the notes written so far. Once it holds `min_notes` notes, and again at every bar line, it
  shortlists the training segments that share most of its note-pair shingles (CopyIndex.candidates).
- For each candidate c and transposition t it counts the written notes that c holds (moved by t), and reads
  the prefix similarity: matched / (written + c's notes before the current onset - matched), the segment's
  own measure cut at where the row stands.
- Where that reaches `block_at` (below the copy threshold, so that the finished segment lands under it), the
  next Pitch may not be one that c plays at this onset: the row must vary the passage it is copying.

Everything else is the wrapped grammar's: the guard only removes the few pitches a copied segment plays at the
row's onset, and every other pitch stays open. It adds about a millisecond per row per bar line and some tens
of microseconds per note (one segment: about 2 % more time; 64 rows in one batch: about a tenth more).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from engines.errors import StudioError
from engines.music.notes import NOTE_DTYPE, TICKS_PER_QUARTER, Segment
from engines.tokenizers.midi import BEAT_RESOLUTION

TRANSPOSITIONS = np.arange(-6, 7)   # the suite's (engines/evaluation/diversity.py)
BLOCK_AT = 0.75                     # prefix similarity from which the copied passage's next notes are blocked
MIN_NOTES = 8                       # notes written before the guard looks (an opening gesture is no copy)
SHORTLIST = 16                      # training segments followed per row at a time
ONSET_BITS, CANDIDATE_SHIFT = 7, 20  # key = candidate << 20 | onset << 7 | pitch (onsets below 8192 ticks)
PITCH_MAY_FOLLOW = ("Position", "Tempo", "Duration")   # RemiGrammar's NEXT: where a Pitch may come next


@dataclass
class GuardState:
    base: object                                     # the wrapped grammar's state
    onset: int = -1                                  # tick of the current Position
    starts: list = field(default_factory=list)       # written notes (onset tick, pitch)
    pitches: list = field(default_factory=list)
    bars_seen: int = 0                               # the bar the candidates were last chosen at
    keys: np.ndarray | None = None                   # (K,) sorted keys of the candidates' notes
    first: np.ndarray | None = None                  # (C,) where each candidate's keys start in `keys`
    matched: np.ndarray | None = None                # (C, 13) written notes each candidate holds, per shift
    matched_here: np.ndarray | None = None           # (C, 13) of them at the current onset

    def __copy__(self):
        out = GuardState(copy.copy(self.base))
        out.__dict__.update({k: v for k, v in self.__dict__.items() if k != "base"})
        out.starts, out.pitches = list(self.starts), list(self.pitches)
        return out                                   # the arrays are replaced, never changed in place


class CopyGuard:
    """A REMI grammar (engines/sampling/autoregressive.RemiGrammar) that also keeps each row off the passage
    of a training segment it is copying (module docstring)."""

    def __init__(self, grammar, index, block_at: float = BLOCK_AT, min_notes: int = MIN_NOTES,
                 shortlist: int = SHORTLIST):
        self.grammar, self.index = grammar, index
        self.block_at, self.min_notes, self.shortlist = float(block_at), int(min_notes), int(shortlist)
        self.marker, self.vocabulary = grammar.marker, grammar.vocabulary
        size = len(self.vocabulary)
        self.pitch_of = np.full(size, -1, np.int64)      # token id -> MIDI pitch (-1: not a Pitch)
        self.pitch_token = np.full(128, -1, np.int64)    # MIDI pitch -> token id
        self.ts_den_of: dict[int, int] = {}
        for i, name in enumerate(self.vocabulary.midi_tokens):
            kind, _, value = name.partition("_")
            token = self.vocabulary.midi_start + i
            if kind == "Pitch":
                self.pitch_of[token], self.pitch_token[int(value)] = int(value), token
            elif kind == "TimeSig":
                self.ts_den_of[token] = int(value.split("/")[1])

    def start(self, prefix: list[int] = ()) -> GuardState:
        """The state after the given MIDI tokens `prefix`: they are checked by the grammar alone (bars a
        musician gives may be a training segment's; only what is written after them is kept off copies)."""
        state = GuardState(self.grammar.start([]))
        for token in prefix:
            if not bool(self.grammar.allowed(state.base)[token]):
                raise StudioError(f"the MIDI to continue does not follow REMI's order at token "
                                  f"'{self.vocabulary.name(int(token))}'")
            self.advance(state, int(token))
        return state

    def allowed(self, state: GuardState) -> torch.Tensor:
        mask = self.grammar.allowed(state.base)
        if state.matched is None or state.onset < 0 or state.base.last not in PITCH_MAY_FOLLOW:
            return mask
        # the prefix similarity is at most matched / written (the candidate's prefix holds every matched note):
        # most rows copy nothing, and this bound lets them through without the full measure
        if state.matched.max(initial=0) < self.block_at * len(state.starts):
            return mask
        blocked = self._blocked_pitches(state)
        if len(blocked):
            tokens = self.pitch_token[blocked]
            mask[torch.from_numpy(tokens[tokens >= 0])] = False
        return mask

    def advance(self, state: GuardState, token: int) -> None:
        self.grammar.advance(state.base, token)
        base = state.base
        kind = self.grammar.kind_of.get(token)
        if kind == "Position":
            onset = self._tick(base)
            if onset != state.onset and state.matched_here is not None:
                state.matched_here = np.zeros_like(state.matched_here)
            state.onset = onset
        elif kind == "Pitch" and state.onset >= 0:
            pitch = int(self.pitch_of[token])
            state.starts.append(state.onset)
            state.pitches.append(pitch)
            if state.matched is not None:
                hit = self._hits(state, np.array([state.onset]), np.array([pitch]))
                state.matched = state.matched + hit
                state.matched_here = state.matched_here + hit
            elif len(state.starts) >= self.min_notes:
                self._choose_candidates(state)
        elif kind == "Bar" and state.matched is not None and base.bars > state.bars_seen:
            self._choose_candidates(state)

    def _tick(self, base) -> int:
        """The onset tick (segment grid, engines/music/notes.py) of the grammar state's Position in its bar: a
        position is a BEAT_RESOLUTION-th of the metre's beat (its denominator)."""
        ticks_per_position = TICKS_PER_QUARTER * 4 / (self.ts_den_of[base.time_signature] * BEAT_RESOLUTION)
        return int(round(base.position * ticks_per_position)) + (base.bars - 1) * round(
            base.bar_positions * ticks_per_position)

    def _choose_candidates(self, state: GuardState) -> None:
        """Shortlist the training segments the row's notes so far are closest to, and count its matches."""
        notes = np.zeros(len(state.starts), NOTE_DTYPE)
        notes["start"], notes["pitch"] = state.starts, state.pitches
        positions = self.index.candidates(Segment(notes=notes), self.shortlist, by="containment")
        state.bars_seen = state.base.bars
        keys = [(np.int64(c) << CANDIDATE_SHIFT) | self.index.note_keys_of(int(p)).astype(np.int64)
                for c, p in enumerate(positions)]
        state.keys = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        state.first = np.searchsorted(state.keys, np.arange(len(keys) + 1, dtype=np.int64) << CANDIDATE_SHIFT)
        here = np.asarray(state.starts) == state.onset
        starts, pitches = np.asarray(state.starts), np.asarray(state.pitches)
        state.matched = self._hits(state, starts, pitches)
        state.matched_here = self._hits(state, starts[here], pitches[here])

    def _hits(self, state: GuardState, starts: np.ndarray, pitches: np.ndarray) -> np.ndarray:
        """(C, 13): how many of the notes (starts, pitches) each candidate holds, moved by each transposition."""
        candidates = len(state.first) - 1
        if not candidates or not len(starts):
            return np.zeros((candidates, len(TRANSPOSITIONS)), np.int64)
        moved = pitches[:, None] + TRANSPOSITIONS[None, :]                                  # (N, 13)
        inside = (moved >= 0) & (moved < 128)
        query = (np.arange(candidates, dtype=np.int64)[:, None, None] << CANDIDATE_SHIFT) \
            | (starts.astype(np.int64)[None, :, None] << ONSET_BITS) | np.clip(moved, 0, 127)[None]  # (C, N, 13)
        at = np.minimum(np.searchsorted(state.keys, query), len(state.keys) - 1)
        return ((state.keys[at] == query) & inside[None]).sum(1)

    def _blocked_pitches(self, state: GuardState) -> np.ndarray:
        """The pitches the row may not write at its current onset: those a candidate it is copying (prefix
        similarity >= block_at at some transposition) plays there, moved back by that transposition."""
        candidates = len(state.first) - 1
        if not candidates:
            return np.zeros(0, np.int64)
        base = np.arange(candidates, dtype=np.int64) << CANDIDATE_SHIFT
        before = np.searchsorted(state.keys, base | (np.int64(state.onset) << ONSET_BITS)) - state.first[:-1]
        union = len(state.starts) + before[:, None] + state.matched_here - state.matched            # (C, 13)
        similarity = state.matched / np.maximum(union, 1)
        copying = np.argwhere(similarity >= self.block_at)
        if not len(copying):
            return np.zeros(0, np.int64)
        blocked = []
        for c, t in copying:
            low = np.searchsorted(state.keys, base[c] | (np.int64(state.onset) << ONSET_BITS))
            high = np.searchsorted(state.keys, base[c] | (np.int64(state.onset + 1) << ONSET_BITS))
            blocked.append((state.keys[low:high] & 127) - TRANSPOSITIONS[t])
        blocked = np.concatenate(blocked)
        return np.unique(blocked[(blocked >= 0) & (blocked < 128)])


class RollAwayFromCopies:
    """A diffusion denoiser (engines/sampling/diffusion.py's denoise(x_t, t) -> (x0, eps)) kept off near copies
    of training segments, in the spirit of anti-memorisation guidance (Chen et al. 2024):

    - From the step where less than `check_below` of the noise schedule is left, at every `every`-th call,
      each row's clean estimate x0 is decoded to notes and looked up in the CopyIndex (a row found under half
      of `block_at` is not looked up again).
    - Where its similarity to the nearest training segment reaches `block_at`, a `share` of the notes it shares
      with that segment (at least one, chosen at random) is moved: each to the nearest free pitch up to 9
      semitones away that is a chord tone of what sounds with it, else a pitch class the row plays
      (`substitutes`). The old note's cells are held at -1 in x0 from then on, the new note's at +1, and eps
      is re-derived.
    - Held once is held for good. A denoiser that memorised a segment writes it back within a step or two
      wherever the change is lifted (measured: similarity 0.4-0.7 right after one, 0.85-1.0 two steps later).
      Notes are moved rather than struck: struck notes left holes the denoiser did not fill (14 notes -> 9,
      energy 0.59 -> 0.07 on YELLOW's copies), and the sparse results were heard as other modes.

    decode(x0) -> [Segment] (the rows' notes); to_roll(b, notes) -> (2, T, P) bool where those notes lie in
    row b's roll (its metre's grid); scheduler: the NoiseScheduler (eps_from_x0)."""

    def __init__(self, denoise, index, decode, to_roll, scheduler, seed: int = 0, check_below: float = 0.6,
                 every: int = 6, share: float = 0.15, block_at: float = BLOCK_AT):
        self.denoise, self.index, self.decode, self.to_roll = denoise, index, decode, to_roll
        self.scheduler, self.check_below, self.every = scheduler, float(check_below), int(every)
        self.share, self.block_at = float(share), float(block_at)
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.silenced: torch.Tensor | None = None   # (B, 2, T, P) bool: cells held silent (the copied notes)
        self.held: torch.Tensor | None = None       # (B, 2, T, P) bool: cells held sounding (where they went)
        self.moved_notes = 0                        # notes moved so far, every row together
        self.settled: set[int] = set()              # rows found far from every training segment: not looked up again

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor):
        x0, eps = self.denoise(x_t, t)
        late = float(t.max()) < self.check_below * self.scheduler.num_steps
        self.calls += late
        if late and (self.calls - 1) % self.every == 0:
            self._move_copies(self._held(x0))
        if self.silenced is not None:
            x0 = self._held(x0)
            eps = self.scheduler.eps_from_x0(x0, x_t, t)
        return x0, eps

    def _held(self, x0: torch.Tensor) -> torch.Tensor:
        if self.silenced is None:
            return x0
        return x0.masked_fill(self.silenced, -1.0).masked_fill(self.held, 1.0)

    def _move_copies(self, x0: torch.Tensor) -> None:
        from engines.evaluation.diversity import best_transposition

        for b, segment in enumerate(self.decode(x0)):
            if not len(segment.notes) or b in self.settled:
                continue
            similarity, row = self.index.nearest(segment)
            if similarity < self.block_at / 2:   # by 60 % of the noise left a row has its shape (measured on
                self.settled.add(b)              # 100 rows: each that ended at 0.75 or more was at 0.79 by then)
            if row is None or similarity < self.block_at:
                continue
            theirs = self.index.cache.segment(row)
            _, shift = best_transposition(segment, theirs)
            # their notes, moved into this row's key; those it also plays are the ones it copies
            moved = theirs.notes.copy()
            moved["pitch"] = np.clip(moved["pitch"].astype(np.int64) - shift, 0, 127)
            ours = set(zip(segment.notes["start"].tolist(), segment.notes["pitch"].tolist()))
            shared = moved[[(s, p) in ours for s, p in zip(moved["start"].tolist(), moved["pitch"].tolist())]]
            if not len(shared):
                continue
            count = max(1, int(np.ceil(self.share * len(shared))))
            old = shared[np.sort(self.rng.choice(len(shared), count, replace=False))]
            new = substitutes(old, segment.notes, self.rng)
            if self.silenced is None:
                self.silenced = torch.zeros_like(x0, dtype=torch.bool)
                self.held = torch.zeros_like(x0, dtype=torch.bool)
            self.silenced[b] |= torch.from_numpy(self.to_roll(b, old)).to(x0.device)
            self.held[b] |= torch.from_numpy(self.to_roll(b, new)).to(x0.device)
            self.held[b] &= ~self.silenced[b]
            self.moved_notes += len(old)


SUBSTITUTE_STEPS = tuple(s * d for s in range(1, 10) for d in (1, -1))   # semitones a note may move, nearest first


def substitutes(old: np.ndarray, notes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`old` notes (NOTE_DTYPE) each moved to the nearest free pitch (SUBSTITUTE_STEPS, up or down first at
    random) whose pitch class sounds in `notes` while it does (a chord tone: the harmony stays), else whose
    pitch class `notes` plays at all (the key stays). Free: no note of `notes` or of the moved ones holds that
    pitch at that time. A note with no such pitch is dropped."""
    moving = set(zip(old["start"].tolist(), old["pitch"].tolist()))
    others = [(int(n["start"]), int(n["start"] + n["duration"]), int(n["pitch"])) for n in notes
              if (int(n["start"]), int(n["pitch"])) not in moving]
    classes = {p % 12 for _, _, p in others} or set((notes["pitch"].astype(int) % 12).tolist())
    taken = [(int(n["start"]), int(n["start"] + n["duration"]), int(n["pitch"])) for n in notes]
    out = []
    for note in old:
        start, end, pitch = int(note["start"]), int(note["start"] + note["duration"]), int(note["pitch"])
        sounding = {p % 12 for s, e, p in others if s < end and e > start}
        sign = 1 if rng.random() < 0.5 else -1
        for allowed in (sounding, classes):
            moved = next((pitch + sign * step for step in SUBSTITUTE_STEPS
                          if 0 <= pitch + sign * step < 128 and (pitch + sign * step) % 12 in allowed
                          and all(p != pitch + sign * step or e <= start or s >= end for s, e, p in taken)), None)
            if moved is not None:
                out.append((start, end - start, moved, int(note["velocity"]), int(note["track"])))
                taken.append((start, end, moved))
                break
    return np.array(out, dtype=notes.dtype) if out else np.zeros(0, notes.dtype)
