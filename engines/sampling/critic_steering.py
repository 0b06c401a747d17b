"""A drawn VAE latent moved one step toward what the request asks, by a critic that reads its decoded roll.

The VAE's decoder follows its condition only partly: a latent drawn from a mode's prior may decode to music
the analyzer hears in a neighbouring mode (GREEN's samples lean to YELLOW and BLUE), and the asked axes move
what it writes by less than asked. The critic (the guidance classifier, engines/models/guidance_classifier.py,
at t = 0: the analyzer's mode and attributes read from a clean roll) tells which way z should move:

    z (B, D) -> decoder (asked mode and attributes) -> the roll sampling writes (straight through,
    training/vae_critic.py) -> critic -> loss = cross-entropy of the asked mode
                                               + sum over asked attributes of (read - asked)^2 / (2 sigma^2)
    z' = z - step_size * sign(dloss/dz)

It is the "latent constraints" search of Engel, Hoffman & Roberts (2018), cut to one signed step (the first
step of Adam): each step costs a decoder and critic pass forward and back (about 10 ms for one segment on 2 CPU
threads), and the VAE's latency bar is 20 ms a segment. On 1,600 prior samples (tuning seeds, docs/vae.md)
one step of 0.15 took the share heard as asked from 0.76 to 0.82; a larger step, or a normalised or
prior-whitened one, did less. The mode's interior axes are not aimed at (that lowered the share): only what the
request itself asks.

The critic is a stand-in: it only steers; the analyzer measures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.models.guidance_classifier import ATTRIBUTE_SIGMA
from engines.music.analyzer import MODES
from engines.training.vae_critic import straight_through_roll

STEP_SIZE = 0.15   # the signed step the VAE takes by default (generation.sampling.vae.steer)


def steering_loss(decode, critic, z: torch.Tensor, modes: torch.Tensor, targets: torch.Tensor,
                  asked: torch.Tensor, columns: list[int], onset_threshold: float) -> torch.Tensor:
    """(B,) what the step lowers. `decode(z)`: the decoder's outputs for z under the request's condition;
    `modes` (B,) asked mode indices (WHITE rows aim at no mode); `targets` (B, k) the asked attributes in unit
    scale, `asked` (B, k) 1 where the request itself asks one (the mode's interior, which fills the decoder's
    other inputs, is not aimed at); `columns`: where each of the k attributes sits in the critic's head."""
    out = decode(z)
    roll = straight_through_roll(out, onset_threshold)
    t = torch.zeros(z.shape[0], dtype=torch.long, device=z.device)
    mode_logits, _, read = critic.model(roll, t, out["metre"].argmax(dim=1), out["log_tempo"])
    aims_mode = (modes < len(MODES)).float()
    loss = F.cross_entropy(mode_logits, modes.clamp(max=len(MODES) - 1), reduction="none") * aims_mode
    if columns:
        loss = loss + (asked * (read[:, columns] - targets) ** 2).sum(dim=1) / (2 * ATTRIBUTE_SIGMA ** 2)
    return loss


def steered(decode, critic, z: torch.Tensor, modes: torch.Tensor, targets: torch.Tensor, asked: torch.Tensor,
            columns: list[int], onset_threshold: float, step_size: float = STEP_SIZE) -> torch.Tensor:
    """z (B, D) after one signed step down steering_loss; rows with nothing to aim at (WHITE, nothing asked)
    stay where they are."""
    aimed = (modes < len(MODES)) | asked.bool().any(dim=1)                 # (B,)
    if step_size <= 0 or not bool(aimed.any()):
        return z
    with torch.enable_grad():
        moving = z.detach().requires_grad_(True)
        loss = steering_loss(decode, critic, moving, modes, targets, asked, columns, onset_threshold)
        (gradient,) = torch.autograd.grad(loss.sum(), moving)
    return (z - step_size * gradient.sign() * aimed[:, None].float()).detach()
