"""A decoder that follows its condition: the attribute-consistency term of VAE training (config.critic).

The VAE's decoder learns to reconstruct from z alone, because z already holds everything the condition says:
swept from one end to the other, an asked tension moved its samples' measured tension by 0.05 (vae-v4). So
this term asks the decoder for music that *measures* as asked, on pairs where z and the condition disagree:

    z of segment i (posterior mean, detached: the encoder is not asked to change)
    + the mode and attributes of segment j (another segment of the batch)
    -> decoder -> onset and sustain probabilities (B, 2, T, P)
    -> a binary roll at the sampling threshold, with the probabilities' gradient (straight through)
    -> a frozen critic: the guidance classifier's attribute head at t = 0 (engines/models/guidance_classifier.py,
       the analyzer's reading of a clean roll, 0.09 mean error on validation rolls), in the metre and tempo the
       decoder chose for the roll
    -> squared error against segment j's attributes (unit scale)

It is the controlled-generation recipe of Hu et al. 2017 (a frozen attribute model reads soft samples and its
error trains the generator), with the straight-through roll so that the critic reads rolls like those it was
trained on. The critic is a learned stand-in for the analyzer: it only trains; the analyzer measures.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engines.errors import StudioError
from engines.models.guidance_classifier import TrainedGuidanceClassifier
from engines.models.vae import ChromaticVAE

CRITIC_ONSET_THRESHOLD = 0.775   # the shipped VAE's sampling threshold (vae_finalize): the roll the critic reads


def load_critic(path: str, model: ChromaticVAE, device) -> TrainedGuidanceClassifier:
    """The frozen critic for `model`: a guidance classifier whose attribute head reads every attribute the VAE
    is conditioned on, on rolls of its shape and key handling."""
    critic = TrainedGuidanceClassifier.load(path, device)
    missing = [a for a in model.config.attributes if a not in critic.attributes]
    if missing:
        raise StudioError(f"model.vae.critic: '{path}' reads no {missing[0]} (its attribute head reads: "
                          f"{', '.join(critic.attributes) or 'nothing'}); train one with the VAE's attributes")
    if (critic.model.steps, critic.model.pitches) != (model.steps, model.pitches) or \
            critic.model.config.key_to_c != model.config.key_to_c:
        raise StudioError(f"model.vae.critic: '{path}' reads {critic.model.steps}x{critic.model.pitches} rolls "
                          f"(key_to_c {critic.model.config.key_to_c}), this VAE writes {model.steps}x"
                          f"{model.pitches} (key_to_c {model.config.key_to_c})")
    return critic


def straight_through_roll(out: dict, threshold: float = CRITIC_ONSET_THRESHOLD) -> torch.Tensor:
    """Decoder logits -> (B, 2, T, P) in the diffusion's units (-1 off, +1 on): the roll sampling would write
    (onsets above `threshold`, sustain above 1/2) forward, the probabilities' gradient backward."""
    soft = torch.stack([torch.sigmoid(out["onset"]), torch.sigmoid(out["sustain"])], dim=1)   # (B, 2, T, P)
    hard = torch.stack([soft[:, 0] > threshold, soft[:, 1] > 0.5], dim=1).float()
    return (hard + soft - soft.detach()) * 2 - 1


def critic_loss(model: ChromaticVAE, critic: TrainedGuidanceClassifier, batch: dict, z: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The mean squared error (unit scale) between the attributes asked of the decoder and the critic's reading
    of what it wrote, over pairs (z of segment i, condition of segment j != i); z (B, D) is detached here."""
    b = z.shape[0]
    shift = int(torch.randint(1, max(b, 2), (1,), generator=generator)) if b > 1 else 0
    other = torch.roll(torch.arange(b, device=z.device), shift)      # segment j of each row: a cyclic shift
    values = model.batch_attributes(batch)[other]                   # (B, k) what is asked
    out = model.decode(z.detach(), batch["mode"][other], values, torch.ones_like(values))
    roll = straight_through_roll(out)
    t = torch.zeros(b, dtype=torch.long, device=z.device)
    _, _, read = critic.model(roll, t, out["metre"].argmax(dim=1), out["log_tempo"].detach())
    columns = [critic.attributes.index(a) for a in model.config.attributes]
    return F.mse_loss(read[:, columns], values)
