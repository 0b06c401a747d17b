"""`python -m engines train --engine diffusion`: train the piano-roll denoiser on the segment cache.

Each epoch: a pass over the training split (MSE of the epsilon / v prediction at uniformly drawn steps, with
condition dropout for classifier-free guidance), validation (the same loss with a fixed generator, so epochs
compare), one JSON line in metrics.jsonl, `last.pt` (everything needed to resume) and, when the validation
loss improves, `best.pt`: the exponential moving average of the weights, which is what sampling uses.
Stops after `epochs` or `max_minutes`. Runs on CPU, on CUDA when present, and under `torchrun` as DDP.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import METRES, RollDataset, WHITE_INDEX
from engines.models.denoiser import RollDenoiser, checkpoint_payload, diffusion_loss
from engines.sampling.diffusion import NoiseScheduler
from engines.training.common import (MetricsLog, ddp_setup, ddp_teardown, load_checkpoint, pick_device,
                                     plot_losses, save_checkpoint)
from engines.training.vae_trainer import _data_meta

LR_FLOOR = 0.05          # the learning rate anneals to this share of its start
WARMUP_STEPS = 500


def _datasets(cfg: Config, limit: int = 0):
    cache = ensure_corpus_cache(cfg)
    train, val = cache.split_indices("train"), cache.split_indices("validation")
    if limit:
        train, val = train[:limit], val[:max(limit // 4, 8)]
    key_to_c = cfg.model.diffusion.key_to_c
    return (RollDataset.for_config(cache, train, cfg.data, key_to_c),
            RollDataset.for_config(cache, val, cfg.data, key_to_c))


def mode_statistics(dataset: RollDataset) -> dict:
    """Per mode (and WHITE = all): how often each metre occurs and the median tempo, so generation can draw
    a metre and pick a tempo the corpus uses for that mode. {"metre_counts": (9, len(METRES)), "tempo": (9,)}"""
    counts = np.zeros((WHITE_INDEX + 1, len(METRES)), np.int64)
    tempo = np.zeros(WHITE_INDEX + 1)
    modes, metres, tempos = dataset.modes.numpy(), dataset.metres.numpy(), np.exp(dataset.log_tempo.numpy())
    for m in range(WHITE_INDEX + 1):
        rows = modes == m if m < WHITE_INDEX else np.ones_like(modes, bool)
        counts[m] = np.bincount(metres[rows], minlength=len(METRES))
        tempo[m] = float(np.median(tempos[rows])) if rows.any() else 100.0
    return {"metre_counts": torch.as_tensor(counts), "tempo": torch.as_tensor(tempo, dtype=torch.float32)}


@torch.no_grad()
def validate(model: RollDenoiser, loader: DataLoader, scheduler: NoiseScheduler, device) -> float:
    model.eval()
    generator = torch.Generator().manual_seed(1234)  # the same steps and noise every epoch
    total, batches = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        total += diffusion_loss(model, scheduler, batch, 0.0, generator).item()
        batches += 1
    return total / max(batches, 1)


def train_diffusion(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False,
                    limit: int = 0, seed: int = 0, workers: int = 1) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs)."""
    rank, world = ddp_setup()
    main = rank == 0
    device = pick_device()
    out_dir = Path(out_dir)
    dc = cfg.model.diffusion
    torch.manual_seed(seed + rank)
    scheduler = NoiseScheduler(dc.num_steps, dc.noise_schedule, dc.prediction)
    train_set, val_set = _datasets(cfg, limit)
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=seed) if world > 1 else None
    train_loader = DataLoader(train_set, batch_size=dc.batch_size, shuffle=sampler is None, sampler=sampler,
                              num_workers=workers, generator=torch.Generator().manual_seed(seed),
                              drop_last=len(train_set) > dc.batch_size, persistent_workers=workers > 0)
    val_loader = DataLoader(val_set, batch_size=256, num_workers=workers)
    model = RollDenoiser(dc, cfg.data.roll_steps, cfg.data.num_pitches).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=dc.learning_rate, weight_decay=dc.weight_decay)
    log = MetricsLog(out_dir / "metrics.jsonl")
    start_epoch, best, elapsed_before, step = 0, {"val_loss": float("inf")}, 0.0, 0
    if resume and (out_dir / "last.pt").is_file():
        state = load_checkpoint(out_dir / "last.pt", map_location=device)
        model.load_state_dict(state["state_dict"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, elapsed_before, step = state["epoch"], state["best"], state["elapsed"], state["step"]
        if main:
            print(f"resuming after epoch {start_epoch} ({elapsed_before / 60:.1f} min trained)", flush=True)
    total_steps = max(dc.epochs * len(train_loader), 1)

    def learning_rate_factor(s: int) -> float:  # linear warm-up, then cosine to LR_FLOOR over all epochs
        if s < WARMUP_STEPS:
            return (s + 1) / WARMUP_STEPS
        return LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps))

    wrapped = DistributedDataParallel(model) if world > 1 else model
    extra = {"data": _data_meta(cfg), **mode_statistics(train_set)}
    started = time.time()
    budget = max_minutes * 60 if max_minutes else float("inf")
    for epoch in range(start_epoch, dc.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        model.train()
        total, batches = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=not main or None, leave=False)
        for batch in bar:
            batch = {k: v.to(device) for k, v in batch.items()}
            for group in optimizer.param_groups:
                group["lr"] = dc.learning_rate * learning_rate_factor(step)
            loss = diffusion_loss(wrapped, scheduler, batch, dc.condition_dropout)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():  # EMA warms up: early on it follows the weights closely
                decay = min(dc.ema_decay, (1 + step) / (10 + step))
                torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
            step += 1
            total += loss.item()
            batches += 1
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if elapsed_before + time.time() - started > budget:
                break
        elapsed = elapsed_before + time.time() - started
        if main:
            row = {"epoch": epoch + 1, "step": step, "minutes": round(elapsed / 60, 2),
                   "lr": optimizer.param_groups[0]["lr"], "train_loss": total / max(batches, 1),
                   "val_loss": validate(ema, val_loader, scheduler, device)}
            log.write(row)
            print(f"epoch {epoch + 1}: train {row['train_loss']:.4f} val (EMA) {row['val_loss']:.4f} "
                  f"({row['minutes']:.1f} min)", flush=True)
            if row["val_loss"] < best["val_loss"]:
                best = row
                save_checkpoint(checkpoint_payload(ema, row, extra), out_dir / "best.pt")
            save_checkpoint({"state_dict": model.state_dict(), "ema": ema.state_dict(),
                             "optimizer": optimizer.state_dict(), "epoch": epoch + 1, "best": best,
                             "elapsed": elapsed, "step": step}, out_dir / "last.pt")
            plot_losses(log.rows(), out_dir / "loss.png")
        if elapsed > budget:
            break
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    ddp_teardown()
    return best if main else {}
