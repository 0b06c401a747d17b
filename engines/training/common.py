"""What every engine's training shares: device choice, DDP set-up, checkpoints, JSON-lines metrics, loss plot.

Checkpoints are plain dicts of tensors and primitives, written atomically with torch.save and read back
with torch.load(weights_only=True), so loading never runs pickled code.
"""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch
import torch.distributed as dist

from engines.errors import StudioError
from engines.folders import write_atomically


def pick_device() -> torch.device:
    """CUDA when present, else CPU (everything also runs and is tested on CPU). On CUDA, fp32 matrix products and
    convolutions run on TF32 tensor cores (several times faster from Ampere on; a 10-bit mantissa inside the
    product, fp32 everywhere else)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda")


def device_name() -> str:
    """The machine a run trains on, as model cards name it: "CUDA (NVIDIA H200)", "CPU (x86_64)"."""
    if torch.cuda.is_available():
        return f"CUDA ({torch.cuda.get_device_name(0)})"
    return f"CPU ({platform.processor() or platform.machine()})"


def ddp_setup() -> tuple[int, int]:
    """(rank, world size). Under torchrun (WORLD_SIZE > 1) joins the process group: nccl on GPU, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank() if dist.is_initialized() else 0), world


def ddp_teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def check_finalize_steps(steps: tuple[str, ...], known: tuple[str, ...], engine: str) -> None:
    """A finalize's `steps` (`train --finalize-only --finalize-step NAME`) are some of its `known` ones."""
    unknown = [step for step in steps if step not in known]
    if unknown or not steps:
        raise StudioError(f"unknown finalize step '{', '.join(unknown)}'; the {engine}'s are {', '.join(known)}")


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """`payload` saved with every tensor on the CPU: a checkpoint trained on a GPU loads with a plain
    `torch.load(weights_only=True)` on a machine without one (resume maps it back to the training device)."""
    return write_atomically(path, lambda tmp: torch.save(on_cpu(payload), tmp))


def on_cpu(value):
    """`value` with every tensor inside dicts, lists and tuples moved to the CPU (the rest as it is)."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: on_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(on_cpu(v) for v in value)
    return value


ENGINE_NAMES = {"vae": "a VAE", "diffusion": "a diffusion", "autoregressive": "an autoregressive", "codec": "a codec",
                "guidance-classifier": "a guidance-classifier", "judge": "a chromatic judge"}


def load_checkpoint(path: str | Path, map_location="cpu", engine: str | None = None) -> dict:
    """The checkpoint dict at `path`; with `engine`, StudioError unless it is that engine's checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise StudioError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files
        raise StudioError(f"checkpoint '{path.name}' could not be read ({type(exc).__name__}: {exc})") from None
    if engine is not None and (not isinstance(payload, dict) or payload.get("engine") != engine):
        raise StudioError(f"'{path.name}' is not {ENGINE_NAMES.get(engine, engine)} checkpoint")
    return payload


class MetricsLog:
    """Appends one JSON object per line; `rows()` reads them back."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, row: dict) -> None:
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_losses(rows: list[dict], path: str | Path, keys=("train_loss", "val_loss")) -> Path | None:
    """Loss curves of the epoch rows as a PNG (matplotlib, no display)."""
    epochs = [r for r in rows if "epoch" in r]
    if not epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in keys:
        points = [(r["epoch"], r[key]) for r in epochs if key in r]
        if points:
            ax.plot(*zip(*points), marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
