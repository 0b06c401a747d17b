"""The attribute condition the engines share: named attributes in [0, 1], each given or not.

    CONDITION_ATTRIBUTES   rebracketing, temporal complexity and the analyzer's five axes (energy, valence,
                           tension, intimacy, motion), all in unit scale (valence -1..1 becomes 0..1)
    attribute_inputs       (B, k) values and (B, k) given flags -> what a network reads of the condition;
                           "each" gives every attribute its own flag (any subset can be asked for), "shared"
                           is the first checkpoints' one flag for all (both or none)
    attribute_dropout      the training-time mask: the whole condition dropped with one probability, each
                           attribute on its own with another, so the model learns every subset

A mode request without attributes is turned into a target deep inside the mode's region, so generation aims
at the mode's interior rather than anywhere in it, borders included. Two forms, both measured on the training
split and stored with a checkpoint:

    mode_targets       one point per mode: the median attributes of its clearest segments
    mode_target_pool   per mode, the attributes of a sample of its segments (the clearest, or with
                       clear_quantile 1 all of them: the diffusion finalize step's choice); each result draws
                       its own (drawn_request_attributes), so a batch keeps the variety of the mode's music
                       instead of bunching around one point
"""
from __future__ import annotations

import numpy as np
import torch

from engines.music.analyzer import ANALYZER_ATTRIBUTES, AXES, MODES

FIRST_ATTRIBUTES = ("rebracketing", "temporal_complexity")   # what the first checkpoints condition on
CONDITION_ATTRIBUTES = ANALYZER_ATTRIBUTES   # the first two are FIRST_ATTRIBUTES


def unit_value(name: str, value: float) -> float:
    """An attribute as the analyzer reports it -> unit scale (valence -1..1 -> 0..1; the others as they are)."""
    return (float(value) + 1.0) / 2.0 if name == "valence" else float(value)


def reported_value(name: str, value: float) -> float:
    """unit_value's inverse: unit scale -> the analyzer's scale."""
    return 2.0 * float(value) - 1.0 if name == "valence" else float(value)


def cache_attributes(rows: np.ndarray) -> np.ndarray:
    """Segment-cache rows -> (N, len(CONDITION_ATTRIBUTES)) float32 in unit scale."""
    columns = [rows["rebracketing"], rows["temporal_complexity"]]
    columns += [(rows["axes"][:, i] + 1.0) / 2.0 if a == "valence" else rows["axes"][:, i] for i, a in enumerate(AXES)]
    return np.stack(columns, axis=1).astype(np.float32)


