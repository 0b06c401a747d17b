"""Pilot: the shipped diffusion denoiser fine-tuned on the analyzer's labels of its own samples.

Not a shipped path (docs/diffusion.md, "Fine-tuned on its own samples", gives what it measured and why nothing
of it is shipped); kept so that the figures there can be reproduced and a GPU lease can continue them (every
command runs on CUDA when there is one, else on the CPU).

    PYTHONPATH=. python scripts/pilot_diffusion_tuning.py sample --per-mode 320 --seed 70000 --out S.pt
    PYTHONPATH=. python scripts/pilot_diffusion_tuning.py distil --samples S.pt --minutes 30 --out DIR
    PYTHONPATH=. python scripts/pilot_diffusion_tuning.py prefer --samples S.pt --minutes 15 --anchor 1 --out DIR
    PYTHONPATH=. python scripts/pilot_diffusion_tuning.py measure DIR/tuned-15.pt ...

sample   raw samples of the shipped engine at its defaults (one candidate, no copy guard), each with its
         roll, asked mode, measured conditions, metre, and whether the analyzer hears the asked mode and the
         copy index finds no near copy of a training segment ("ok")
distil   each batch of 64: half real training segments, half "ok" samples (modes drawn evenly); AdamW 1e-4,
         EMA 0.995 in the checkpoints written
prefer   Diffusion-DPO (Wallace et al. 2023): pairs of one mode, one "ok" sample and one not, with shared step
         and noise; -log sigmoid(-beta [(err_ok - err_ok_ref) - (err_not - err_not_ref)]) against the frozen
         shipped model, plus anchor * beta / 2 * the plain loss on 32 real segments; AdamW 1e-5
measure  per checkpoint (a copy of guidance-classifier.pt is needed beside it): raw share heard as asked per
         mode, near copies, Fréchet distance in the judge's embedding (320 test segments) and in the
         analyzer's features (1,000), notes per segment; 40 results a mode from seed 5,000
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import metre_index
from engines.generation import GENERATORS, Request
from engines.generation.copies import CopyIndex
from engines.models.conditioning import CONDITION_ATTRIBUTES, unit_value
from engines.models.denoiser import diffusion_loss, model_from_checkpoint, roll_to_unit, row_errors
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.music.notes import notes_to_roll, ticks_per_step
from engines.sampling.diffusion import NoiseScheduler
from engines.training.common import pick_device, save_checkpoint
from engines.training.diffusion_trainer import _datasets

SHIPPED = "assets/checkpoints/diffusion.pt"
DEVICE = pick_device()   # CUDA when present (a lease), else the CPU
BATCH_KEYS = ("roll", "valid", "mode", "conditions", "metre")   # what diffusion_loss reads of a batch


def sample(args) -> None:
    cfg = load_config()
    data = cfg.data
    generator = GENERATORS["diffusion"].load(SHIPPED, device=DEVICE)
    analyzer, copies = ChromaticAnalyzer(), CopyIndex.build(ensure_corpus_cache(cfg))
    out = {key: [] for key in ("ok", "roll", "mode", "conditions", "metre", "valid")}
    for m, mode in enumerate(MODES):
        for b in range(args.per_mode // 64):
            request = Request(engine="diffusion", mode=mode, n=64, seed=args.seed + 1000 * m + b, candidates=1)
            for segment in generator.run(request):
                if not len(segment.notes):
                    continue
                analysis = analyzer.analyze(segment)
                measured = {**analysis.axes, "rebracketing": analysis.rebracketing,
                            "temporal_complexity": analysis.temporal_complexity}
                out["ok"].append(analysis.mode == mode and not copies.is_copy(segment))
                out["roll"].append(torch.from_numpy(notes_to_roll(segment.notes, segment.bar_length, data.segment_bars,
                                                                  data.steps_per_beat, data.pitch_low,
                                                                  data.pitch_high)))
                out["mode"].append(m)
                out["conditions"].append([unit_value(name, measured[name]) for name in CONDITION_ATTRIBUTES])
                out["metre"].append(metre_index(segment.ts_num, segment.ts_den))
                step = ticks_per_step(segment.bar_length, data.steps_per_beat)
                out["valid"].append(min(data.roll_steps, data.segment_bars * segment.bar_length // step))
        print(mode, "ok", round(float(np.mean([ok for ok, k in zip(out["ok"], out["mode"]) if k == m])), 3), flush=True)
    torch.save(out, args.out)


def own_samples(path) -> dict:
    """The sampled set as tensors: roll (N, 2, T, P), valid (N, T), mode, conditions (N, 7), metre, ok."""
    data = torch.load(path, weights_only=True)
    roll = torch.stack(data["roll"]).float()
    valid = torch.arange(roll.shape[2])[None, :] < torch.tensor(data["valid"])[:, None]    # (N, T)
    own = {"roll": roll, "valid": valid, "mode": torch.tensor(data["mode"]),
           "conditions": torch.tensor(data["conditions"], dtype=torch.float32), "metre": torch.tensor(data["metre"]),
           "ok": torch.tensor(data["ok"])}
    return {key: value.to(DEVICE) for key, value in own.items()}


def real_batch(train_set, rng, n: int) -> dict:
    items = [train_set[int(i)] for i in rng.integers(0, len(train_set), n)]
    return {key: torch.stack([torch.as_tensor(item[key]) for item in items]).to(DEVICE) for key in BATCH_KEYS}


def shipped() -> tuple[dict, torch.nn.Module, NoiseScheduler]:
    """The shipped checkpoint's payload, its denoiser (on DEVICE, in eval mode) and the scheduler it was trained
    with."""
    payload = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    model = model_from_checkpoint(payload).to(DEVICE)
    config = model.config
    return payload, model, NoiseScheduler(config.num_steps, config.noise_schedule, config.prediction)


def tune(args, step_fn) -> None:
    """The loop both tunings share: step_fn(model, rng) -> loss; a checkpoint every --save minutes."""
    torch.manual_seed(0)
    payload, model, _ = shipped()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    ema = copy.deepcopy(model).eval() if args.ema else None
    rng, started, next_save, step = np.random.default_rng(0), time.time(), args.save, 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    while True:
        loss = step_fn(model, rng)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for kept, trained in zip(ema.parameters(), model.parameters()):
                    kept.lerp_(trained, 1 - args.ema)
        step += 1
        minutes = (time.time() - started) / 60
        if minutes >= min(next_save, args.minutes):
            weights = (ema or model).state_dict()
            save_checkpoint(dict(payload, state_dict=weights), Path(args.out) / f"tuned-{next_save:g}.pt")
            print(f"tuned-{next_save:g}: step {step}, loss {loss.item():.5f}, {minutes:.1f} min", flush=True)
            next_save += args.save
            if minutes >= args.minutes:
                return


def distil(args) -> None:
    _, _, scheduler = shipped()
    train_set, _ = _datasets(load_config())
    own = own_samples(args.samples)
    kept = own["ok"].cpu().numpy()
    by_mode = [np.flatnonzero((own["mode"].cpu().numpy() == m) & kept) for m in range(len(MODES))]
    by_mode = [rows for rows in by_mode if len(rows)]

    def step(model, rng):
        picked = torch.tensor([rows[rng.integers(len(rows))] for rows in (by_mode[i] for i in
                                                                          rng.integers(0, len(by_mode), 32))],
                              device=DEVICE)
        real = real_batch(train_set, rng, 32)
        batch = {key: torch.cat([real[key], own[key][picked].to(real[key].dtype)]) for key in BATCH_KEYS}
        return diffusion_loss(model, scheduler, batch, model.config.condition_dropout)

    tune(args, step)


def prefer(args) -> None:
    _, reference, scheduler = shipped()
    reference.requires_grad_(False)
    config = reference.config
    train_set, _ = _datasets(load_config())
    own = own_samples(args.samples)
    modes, ok = own["mode"].cpu().numpy(), own["ok"].cpu().numpy()
    good = {m: np.flatnonzero((modes == m) & ok) for m in range(len(MODES))}
    bad = {m: np.flatnonzero((modes == m) & ~ok) for m in range(len(MODES))}
    usable = [m for m in good if len(good[m]) and len(bad[m])]

    def errors(net, x0, noise, t, rows):
        """(B,) the plain loss of each row (diffusion_loss's, per row)."""
        values = own["conditions"][rows][:, net.attribute_columns]
        prediction = net(scheduler.add_noise(x0, noise, t), t, own["mode"][rows], values, torch.ones_like(values),
                         own["metre"][rows])
        summed, cells = row_errors(scheduler, prediction, x0, noise, t, own["valid"][rows], config.min_snr_gamma)
        return summed / cells.clamp_min(1)

    def step(model, rng):
        pair_modes = rng.choice(usable, 32)
        rows = torch.tensor([rng.choice(good[m]) for m in pair_modes] + [rng.choice(bad[m]) for m in pair_modes],
                            device=DEVICE)
        x0 = roll_to_unit(own["roll"][rows])
        t = torch.randint(0, scheduler.num_steps, (32,), device=DEVICE).repeat(2)
        noise = torch.randn(32, *x0.shape[1:], device=DEVICE).repeat(2, 1, 1, 1)   # shared by each pair
        tuned = errors(model, x0, noise, t, rows)
        with torch.no_grad():
            frozen = errors(reference, x0, noise, t, rows)
        margin = (tuned[:32] - frozen[:32]) - (tuned[32:] - frozen[32:])
        anchor = diffusion_loss(model, scheduler, real_batch(train_set, rng, 32), config.condition_dropout)
        return -F.logsigmoid(-args.beta * margin).mean() + args.anchor * args.beta / 2 * anchor

    tune(args, step)


def measure(args) -> None:
    from engines.evaluation.diversity import copy_rates
    from engines.evaluation.frechet import feature_embedding, frechet_distance, standardise
    from engines.models.chromatic_judge import TrainedJudge

    cfg = load_config()
    cache = ensure_corpus_cache(cfg)
    index, analyzer = CopyIndex.build(cache), ChromaticAnalyzer()
    judge = TrainedJudge.load("assets/checkpoints/judge.pt")
    test, rng = cache.split_indices("test"), np.random.default_rng(0)
    _, _, real_embedding = judge.run([cache.segment(int(i)) for i in rng.choice(test, 320, replace=False)])
    real_features = feature_embedding([cache.segment(int(i)) for i in rng.choice(test, 1000, replace=False)])
    for path in args.checkpoints:
        generator = GENERATORS["diffusion"].load(path, device=DEVICE)
        segments, heard = [], {}
        for m, mode in enumerate(MODES):
            drawn = generator.run(Request(engine="diffusion", mode=mode, n=40, seed=5000 + 100 * m, candidates=1))
            heard[mode] = round(float(np.mean([len(s.notes) > 0 and analyzer.analyze(s).mode == mode
                                               for s in drawn])), 3)
            segments += drawn
        _, _, embedding = judge.run(segments)
        features = frechet_distance(*standardise(real_features, feature_embedding(segments)))
        print(path, {"heard": round(float(np.mean(list(heard.values()))), 3), "per_mode": heard,
                     "near_copies": copy_rates(segments, index).get("near_copy_rate"),
                     "frechet_judge": round(frechet_distance(embedding, real_embedding), 1),
                     "frechet_features": round(features, 2),
                     "notes": round(float(np.mean([len(s.notes) for s in segments])), 1)}, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("sample")
    p.add_argument("--per-mode", type=int, default=320)
    p.add_argument("--seed", type=int, default=70_000)
    p.add_argument("--out", required=True)
    for name, lr, ema in (("distil", 1e-4, 0.995), ("prefer", 1e-5, 0.0)):
        p = commands.add_parser(name)
        p.add_argument("--samples", required=True)
        p.add_argument("--minutes", type=float, default=15)
        p.add_argument("--save", type=float, default=5, help="minutes between checkpoints")
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--ema", type=float, default=ema, help="0: the trained weights are saved")
        p.add_argument("--beta", type=float, default=5000.0)
        p.add_argument("--anchor", type=float, default=1.0)
        p.add_argument("--out", required=True)
    p = commands.add_parser("measure")
    p.add_argument("checkpoints", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(2)
    {"sample": sample, "distil": distil, "prefer": prefer, "measure": measure}[args.command](args)


if __name__ == "__main__":
    main()
