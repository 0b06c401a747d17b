"""The shared training loop's pieces: the learning-rate schedule (also over a time budget) and the
length-bucketed batches the GPT trains on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

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


class Numbers(Dataset):
    """n examples x = i, y = 2 i: a line any linear model learns, for running the loop itself."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i)]), "y": torch.tensor([2.0 * i])}


def recording_loss(seen: list):
    """A squared-error loss that appends each batch's x values (sorted) to `seen`: which batches were trained."""
    def loss_fn(model, batch):
        seen.append(sorted(int(v) for v in batch["x"][:, 0]))
        return (model(batch["x"]) - batch["y"]).pow(2).mean()
    return loss_fn


def test_a_bucketed_epoch_is_saved_inside_and_resumed_from_the_batch_it_had_reached(tmp_path, monkeypatch):
    from engines.training import ema_loop
    from engines.training.ema_loop import LoopSettings, train_with_ema

    seen = []
    loss_fn = recording_loss(seen)

    saves = []
    real_save = ema_loop.save_checkpoint

    def save(payload, path):
        real_save(payload, path)
        if path.name == "last.pt":
            saves.append((payload["epoch"], payload["batch"]))
            if len(saves) == 3:   # the third save, inside the first epoch: the session ends here
                raise KeyboardInterrupt
    monkeypatch.setattr(ema_loop, "save_checkpoint", save)
    settings = LoopSettings(1e-2, 0.0, 8, 2, 0.0, val_batch_size=64, lengths=np.arange(64),
                            checkpoint_minutes=1e-9)     # a save after every batch
    run = dict(train_set=Numbers(64), val_set=Numbers(64), settings=settings, loss_fn=loss_fn,
               validate_fn=lambda ema, loader, device: {"val_loss": 1.0},
               payload_fn=lambda ema, row: {"state_dict": ema.state_dict()}, out_dir=tmp_path, workers=0)
    with pytest.raises(KeyboardInterrupt):
        train_with_ema(lambda: torch.nn.Linear(1, 1), **run)
    assert saves == [(0, 1), (0, 2), (0, 3)]
    first_three = seen[:3]
    seen.clear()
    train_with_ema(lambda: torch.nn.Linear(1, 1), resume=True, **run)
    # the resumed run trains the rest of the first epoch (5 batches), then all 8 of the second
    assert len(seen) == 5 + 8
    assert sorted(i for b in first_three + seen[:5] for i in b) == list(range(64))
    assert saves[-1] == (2, 0)


def test_a_time_budget_that_ends_inside_a_bucketed_epoch_is_resumed_inside_it(tmp_path):
    import json

    from engines.training.ema_loop import LoopSettings, train_with_ema

    seen = []
    loss_fn = recording_loss(seen)

    run = dict(train_set=Numbers(32), val_set=Numbers(32), loss_fn=loss_fn,
               settings=LoopSettings(1e-2, 0.0, 8, 1, 0.0, val_batch_size=32, lengths=np.arange(32)),
               validate_fn=lambda ema, loader, device: {"val_loss": 1.0},
               payload_fn=lambda ema, row: {"state_dict": ema.state_dict()}, out_dir=tmp_path, workers=0)
    train_with_ema(lambda: torch.nn.Linear(1, 1), max_minutes=1e-9, **run)   # out of time after one batch
    assert len(seen) == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["epoch"] == 1 and rows[-1]["partial"] is True
    train_with_ema(lambda: torch.nn.Linear(1, 1), resume=True, **run)           # a larger budget: none
    assert len(seen) == 4 and sorted(i for b in seen for i in b) == list(range(32))   # the epoch, finished
    assert "partial" not in json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
