"""`python -m engines train --engine vae`: train the conditional β-VAE on the segment cache.

Each epoch: a pass over the training split (β from its schedule), validation (losses and note F1 of the
posterior mean), one JSON line in metrics.jsonl, `last.pt` (everything needed to resume) and, when the
validation improves (`select_by`: note F1 by default, or loss), `best.pt` (the model checkpoint). Stops
after `epochs` or `max_minutes`, then stores the latent vectors, map and decoding threshold in best.pt
(engines/training/vae_finalize.py).
Runs on CPU, on CUDA when present, and under `torchrun` as DDP (gloo on CPU).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import RollDataset
from engines.errors import StudioError
from engines.evaluation.reconstruction import note_f1
from engines.models.conditioning import mode_targets
from engines.models.vae import ChromaticVAE, beta_at, checkpoint_payload, vae_loss
from engines.training.common import (MetricsLog, ddp_setup, ddp_teardown, load_checkpoint, pick_device,
                                     plot_losses, save_checkpoint)
from engines.training.ema_loop import learning_rate_factor   # the cosine to a floor every engine anneals on
from engines.training.vae_critic import critic_loss, load_critic

LOSS_PARTS = ("loss", "onset", "sustain", "metre", "tempo", "kl")


def _datasets(cfg: Config, limit: int = 0):
    cache = ensure_corpus_cache(cfg)
    train, val = cache.split_indices("train"), cache.split_indices("validation")
    if limit:
        train, val = train[:limit], val[:max(limit // 4, 8)]
    return (RollDataset.for_config(cache, train, cfg.data, cfg.model.vae.key_to_c),
            RollDataset.for_config(cache, val, cfg.data, cfg.model.vae.key_to_c))


def logged_parts(model: ChromaticVAE, critic) -> tuple[str, ...]:
    """The loss parts a run logs: LOSS_PARTS, the adversary's when it has one, the critic's when it has one."""
    return LOSS_PARTS + (("adversary",) if model.adversary is not None else ()) + \
        (("critic",) if critic is not None else ())


@torch.no_grad()
def validate(model: ChromaticVAE, loader: DataLoader, cfg: Config, beta: float, device, critic=None) -> dict:
    model.eval()
    parts_logged = logged_parts(model, critic)
    sums = {k: 0.0 for k in parts_logged}
    batches, predicted, target, valid = 0, [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(batch)
        parts = vae_loss(out, batch, cfg.model.vae, beta)
        if critic is not None:
            parts["critic"] = critic_loss(model, critic, batch, out["mean"], torch.Generator().manual_seed(batches))
        for k in parts_logged:
            sums[k] += parts[k].item()
        batches += 1
        predicted.append(out["onset"] > 0)
        target.append(batch["roll"][:, 0] > 0.5)
        valid.append(batch["valid"])
    scores = note_f1(torch.cat(predicted), torch.cat(target), torch.cat(valid))
    result = {f"val_{k}": v / max(batches, 1) for k, v in sums.items()}
    result.update(val_f1=scores["f1"], val_precision=scores["precision"], val_recall=scores["recall"])
    return result


def train_vae(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False,
              limit: int = 0, seed: int = 0, workers: int = 1, finalize: bool = True) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs);
    `finalize` False leaves vae_finalize to a later `train --finalize-only`."""
    rank, world = ddp_setup()
    main = rank == 0
    device = pick_device()
    out_dir = Path(out_dir)
    vc = cfg.model.vae
    torch.manual_seed(seed + rank)
    train_set, val_set = _datasets(cfg, limit)
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=seed) if world > 1 else None
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=vc.batch_size, shuffle=sampler is None, sampler=sampler,
                              num_workers=workers, generator=generator, drop_last=len(train_set) > vc.batch_size,
                              persistent_workers=workers > 0)
    val_loader = DataLoader(val_set, batch_size=256, num_workers=workers)
    model = ChromaticVAE(vc, cfg.data.roll_steps, cfg.data.num_pitches).to(device)
    if vc.init_checkpoint and not resume:
        start_from(model, vc.init_checkpoint, device)
    critic = load_critic(vc.critic, model, device) if vc.critic and vc.critic_weight > 0 else None
    if critic is not None and world > 1:   # its decode runs outside the DDP wrapper's forward
        raise StudioError("model.vae.critic trains in one process; run `train --engine vae` without torchrun")
    pairing = torch.Generator().manual_seed(seed + 1)   # which segment's condition each z is decoded with
    parts_logged = logged_parts(model, critic)
    # what a mode request aims at when no attribute is given: inside the mode's region (conditioning.py)
    extra = {"data": _data_meta(cfg),
             "mode_targets": mode_targets(train_set.cache.segments[np.sort(train_set.indices)])}
    optimizer = torch.optim.AdamW(model.parameters(), lr=vc.learning_rate, weight_decay=vc.weight_decay)
    log = MetricsLog(out_dir / "metrics.jsonl")
    start_epoch, best, elapsed_before = 0, {"val_loss": float("inf")}, 0.0
    if resume and (out_dir / "last.pt").is_file():
        state = load_checkpoint(out_dir / "last.pt", map_location=device)
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, elapsed_before = state["epoch"], state["best"], state["elapsed"]
        if main:
            print(f"resuming after epoch {start_epoch} ({elapsed_before / 60:.1f} min trained)", flush=True)
    # Closed-form cosine over the configured epochs, so a resumed run with more epochs anneals over the new
    # total instead of replaying an old schedule; or over the time budget, when that will end the run first
    # (a GPU run sets many epochs and minutes, and still anneals).
    total = max(vc.epochs, 1)
    wrapped = DistributedDataParallel(model) if world > 1 else model
    started = time.time()
    budget = max_minutes * 60 if max_minutes else float("inf")

    def set_learning_rate(epoch: int) -> None:   # per epoch, with no warm-up
        spent = (elapsed_before + time.time() - started) / budget
        for group in optimizer.param_groups:
            group["lr"] = vc.learning_rate * learning_rate_factor(epoch, total, warmup=0, progress=spent)
    steps_per_epoch = max(len(train_loader), 1)
    for epoch in range(start_epoch, vc.epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        set_learning_rate(epoch)
        model.train()
        sums, batches = {k: 0.0 for k in parts_logged}, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}", disable=not main or None, leave=False)
        for i, batch in enumerate(bar):
            batch = {k: v.to(device) for k, v in batch.items()}
            beta = beta_at(vc, epoch + i / steps_per_epoch)
            out = wrapped(batch, vc.condition_dropout)
            parts = vae_loss(out, batch, vc, beta)
            if critic is not None:
                parts["critic"] = critic_loss(model, critic, batch, out["mean"], pairing)
                parts["loss"] = parts["loss"] + vc.critic_weight * parts["critic"]
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            for k in parts_logged:
                sums[k] += parts[k].item()
            batches += 1
            bar.set_postfix(loss=f"{parts['loss'].item():.3f}", beta=f"{beta:.3f}")
            if elapsed_before + time.time() - started > budget:
                break
        elapsed = elapsed_before + time.time() - started
        if main:
            row = {"epoch": epoch + 1, "minutes": round(elapsed / 60, 2), "beta": beta,
                   "lr": optimizer.param_groups[0]["lr"],
                   **{f"train_{k}": v / max(batches, 1) for k, v in sums.items()}}
            row.update(validate(model, val_loader, cfg, vc.beta, device, critic))
            log.write(row)
            print(f"epoch {epoch + 1}: train {row['train_loss']:.3f} val {row['val_loss']:.3f} "
                  f"F1 {row['val_f1']:.3f} KL {row['val_kl']:.1f} ({row['minutes']:.1f} min)", flush=True)
            if _better(row, best, vc.select_by):
                best = row
                save_checkpoint(checkpoint_payload(model, row, extra), out_dir / "best.pt")
            save_checkpoint({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "epoch": epoch + 1, "best": best, "elapsed": elapsed}, out_dir / "last.pt")
            plot_losses(log.rows(), out_dir / "loss.png")
        if elapsed > budget:
            break
    if finalize and main and (out_dir / "best.pt").is_file():
        from engines.training.vae_finalize import finalize_vae

        best["finalize"] = finalize_vae(str(out_dir / "best.pt"), cfg, limit=limit)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank leaves before rank 0 has written and finalized best.pt
    ddp_teardown()
    return best if main else {}