def attribute_tensors(attributes: dict | None, names: tuple[str, ...] | list[str], batch: int,
                      device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """{name: value in the analyzer's scale} (any subset of `names`, or None) -> values (B, k) in unit scale
    and given flags (B, k); unknown names are ignored."""
    values, given = torch.zeros(batch, len(names), device=device), torch.zeros(batch, len(names), device=device)
    for i, name in enumerate(names):
        if attributes and attributes.get(name) is not None:
            values[:, i] = unit_value(name, attributes[name])
            given[:, i] = 1.0
    return values, given


def attribute_width(k: int, mask: str) -> int:
    """How wide attribute_inputs is for k attributes."""
    return 2 * k if mask == "each" else k + 1


def attribute_inputs(values: torch.Tensor | None, given: torch.Tensor | None, mask: str, k: int,
                     batch: int | None = None, device=None) -> torch.Tensor:
    """(B, k) values (None: nothing given) and (B, k) given flags (None: all given) -> the network's input:
    "each" (B, 2k) = values * given and given; "shared" (B, k + 1) = values and one flag."""
    if values is None:
        values = torch.zeros(batch, k, device=device)
        given = torch.zeros(batch, k, device=device)
    elif given is None:
        given = torch.ones_like(values)
    if mask == "each":
        return torch.cat([values * given, given], dim=1)
    flag = given.amax(dim=1, keepdim=True)          # shared: given when any is (callers give all or none)
    return torch.cat([values * flag, flag], dim=1)


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -scale backward (Ganin & Lempitsky 2015): what reads z through
    it learns to predict, while z learns to leave out what it predicts."""

    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.scale * grad, None


def attribute_dropout(batch: int, k: int, drop_all: float, drop_each: float, device) -> torch.Tensor:
    """(B, k) given flags for a training batch: a row loses every attribute with probability drop_all, and
    each attribute on its own with probability drop_each."""
    keep_row = (torch.rand(batch, 1, device=device) >= drop_all).float()
    keep_each = (torch.rand(batch, k, device=device) >= drop_each).float()
    return keep_row * keep_each


def _clear_rows(rows: np.ndarray, index: int, clear_quantile: float) -> np.ndarray:
    """The rows of mode `index` whose top score is in the upper `clear_quantile` of that mode's (a mask)."""
    top = rows["scores"].max(axis=1)
    mine = rows["mode"] == index
    if not mine.any():
        return mine
    return mine & (top >= np.quantile(top[mine], 1 - clear_quantile))


def mode_targets(rows: np.ndarray, clear_quantile: float = 0.5) -> dict[str, dict[str, float]]:
    """Per mode, the median attributes (unit scale) of its training segments whose top score is clearest (the
    upper `clear_quantile` of that mode's top scores): a target inside the mode's region, away from borders.
    {mode: {attribute: value}}."""
    values = cache_attributes(rows)
    targets = {}
    for index, mode in enumerate(MODES):
        clear = _clear_rows(rows, index, clear_quantile)
        if not clear.any():
            continue
        medians = np.median(values[clear], axis=0)
        targets[mode] = {name: round(float(v), 4) for name, v in zip(CONDITION_ATTRIBUTES, medians)}
    return targets


def mode_target_pool(rows: np.ndarray, clear_quantile: float = 0.5, size: int = 64,
                     seed: int = 0) -> dict[str, list[list[float]]]:
    """Per mode, the attributes (unit scale, CONDITION_ATTRIBUTES order) of up to `size` of its clearest training
    segments (the upper `clear_quantile` of its top scores; 1: any of them), drawn at random:
    {mode: [[value, ...], ...]}."""
    values = cache_attributes(rows)
    rng = np.random.default_rng(seed)
    pool = {}
    for index, mode in enumerate(MODES):
        clear = np.nonzero(_clear_rows(rows, index, clear_quantile))[0]
        if len(clear):
            chosen = np.sort(rng.choice(clear, size=min(size, len(clear)), replace=False))
            pool[mode] = [[round(float(v), 4) for v in values[i]] for i in chosen]
    return pool


def drawn_request_attributes(mode: str, asked: dict | None, pool: dict | None, targets: dict | None,
                             names: tuple[str, ...] | list[str], n: int, seed: int) -> list[dict]:
    """request_attributes for each of `n` results, each aiming at the attributes of one segment drawn from the
    mode's pool (by `seed`, so a request repeats itself); without a pool for the mode, every result aims at
    the mode's one target from `targets`, as request_attributes does."""
    rows = (pool or {}).get(mode)
    if not rows:
        return [request_attributes(mode, asked, targets, names)] * n
    picks = np.random.default_rng([int(seed), 19]).integers(len(rows), size=n)
    return [request_attributes(mode, asked, {mode: dict(zip(CONDITION_ATTRIBUTES, rows[i]))}, names) for i in picks]


def request_attributes(mode: str, asked: dict | None, targets: dict | None,
                       names: tuple[str, ...] | list[str]) -> dict:
    """What a model is conditioned on for a request, in the analyzer's scale: the attributes asked for, and
    for a mode, its interior target on every axis not asked for (the axes define the mode; rhythm is left
    free unless asked). WHITE (no mode) adds nothing."""
    chosen = {k: v for k, v in (asked or {}).items() if v is not None and k in names}
    for name, value in ((targets or {}).get(mode) or {}).items():
        if name in AXES and name in names and name not in chosen:
            chosen[name] = reported_value(name, value)
    return chosen


METRE_NEIGHBOURS = 16   # training segments nearest the asked attributes whose metres a request draws from


def attribute_metre_pool(rows: np.ndarray, metres, neighbours: int = METRE_NEIGHBOURS) -> dict:
    """{"attributes" (N, k) float16 unit scale, "metres" (N,) uint8 METRES indices, "names", "neighbours"} of
    segment-cache rows and their metre indices: what neighbour_metre_counts reads (an engine's checkpoint)."""
    return {"attributes": torch.as_tensor(cache_attributes(rows)).half().contiguous(),
            "metres": torch.as_tensor(np.asarray(metres)).to(torch.uint8), "names": list(CONDITION_ATTRIBUTES),
            "neighbours": int(neighbours)}


def asked_in_pool(pool: dict, attributes: dict | None) -> dict:
    """{name: value} of the asked attributes a neighbour pool (attribute_metre_pool, the VAE's attribute prior)
    holds: set ones only."""
    return {name: float(value) for name, value in (attributes or {}).items()
            if value is not None and name in (pool or {}).get("names", ())}


def nearest_rows(pool: dict, attributes: dict | None, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Rows (k,) of a neighbour pool ({"attributes" (N, m) unit scale, "names" (m), "neighbours" k, ...}) whose
    attributes lie nearest the asked ones (L1 in unit scale over those asked); None when the request asks none
    the pool holds. With a `generator`, ties (one attribute asked, many rows at its value) break at random."""
    asked = asked_in_pool(pool, attributes)
    if not asked:
        return None
    columns = [pool["names"].index(name) for name in asked]
    target = torch.tensor([unit_value(name, value) for name, value in asked.items()])
    distance = (pool["attributes"][:, columns].float() - target).abs().sum(dim=1)   # (N,)
    if generator is not None:
        distance = distance + 1e-6 * torch.rand(distance.shape, generator=generator)
    return distance.topk(min(int(pool["neighbours"]), len(distance)), largest=False).indices


def neighbour_metre_counts(pool: dict, attributes: dict | None, metres: int) -> torch.Tensor | None:
    """(metres,) how many of the pool's `neighbours` segments nearest the asked attributes (nearest_rows) are in
    each metre; None when the pool is empty or the request asks none of its attributes. An engine draws the
    metre of a request that asks attributes and no mode from these: the metre, at a tempo the corpus uses for
    it, sets the notes per second that are much of what is heard as energy and motion."""
    nearest = nearest_rows(pool, attributes)
    if nearest is None:
        return None
    return torch.bincount(pool["metres"][nearest].long(), minlength=metres).float()
