"""The datasets the roll engines read (engines/data/torch_dataset.py): metres and items against the cache."""
import math

import numpy as np
import pytest
import torch

from engines.data.torch_dataset import ATTRIBUTES, METRES, RollDataset, metre_index
from engines.music.notes import notes_to_roll

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core


# ---- dataset -------------------------------------------------------------------------------------------------
def test_metre_index_of_listed_metres():
    for i, (num, den) in enumerate(METRES):
        assert metre_index(num, den) == i
    assert metre_index(2, 4) == 0 and metre_index(6, 8) == 1 and metre_index(4, 4) == 2


@pytest.mark.parametrize("ts, same_as", [
    ((4, 8), (2, 4)),    # 24 ticks a bar, like 2/4
    ((12, 16), (6, 8)),  # 36 ticks: 6/8 comes before 3/4 in METRES
    ((8, 4), (4, 2)),    # 96 ticks
    ((6, 2), (4, 4)),    # 144 ticks: no listed metre that long -> 4/4
    ((7, 8), (4, 4)),
    ((1, 4), (4, 4)),
])
def test_metre_index_of_unlisted_metres(ts, same_as):
    assert metre_index(*ts) == METRES.index(same_as)


def test_roll_dataset_items_match_the_cache(corpus_cache, vae_rows):
    ds = RollDataset(corpus_cache, vae_rows)
    assert len(ds) == 3
    expected_valid = {(2, 4): 32, (6, 8): 48, (4, 4): 64}
    for i, row in enumerate(vae_rows):
        item = ds[i]
        segment = corpus_cache.segment(row)
        meta = corpus_cache.segments[row]
        assert item["roll"].shape == (2, 64, 88) and item["roll"].dtype == torch.float32
        np.testing.assert_array_equal(item["roll"].numpy(), notes_to_roll(segment.notes, segment.bar_length,
                                                                          segment.num_bars))
        assert item["roll"][0].sum() > 0  # a real segment has onsets
        valid = item["valid"]
        assert valid.dtype == torch.bool and valid.shape == (64,)
        n = expected_valid[(segment.ts_num, segment.ts_den)]
        assert int(valid.sum()) == n and bool(valid[:n].all())
        # Nothing sounds in the padding of a short metre.
        assert item["roll"][:, n:].sum() == 0
        assert int(item["mode"]) == int(meta["mode"]) and item["mode"].dtype == torch.long
        assert int(item["metre"]) == metre_index(int(meta["ts_num"]), int(meta["ts_den"]))
        assert float(item["log_tempo"]) == pytest.approx(math.log(float(meta["tempo"])), rel=1e-6)
        np.testing.assert_allclose(item["attributes"].numpy(), [float(meta[a]) for a in ATTRIBUTES], rtol=1e-6)