def start_from(model: ChromaticVAE, checkpoint: str, device) -> None:
    """Load an earlier run's weights into `model` (init_checkpoint): every tensor but the adversary's must be there
    with its shape, so a fine-tune may add an adversary to a run trained without one, and nothing else."""
    path = Path(checkpoint)
    if not path.is_file():
        raise StudioError(f"model.vae.init_checkpoint: no checkpoint at '{checkpoint}'")
    theirs, own = load_checkpoint(path, map_location=device, engine="vae")["state_dict"], model.state_dict()
    wrong = [f"size mismatch for {k}: {tuple(theirs[k].shape)} there, {tuple(own[k].shape)} here"
             for k in own if k in theirs and theirs[k].shape != own[k].shape]
    wrong += [f"no {k} in one of them" for k in sorted(own.keys() ^ theirs.keys()) if not k.startswith("adversary.")]
    if wrong:
        raise StudioError(f"model.vae.init_checkpoint: '{checkpoint}' does not fit this model's shape ({wrong[0]}); "
                          "give the same latent_dim, hidden_dim and attributes")
    model.load_state_dict(theirs, strict=False)   # every tensor checked above but an adversary's


def _better(row: dict, best: dict, select_by: str) -> bool:
    """Whether this epoch's validation beats the best so far: lower val_loss, higher val_f1, or any ("last").

    The loss (at full β) favours the ends of β cycles, where the KL is smallest; note F1 favours the epoch
    that reconstructs best, which is what the reconstruction bar measures."""
    if select_by == "last":
        return True
    if select_by == "val_f1":
        return row["val_f1"] > best.get("val_f1", -1.0)
    return row["val_loss"] < best["val_loss"]


def _data_meta(cfg: Config) -> dict:
    d = cfg.data
    return {"segment_bars": d.segment_bars, "steps_per_beat": d.steps_per_beat, "pitch_low": d.pitch_low,
            "pitch_high": d.pitch_high}
