"""Latent-space operations: pure functions over tensors, shared by the CLI and the studio.

Shapes: a latent is (D,) or a batch (B, D).
"""
from __future__ import annotations

import torch


def lerp(z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Straight line; t (S,) -> (S, D)."""
    return z1[None] + (z2 - z1)[None] * t[:, None]


def slerp(z1: torch.Tensor, z2: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Great-circle path (Shoemake): keeps the norm typical of Gaussian samples along the way; t (S,) -> (S, D).

    Falls back to lerp when the two latents are (anti)parallel, where the great circle is undefined.
    """
    a, b = z1 / z1.norm().clamp_min(1e-8), z2 / z2.norm().clamp_min(1e-8)
    cosine = (a * b).sum()
    if cosine.abs() > 1 - 1e-6:
        return lerp(z1, z2, t)
    omega = torch.arccos(cosine)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so)[:, None] * z1[None] + (torch.sin(t * omega) / so)[:, None] * z2[None]


def interpolate(z1: torch.Tensor, z2: torch.Tensor, steps: int, method: str = "slerp") -> torch.Tensor:
    """`steps` latents from z1 to z2 inclusive, (steps, D)."""
    from engines.errors import StudioError

    if steps < 2:
        raise StudioError(f"an interpolation needs at least 2 steps, got {steps}")
    if method not in ("slerp", "lerp"):
        raise StudioError(f"unknown interpolation '{method}'; choose slerp or lerp")
    t = torch.linspace(0, 1, steps, dtype=z1.dtype)
    return slerp(z1, z2, t) if method == "slerp" else lerp(z1, z2, t)


def attribute_vector(latents: torch.Tensor, values: torch.Tensor, quantile: float = 0.25) -> torch.Tensor:
    """Direction of an attribute: mean latent of the top `quantile` of `values` minus that of the bottom.

    latents (N, D), values (N,) -> (D,). Moving z by +1 of this vector goes, on average, from a typical
    low-attribute latent to a typical high one.
    """
    low = values <= torch.quantile(values, quantile)
    high = values >= torch.quantile(values, 1 - quantile)
    return latents[high].mean(0) - latents[low].mean(0)


def shift(z: torch.Tensor, vector: torch.Tensor, amount: float) -> torch.Tensor:
    """z + amount * vector, for one latent (D,) or a batch (B, D)."""
    return z + amount * vector


def traverse(z: torch.Tensor, dimension: int, values: torch.Tensor) -> torch.Tensor:
    """Copies of z (D,) with one dimension set to each of `values` (S,) -> (S, D)."""
    out = z[None].repeat(len(values), 1)
    out[:, dimension] = values
    return out
