"""`python -m engines ship`: a run's best checkpoint -> assets/checkpoints/<engine>.pt with a model card beside it.

The card records what reproduces the checkpoint (the exact training command), the data, the training time
and the final metrics, and the evaluation JSON when one is given.
"""
from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import torch

from engines.errors import StudioError
from engines.training.common import MetricsLog, load_checkpoint

SIZE_LIMITS_MB = {"vae": 30}


def ship(engine: str, run_dir: str | Path, checkpoints_dir: str | Path, evaluation: str | None = None) -> dict:
    run_dir, checkpoints_dir = Path(run_dir), Path(checkpoints_dir)
    best = run_dir / "best.pt"
    payload = load_checkpoint(best)  # also proves it loads with weights_only=True
    if payload.get("engine") != engine:
        raise StudioError(f"'{best}' is a {payload.get('engine')} checkpoint, not {engine}")
    size_mb = best.stat().st_size / 1048576
    if size_mb > SIZE_LIMITS_MB[engine]:
        raise StudioError(f"'{best}' is {size_mb:.1f} MB; shipped {engine} checkpoints stay under "
                          f"{SIZE_LIMITS_MB[engine]} MB")
    command = json.loads((run_dir / "command.json").read_text()) if (run_dir / "command.json").is_file() else {}
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    report = json.loads(Path(evaluation).read_text()) if evaluation else None
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoints_dir / f"{engine}.pt"
    shutil.copyfile(best, target)
    card = checkpoints_dir / f"{engine}.md"
    card.write_text(render_card(engine, payload, command, rows, report, size_mb))
    return {"checkpoint": str(target), "card": str(card), "size_mb": round(size_mb, 2)}


def render_card(engine: str, payload: dict, command: dict, rows: list[dict], report: dict | None,
                size_mb: float) -> str:
    argv = command.get("argv") or []
    cmd = "python -m engines " + " ".join(argv[1:]) if argv else "(not recorded)"
    last = rows[-1] if rows else {}
    params = sum(v.numel() for v in payload["state_dict"].values())
    lines = [
        f"# Model card: {engine}",
        "",
        f"- **Reproduce:** `{cmd}`, then `python -m engines ship --engine {engine} --run <out>`",
        "- **Data:** the segment cache of the default music21 corpus (training split; validation each epoch)",
        f"- **Size:** {size_mb:.1f} MB, {params / 1e6:.2f} M parameters; loads with `torch.load(weights_only=True)`",
        f"- **Trained:** {last.get('epoch', '?')} epochs, {last.get('minutes', '?')} min on "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'} ({platform.processor() or platform.machine()})",
        f"- **Config:** `{json.dumps(payload.get('config', {}))}`",
        "",
        "## Training curve (validation)",
        "",
        "| epoch | minutes | train loss | val loss | val note F1 | val KL |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['minutes']} | {r['train_loss']:.3f} | {r['val_loss']:.3f} | "
                     f"{r['val_f1']:.3f} | {r['val_kl']:.1f} |")
    if report:
        lines += ["", "## Evaluation (`python -m engines evaluate`)", "", "```json",
                  json.dumps(report, indent=1), "```"]
    return "\n".join(lines) + "\n"
