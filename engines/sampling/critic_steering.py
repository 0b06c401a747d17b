"""A drawn VAE latent moved one step toward what the request asks, by a critic that reads its decoded roll.

The VAE's decoder follows its condition only partly: a latent drawn from a mode's prior may decode to music
the analyzer hears in a neighbouring mode, and the asked axes move what it writes by less than asked. The
critic, the learned chromatic judge (engines/models/chromatic_judge.py: the mode and the attributes of a clean
roll, as the analyzer reads them), tells which way z should move:

    z (B, D) -> decoder (asked mode and attributes) -> the roll sampling writes (straight through,
    training/vae_critic.py) -> judge -> loss = cross-entropy of the asked mode
                                             + sum over asked attributes of (read - asked)^2 / (2 sigma^2)
    z' = z - step_size * sign(dloss/dz)

It is the "latent constraints" search of Engel, Hoffman & Roberts (2018), cut to one signed step (the first
step of Adam): each step costs a decoder and judge pass forward and back (about 10 ms for one segment on 2 CPU
threads), and the VAE's latency bar is 20 ms a segment. On 1,600 prior samples (tuning seeds, docs/vae.md)
one step of 0.15 took the share heard as asked from 0.76 to 0.85 (0.82 with the diffusion's guidance
classifier as the critic); a larger step, or a normalised or prior-whitened one, did less. The mode's interior
axes are not aimed at (that lowered the share): only what the request itself asks.

The judge steers (and, in checked generation, selects); the analyzer measures.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from engines.models.chromatic_judge import JUDGE_ATTRIBUTES
from engines.models.guidance_classifier import ATTRIBUTE_SIGMA
from engines.music.analyzer import MODES
from engines.training.vae_critic import straight_through_roll

STEP_SIZE = 0.15   # the signed step the VAE takes by default (generation.sampling.vae.steer)


def judge_reader(judge, names) -> Callable:
    """read(roll (B, 2, T, P) in -1..1, metre (B,), log tempo (B,)) -> (mode logits (B, 8), the attributes
    `names` (B, k) in unit scale) by the judge's network (a ChromaticJudge)."""
    columns = [JUDGE_ATTRIBUTES.index(name) for name in names]
    valence = torch.tensor([name == "valence" for name in names])             # -1..1 in the analyzer's scale

    def read(roll, metre, log_tempo):
        mode_logits, attributes, _ = judge((roll + 1) / 2, metre, log_tempo)    # the judge reads 0/1 rolls
        attributes = attributes[:, columns]
        return mode_logits, torch.where(valence.to(attributes.device), (attributes + 1) / 2, attributes)

    return read


def steering_loss(decode, read, z: torch.Tensor, modes: torch.Tensor, targets: torch.Tensor,
                  asked: torch.Tensor, onset_threshold: float) -> torch.Tensor:
    """(B,) what the step lowers. `decode(z)`: the decoder's outputs for z under the request's condition;
    `read`: judge_reader's; `modes` (B,) asked mode indices (WHITE rows aim at no mode); `targets` (B, k) the
    asked attributes in unit scale, `asked` (B, k) 1 where the request itself asks one (the mode's interior,
    which fills the decoder's other inputs, is not aimed at)."""
    out = decode(z)
    roll = straight_through_roll(out, onset_threshold)
    mode_logits, attributes = read(roll, out["metre"].argmax(dim=1), out["log_tempo"])
    aims_mode = (modes < len(MODES)).float()
    loss = F.cross_entropy(mode_logits, modes.clamp(max=len(MODES) - 1), reduction="none") * aims_mode
    return loss + (asked * (attributes - targets) ** 2).sum(dim=1) / (2 * ATTRIBUTE_SIGMA ** 2)


def steered(decode, read, z: torch.Tensor, modes: torch.Tensor, targets: torch.Tensor, asked: torch.Tensor,
            onset_threshold: float, step_size: float = STEP_SIZE) -> torch.Tensor:
    """z (B, D) after one signed step down steering_loss; rows with nothing to aim at (WHITE, nothing asked)
    stay where they are."""
    aimed = (modes < len(MODES)) | asked.bool().any(dim=1)                 # (B,)
    if step_size <= 0 or not bool(aimed.any()):
        return z
    with torch.enable_grad():
        moving = z.detach().requires_grad_(True)
        loss = steering_loss(decode, read, moving, modes, targets, asked, onset_threshold)
        (gradient,) = torch.autograd.grad(loss.sum(), moving)
    return (z - step_size * gradient.sign() * aimed[:, None].float()).detach()
