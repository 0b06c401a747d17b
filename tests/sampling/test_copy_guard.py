"""Sampling kept off copies of training segments (engines/sampling/copy_guard.py): a GPT that recites a training
segment and a denoiser that always predicts one are both made to vary it, and nothing else changes."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engines.errors import StudioError
from engines.evaluation.diversity import best_transposition, note_similarity
from engines.generation.copies import CopyIndex
from engines.music.notes import Segment, notes_to_roll, roll_to_notes, transpose_notes
from engines.sampling.autoregressive import RemiGrammar, sample_tokens
from engines.sampling.copy_guard import MIN_NOTES, CopyGuard, RollAwayFromCopies, substitutes
from engines.sampling.diffusion import NoiseScheduler, sample_loop
from engines.tokenizers.midi import decode_tokens, encode_segment
from engines.tokenizers.vocabulary import EOS, MIDI


@pytest.fixture(scope="module")
def index(corpus_cache):
    return CopyIndex.build(corpus_cache)


def training_row(index, notes: int = 16, rare: bool = False) -> int:
    """A 4/4 training segment of 4 bars with at least `notes` notes, every onset on the sixteenth grid (a roll
    holds it exactly) and room for a minor third up; `rare`: one with no near twin in training."""
    cache = index.cache
    for row in index.rows[::37]:
        meta = cache.segments[int(row)]
        if (meta["ts_num"], meta["ts_den"], meta["num_bars"]) != (4, 4, 4) or meta["note_count"] < notes:
            continue
        theirs = cache.segment(int(row)).notes
        if (theirs["start"] % 3 == 0).all() and (theirs["duration"] % 3 == 0).all() and theirs["pitch"].max() < 100 \
                and not (rare and index.near_twins(int(row), limit=60)):
            return int(row)
    raise AssertionError("no such training segment")


class Reciting:
    """A "GPT" that has memorised one MIDI span: after the prompt it puts all its weight on the span's next
    token, whatever was written (the model of a memorised passage, at its most stubborn)."""

    def __init__(self, vocabulary, span: list[int]):
        self.size, self.span, self.prompt = len(vocabulary), span, 0
        self.config = SimpleNamespace(block_size=1024)
        # where the span's pitch is blocked, another pitch (not a rest, a bar line or the end) comes next
        self.pitches = torch.tensor([name.startswith("Pitch_") for name in vocabulary.midi_tokens])
        self.start = vocabulary.midi_start

    def parameters(self):
        yield torch.zeros(1)

    def new_cache(self):
        return SimpleNamespace(length=0, select=lambda rows: None)

    def __call__(self, idx: torch.Tensor, cache):
        self.prompt = self.prompt or idx.shape[1]
        cache.length += idx.shape[1]
        logits = torch.zeros(idx.shape[0], 1, self.size)
        at = cache.length - self.prompt
        token = self.span[at] if at < len(self.span) else EOS
        if token >= self.start and self.pitches[token - self.start]:
            logits[:, 0, self.start:self.start + len(self.pitches)] += 10.0 * self.pitches
        logits[:, 0, token] = 30.0
        return logits, None


def decoded(vocabulary, row: list[int]) -> Segment:
    return decode_tokens(vocabulary.decode_midi([t for t in row if t != EOS]), "remi")


def test_a_gpt_reciting_a_training_segment_is_made_to_vary_it_from_where_it_starts_copying(vocabulary, index):
    row = training_row(index)
    original = index.cache.segment(row)
    span = vocabulary.encode_midi(index.cache.segment_tokens(row).astype(int))
    prompt = vocabulary.encode(eos=False) + [MIDI]
    plain = sample_tokens(Reciting(vocabulary, span), prompt, 3, 400, grammar=RemiGrammar(vocabulary, 4),
                          generator=torch.Generator().manual_seed(0))
    assert all(note_similarity(decoded(vocabulary, r), original) == 1.0 for r in plain)   # a copy, each time

    guard = CopyGuard(RemiGrammar(vocabulary, 4), index)
    rows = sample_tokens(Reciting(vocabulary, span), prompt, 3, 400, grammar=guard,
                         generator=torch.Generator().manual_seed(0))
    looked = np.sort(original.notes["start"])[MIN_NOTES - 1]          # the guard looks from the 8th note on

    def before(notes):
        early = notes[notes["start"] < looked]
        return sorted(zip(early["start"].tolist(), early["pitch"].tolist()))
    for r in rows:
        segment = decoded(vocabulary, r)
        assert index.nearest(segment)[0] < index.threshold            # no training segment nearly copied
        assert set(segment.notes["start"].tolist()) == set(original.notes["start"].tolist())   # its rhythm kept
        assert before(segment.notes) == before(original.notes)        # the opening gesture left alone
    assert len({tuple(r) for r in rows}) == 3                        # each row kept its own notes (state copies)


def test_the_guard_reads_a_continued_span_and_leaves_unknown_music_alone(vocabulary, index):
    row = training_row(index)
    span = vocabulary.encode_midi(index.cache.segment_tokens(row).astype(int))
    guard = CopyGuard(RemiGrammar(vocabulary, 4), index)
    bar_two = [i for i, t in enumerate(span) if vocabulary.name(t) == "Bar_None"][2]
    with pytest.raises(StudioError, match="REMI's order at token 'Bar_None'"):
        guard.start(span[:3] + span[:3])                             # the grammar still checks what is given
    state = guard.start(span)                 # a training segment given whole is read, not blocked (bars kept)
    assert len(state.starts) == len(index.cache.segment(row).notes)
    state = guard.start(span[:bar_two])                              # two bars given: already a copy so far
    assert len(state.starts) >= MIN_NOTES and state.matched is not None
    twin = copy.copy(state)
    guard.advance(twin, span[bar_two])
    assert twin.base.bars == state.base.bars + 1 and state.base.bars == 2   # the copy moved on alone
    # the same rhythm under leaps no training segment makes: nothing is blocked
    fresh = index.cache.segment(row)
    fresh.notes = np.sort(fresh.notes, order="start")
    fresh.notes["pitch"] = 30 + (np.arange(len(fresh.notes)) * 7) % 40
    ids = vocabulary.encode_midi(encode_segment(fresh, "remi").tolist())
    state = guard.start(ids[:[i for i, t in enumerate(ids) if vocabulary.name(t) == "Bar_None"][3]])
    assert state.matched is not None and bool(guard.allowed(state).equal(guard.grammar.allowed(state.base)))


def test_a_denoiser_that_always_predicts_a_training_segment_is_made_to_vary_it(index):
    row = training_row(index, 14, rare=True)
    original = index.cache.segment(row)
    moved = transpose_notes(original.notes, 3)           # memorised a minor third up: found through transposition
    target = torch.from_numpy(notes_to_roll(moved, 48, 4, 4, 21, 108) > 0).float() * 2 - 1   # (2, 64, 88)
    scheduler = NoiseScheduler(1000, "cosine", "v")

    def memorised(x_t, t):   # predicts the training segment whatever the noise says
        x0 = target.expand_as(x_t).clone()
        return x0, scheduler.eps_from_x0(x0, x_t, t)

    def decode(x0):
        return [Segment(notes=roll_to_notes(((x + 1) / 2).numpy(), 48, 4, 21)) for x in x0]

    def to_roll(b, notes):
        return notes_to_roll(notes, 48, 4, 4, 21, 108) > 0

    shape = (2, 2, 64, 88)
    plain = decode(sample_loop(scheduler, memorised, shape, 20, generator=torch.Generator().manual_seed(0)))
    assert all(best_transposition(s, original) == (1.0, -3) for s in plain)
    guarded = RollAwayFromCopies(memorised, index, decode, to_roll, scheduler, seed=0)
    out = decode(sample_loop(scheduler, guarded, shape, 20, generator=torch.Generator().manual_seed(0)))
    for segment in out:
        similarity = index.nearest(segment)[0]
        assert similarity < index.threshold                     # no longer a near copy ...
        assert len(segment.notes) >= len(original.notes) - 2    # ... with its notes moved, not struck
    assert guarded.moved_notes >= 2 and guarded.silenced.shape == guarded.held.shape == shape


def test_a_moved_note_goes_to_the_nearest_free_chord_tone_of_what_sounds_with_it():
    from tests.conftest import segment

    chord = segment([(0, 48, 60, 80), (0, 48, 64, 80), (0, 48, 67, 80), (48, 12, 72, 80), (60, 12, 74, 80)]).notes
    rng = np.random.default_rng(0)
    moved = substitutes(chord[[1, 4]], chord, rng)   # E of the C major chord, and the D after it
    assert moved["start"].tolist() == [0, 60] and moved["duration"].tolist() == [48, 12]
    e, d = moved["pitch"].tolist()
    assert e in (55, 72)          # the nearest C or G sounding with it that is not held then (60 and 67 are)
    assert d == 72                # alone, it takes the nearest pitch class the others play (C72 has ended)
