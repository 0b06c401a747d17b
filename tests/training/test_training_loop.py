"""The shared training loop's pieces: the learning-rate schedule (also over a time budget) and the
length-bucketed batches the GPT trains on."""
from __future__ import annotations

import numpy as np
import pytest

from engines.training.ema_loop import LR_FLOOR, LengthBucketSampler, learning_rate_factor


def test_schedule_warms_up_then_anneals_to_the_floor_by_steps_or_by_the_time_budget():
    assert learning_rate_factor(0, 1000, warmup=10) == pytest.approx(0.1)
    assert learning_rate_factor(10, 1000, warmup=10) == pytest.approx(1.0, abs=1e-3)
    assert learning_rate_factor(1000, 1000, warmup=10) == pytest.approx(LR_FLOOR)
    halfway = LR_FLOOR + (1 - LR_FLOOR) * 0.5
    assert learning_rate_factor(500, 1000, warmup=10) == pytest.approx(halfway)
    # a time budget half spent at step 100 of 1000: the cosine is where step 500 would put it
    assert learning_rate_factor(100, 1000, warmup=10, progress=0.5) == pytest.approx(halfway)
    assert learning_rate_factor(100, 1000, warmup=10, progress=1.7) == pytest.approx(LR_FLOOR)
    # steps further along than the clock: the steps decide
    assert learning_rate_factor(500, 1000, warmup=10, progress=0.1) == pytest.approx(halfway)


def test_length_buckets_cover_every_index_once_in_batches_of_similar_length():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, 1000)
    sampler = LengthBucketSampler(lengths, batch_size=8, seed=1, pool_batches=16)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 125 and all(len(b) == 8 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padded = np.mean([lengths[b].max() for b in batches])
    shuffled = rng.permutation(1000).reshape(-1, 8)
    assert padded < 0.7 * np.mean([lengths[b].max() for b in shuffled])  # far less padding than random batches
    assert list(sampler) != batches                       # a new order every epoch ...
    sampler.epoch = 0
    assert list(sampler) == batches                       # ... drawn from (seed, epoch): a resume redraws it
    ragged = LengthBucketSampler(lengths[:21], batch_size=8, drop_last=False)
    assert len(ragged) == 3 and sorted(i for b in ragged for i in b) == list(range(21))
    assert len(list(LengthBucketSampler(lengths[:21], batch_size=8))) == 2


def test_best_checkpoint_follows_the_chosen_validation_metric():
    from engines.training.ema_loop import LoopSettings

    by_loss = LoopSettings(1e-3, 0.0, 8, 1, 0.9)
    assert by_loss.improves({"val_loss": 1.0}, {"val_loss": float("inf")})
    assert not by_loss.improves({"val_loss": 3.0}, {"val_loss": 2.0})
    by_accuracy = LoopSettings(1e-3, 0.0, 8, 1, 0.9, select_on="val_mode_acc", select_higher=True)
    assert by_accuracy.improves({"val_mode_acc": 0.5, "val_loss": 9.0}, {"val_loss": float("inf")})  # the first
    assert by_accuracy.improves({"val_mode_acc": 0.9, "val_loss": 0.4}, {"val_mode_acc": 0.8, "val_loss": 0.3})
    assert not by_accuracy.improves({"val_mode_acc": 0.7, "val_loss": 0.1}, {"val_mode_acc": 0.8})
