"""The training loop of every engine but the VAE: the denoiser, the guidance classifier, the GPT, the codec and
the judge.

Each epoch: a pass over the training split with AdamW, a linear warm-up then a cosine decay of the learning
rate over all epochs (or over `max_minutes`, when that ends the run first, so that a time-boxed run still
anneals), gradient clipping, and an exponential moving average (EMA) of the weights; then validation of
the EMA weights, one JSON line in metrics.jsonl, `last.pt` (everything needed to resume) and, when the
validation loss (or the settings' `select_on` metric) improves, `best.pt` (the EMA weights, which is what
sampling uses). Stops after `epochs` or `max_minutes`. Runs on CPU, on CUDA when present, and under `torchrun` as DDP.

Variable-length examples (the GPT's) can give `lengths`: batches are then drawn from length buckets
(LengthBucketSampler), so a batch pads to about its own length rather than to the longest in the corpus. Such a
run also saves `last.pt` every `checkpoint_minutes` inside an epoch, and `--resume` goes on from the batch it
had reached (the sampler skips the batches done), so a long epoch stopped by the end of a session loses at most
those minutes.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

from engines.training.common import (MetricsLog, ddp_setup, ddp_teardown, load_checkpoint, pick_device,
                                     plot_losses, save_checkpoint)

LR_FLOOR = 0.05          # the learning rate anneals to this share of its start
WARMUP_STEPS = 500


@dataclass
class LoopSettings:
    learning_rate: float
    weight_decay: float
    batch_size: int
    epochs: int
    ema_decay: float
    val_batch_size: int = 256
    collate: Callable | None = None   # DataLoader collate_fn (variable-length sequences); None = default
    lengths: Sequence[int] | None = None  # per training example: batch by length buckets (single process)
    select_on: str = "val_loss"       # the validation metric that picks best.pt ...
    select_higher: bool = False       # ... and whether higher is better (a classifier's accuracy)
    checkpoint_minutes: float = 10.0  # with `lengths`: last.pt inside an epoch this often (resumable there)

    def improves(self, row: dict, best: dict) -> bool:
        worst = -math.inf if self.select_higher else math.inf
        before = best.get(self.select_on, worst)
        return row[self.select_on] > before if self.select_higher else row[self.select_on] < before


class LengthBucketSampler(Sampler):
    """Batches of indices with similar `lengths`, in random order, each index once per epoch.

    Every epoch shuffles the indices, cuts them into pools of `pool_batches` batches, sorts each pool by
    length and cuts it into batches, then shuffles the batches: the randomness of plain shuffling, with
    padding to a batch's own longest example instead of a random one's."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, drop_last: bool = True,
                 pool_batches: int = 64):
        self.lengths, self.batch_size = np.asarray(lengths), batch_size
        self.seed, self.drop_last, self.pool = seed, drop_last, batch_size * pool_batches
        self.epoch = 0
        self.skip = 0   # batches of the next epoch already trained (a run resumed inside an epoch)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        order = rng.permutation(len(self.lengths))
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start:start + self.pool]
            pool = pool[np.argsort(self.lengths[pool], kind="stable")]
            batches += [pool[i:i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        skip, self.skip = self.skip, 0
        for i in rng.permutation(len(batches))[skip:]:
            yield batches[i].tolist()


def learning_rate_factor(step: int, total_steps: int, warmup: int = WARMUP_STEPS, floor: float = LR_FLOOR,
                         progress: float = 0.0) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from 1 down to `floor` at `total_steps`, or sooner
    when `progress` (the share of a time budget spent, 0..1) is further along than the steps are."""
    if step < warmup:
        return (step + 1) / warmup
    done = max(min(step, total_steps) / max(total_steps, 1), min(progress, 1.0))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * done))


def train_with_ema(build_model: Callable[[], torch.nn.Module], train_set: Dataset, val_set: Dataset,
                   settings: LoopSettings, loss_fn: Callable, validate_fn: Callable, payload_fn: Callable,
                   out_dir: str | Path, max_minutes: float = 0, resume: bool = False, seed: int = 0,
                   workers: int = 1) -> dict:
    """Train `build_model()`; returns the best epoch's row.

    loss_fn(model, batch) -> scalar loss (model may be DDP-wrapped); validate_fn(ema, loader, device) -> dict
    with "val_loss" and any other metrics; payload_fn(ema, row) -> the best.pt checkpoint dict."""
    rank, world = ddp_setup()
    main = rank == 0
    device = pick_device()
    out_dir = Path(out_dir)
    torch.manual_seed(seed + rank)
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=seed) if world > 1 else None
    drop_last = len(train_set) > settings.batch_size
    if settings.lengths is not None and sampler is None:
        buckets = LengthBucketSampler(settings.lengths, settings.batch_size, seed, drop_last)
        train_loader = DataLoader(train_set, batch_sampler=buckets, num_workers=workers,
                                  persistent_workers=workers > 0, collate_fn=settings.collate)
    else:
        train_loader = DataLoader(train_set, batch_size=settings.batch_size, shuffle=sampler is None,
                                  sampler=sampler, num_workers=workers, generator=torch.Generator().manual_seed(seed),
                                  drop_last=drop_last, persistent_workers=workers > 0, collate_fn=settings.collate)
    val_loader = DataLoader(val_set, batch_size=settings.val_batch_size, num_workers=workers,
                            collate_fn=settings.collate)
    model = build_model().to(device)
    with torch.random.fork_rng(devices=[]):  # a second build (deepcopy cannot copy weight-normed modules)
        ema = build_model().to(device)        # draws no random numbers the training would see
    ema.load_state_dict(model.state_dict())
    ema.eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    log = MetricsLog(out_dir / "metrics.jsonl")
    start_epoch, best, elapsed_before, step = 0, {"val_loss": float("inf")}, 0.0, 0
    done_in_epoch, partial = 0, (0.0, 0)   # batches of start_epoch already trained, and their loss sum and count
    if resume and (out_dir / "last.pt").is_file():
        state = load_checkpoint(out_dir / "last.pt", map_location=device)
        model.load_state_dict(state["state_dict"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, elapsed_before, step = state["epoch"], state["best"], state["elapsed"], state["step"]
        done_in_epoch = int(state.get("batch", 0))
        partial = (float(state.get("epoch_loss", 0.0)), int(state.get("epoch_batches", 0)))
        if done_in_epoch and (world > 1 or not isinstance(train_loader.batch_sampler, LengthBucketSampler)):
            if main:   # only the bucketed single-process sampler can skip what was done: the epoch starts over
                print(f"last.pt stopped {done_in_epoch} batches into epoch {start_epoch + 1}; this run cannot "
                      "go on from there, so that epoch starts over", flush=True)
            done_in_epoch, partial = 0, (0.0, 0)
        if main:
            where = f"{done_in_epoch} batches into epoch {start_epoch + 1}" if done_in_epoch \
                else f"after epoch {start_epoch}"
            print(f"resuming {where} ({elapsed_before / 60:.1f} min trained)", flush=True)
    total_steps = max(settings.epochs * len(train_loader), 1)
    wrapped = DistributedDataParallel(model) if world > 1 else model
    started = time.time()
    budget = max_minutes * 60 if max_minutes else float("inf")
    buckets = isinstance(train_loader.batch_sampler, LengthBucketSampler)
    saved_at = time.time()

    def save_last(epoch: int, batch: int, loss_sum: float, count: int, elapsed: float) -> None:
        """last.pt: everything --resume needs to go on at batch `batch` of epoch `epoch` (0-based)."""
        save_checkpoint({"state_dict": model.state_dict(), "ema": ema.state_dict(),
                         "optimizer": optimizer.state_dict(), "epoch": epoch, "batch": batch, "best": best,
                         "epoch_loss": loss_sum, "epoch_batches": count, "elapsed": elapsed, "step": step},
                        out_dir / "last.pt")

    for epoch in range(start_epoch, settings.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        skipped = done_in_epoch if epoch == start_epoch else 0
        if buckets:
            train_loader.batch_sampler.epoch = epoch  # a resumed run draws the epoch it would have drawn ...
            train_loader.batch_sampler.skip = skipped  # ... from the batch it had reached
        model.train()
        total, batches = partial if skipped else (0.0, 0)   # batches: this epoch's, the skipped ones too
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=not main or None, leave=False)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            for group in optimizer.param_groups:
                spent = (elapsed_before + time.time() - started) / budget
                group["lr"] = settings.learning_rate * learning_rate_factor(step, total_steps, progress=spent)
            loss = loss_fn(wrapped, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():  # EMA warms up: early on it follows the weights closely
                decay = min(settings.ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
                for kept, live in zip(ema.buffers(), model.buffers()):  # statistics and codebooks follow as they are
                    kept.copy_(live)
            step += 1
            total += loss.item()
            batches += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if elapsed_before + time.time() - started > budget:
                break
            if buckets and main and world == 1 and settings.checkpoint_minutes and \
                    time.time() - saved_at > settings.checkpoint_minutes * 60:
                save_last(epoch, batches, total, batches, elapsed_before + time.time() - started)
                saved_at = time.time()
        elapsed = elapsed_before + time.time() - started
        # the time budget ended the epoch early: a bucketed run's --resume (with a larger budget) goes on inside it
        unfinished = buckets and world == 1 and batches < len(train_loader)
        if main:
            row = {"epoch": epoch + 1, "step": step, "minutes": round(elapsed / 60, 2),
                   "lr": optimizer.param_groups[0]["lr"], "train_loss": total / max(batches, 1),
                   **validate_fn(ema, val_loader, device), **({"partial": True} if unfinished else {})}
            log.write(row)
            extras = " ".join(f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") and k != "val_loss")
            print(f"epoch {epoch + 1}: train {row['train_loss']:.4f} val (EMA) {row['val_loss']:.4f} {extras} "
                  f"({row['minutes']:.1f} min)", flush=True)
            if settings.improves(row, best):
                best = row
                save_checkpoint(payload_fn(ema, row), out_dir / "best.pt")
            if unfinished:   # the row above is marked partial; --resume finishes the epoch
                save_last(epoch, batches, total, batches, elapsed)
            else:
                save_last(epoch + 1, 0, 0.0, 0, elapsed)
            saved_at = time.time()
            plot_losses(log.rows(), out_dir / "loss.png")
        if elapsed > budget:
            break
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    ddp_teardown()
    return best if main else {}
