"""Segments as training examples: piano rolls with their labels, read lazily from the memory-mapped cache.

Each example is a dict of tensors:
    roll        (2, steps, pitches) float   onsets, velocity while sounding (engines.music.notes.notes_to_roll)
    valid       (steps,) bool               steps inside the segment (a 2/4 segment fills 32 of 64)
    mode        ()  long                    0..7 (MODES), or WHITE_INDEX for "no mode"
    attributes  (len(ATTRIBUTES),) float    rebracketing, temporal complexity in [0, 1] (the first checkpoints'
                                            condition)
    conditions  (7,) float                  engines.models.conditioning.CONDITION_ATTRIBUTES in unit scale:
                                            rebracketing, temporal complexity and the five axes
    metre       ()  long                    index into METRES
    log_tempo   ()  float                   log of quarter notes per minute
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.data.cache import SegmentCache
from engines.models.conditioning import cache_attributes
from engines.music.analyzer import MODES
from engines.music.notes import METRES, bar_ticks, notes_to_roll, shift_to_c, ticks_per_step, transpose_notes

WHITE_INDEX = len(MODES)          # the "no mode" class of the conditioning embedding
ATTRIBUTES = ("rebracketing", "temporal_complexity")


def metre_index(ts_num: int, ts_den: int) -> int:
    """The index in METRES (the metres the engines generate) of a time signature. Another metre is labelled with
    the first one of the same bar length (else 4/4); its notes are untouched."""
    if (ts_num, ts_den) in METRES:
        return METRES.index((ts_num, ts_den))
    length = bar_ticks(ts_num, ts_den)
    for i, (num, den) in enumerate(METRES):
        if bar_ticks(num, den) == length:
            return i
    return METRES.index((4, 4))


class RollDataset(Dataset):
    """Piano rolls of the cache rows `indices` (e.g. cache.split_indices("train")).

    `key_to_c` moves every segment (by -6..5 semitones) so that the key the analyzer found has the tonic C:
    a model then learns C major and C minor only instead of spending latent capacity on 24 keys.
    """

    def __init__(self, cache: SegmentCache, indices, steps_per_beat: int = 4, pitch_low: int = 21,
                 pitch_high: int = 108, segment_bars: int = 4, key_to_c: bool = False):
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        self.steps_per_beat, self.pitch_low, self.pitch_high = steps_per_beat, pitch_low, pitch_high
        self.steps = segment_bars * 4 * steps_per_beat
        rows = cache.segments[self.indices]
        # Labels are small: read them once, so workers only touch the notes.
        self.modes = torch.as_tensor(rows["mode"].astype(np.int64))
        self.attributes = torch.as_tensor(np.stack([rows[a] for a in ATTRIBUTES], axis=1).astype(np.float32))
        self.conditions = torch.as_tensor(cache_attributes(rows))
        self.metres = torch.as_tensor([metre_index(int(n), int(d)) for n, d in zip(rows["ts_num"], rows["ts_den"])])
        self.log_tempo = torch.as_tensor(np.log(rows["tempo"].astype(np.float32)))
        tonics = rows["key"].astype(np.int64) % 12  # key = tonic + 12 for minor keys
        self.shifts = [shift_to_c(t) if key_to_c else 0 for t in tonics.tolist()]  # semitones per segment

    @classmethod
    def for_config(cls, cache: SegmentCache, indices, data, key_to_c: bool = False) -> "RollDataset":
        """The dataset of `indices` with the roll geometry of a DataConfig (`cfg.data`)."""
        return cls(cache, indices, data.steps_per_beat, data.pitch_low, data.pitch_high, data.segment_bars, key_to_c)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.item(i, self.shifts[i])

    def item(self, i: int, shift: int) -> dict:
        """Example i moved by `shift` semitones (notes pushed out of the pitch range fold back by octaves)."""
        segment = self.cache.segment(int(self.indices[i]))
        notes = transpose_notes(segment.notes, shift, self.pitch_low, self.pitch_high)
        roll = notes_to_roll(notes, segment.bar_length, segment.num_bars, self.steps_per_beat,
                             self.pitch_low, self.pitch_high)
        steps_used = self._steps_used(segment)
        valid = torch.zeros(self.steps, dtype=torch.bool)
        valid[:steps_used] = True
        return {"roll": torch.from_numpy(roll), "valid": valid, "mode": self.modes[i],
                "attributes": self.attributes[i], "conditions": self.conditions[i], "metre": self.metres[i],
                "log_tempo": self.log_tempo[i]}

    def _steps_used(self, segment) -> int:
        step = ticks_per_step(segment.bar_length, self.steps_per_beat)
        return min(self.steps, math.ceil(segment.length / step))
