"""Config of the conditional β-VAE (engines/models/vae.py).

It lives in its own torch-free module because the studio and the CLI load the config without importing torch.
"""
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VAEConfig:
    latent_dim: int = 128            # 512 must also build, train a step and sample
    hidden_dim: int = 256            # channels of the 1-D convolutions over time
    mode_embedding: int = 16
    beta: float = 0.2                # weight of the KL term after annealing
    beta_schedule: Literal["constant", "linear", "cyclical"] = "cyclical"
    beta_warmup_epochs: int = 10     # linear: epochs to reach beta; cyclical: length of one cycle
    free_bits: float = 0.05          # minimum KL per latent dimension (nats), against posterior collapse
    onset_pos_weight: float = 8.0    # onsets are ~0.3 % of the roll: weigh positives up in the BCE
    condition_dropout: float = 0.1   # share of batches trained as WHITE (no mode) / without attributes
    key_to_c: bool = True            # train on segments moved to the tonic C (the model writes in C major/minor)
    prior: Literal["standard", "conditional"] = "conditional"  # N(0, I), or a learned N(mu_mode, I)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 200
    dropout: float = 0.1
    select_by: Literal["val_loss", "val_f1", "last"] = "val_f1"  # which epoch best.pt keeps: lowest validation
                                     # loss (ELBO at full beta), highest validation note F1, or the last (a
                                     # fine-tune whose critic trades some F1 for a decoder that reads the condition)
    pitch_window: int = 2            # decoding: onsets peak within a whole tone; a held note ends where a
                                     # note starts that close (trained_vae.logits_to_segments); 0 = plain
    # The condition besides the mode (engines/models/conditioning.py): which attributes, each given or not on
    # its own ("each"; "shared": one flag for all, the first checkpoints), and each one's training dropout
    attributes: list[str] = field(default_factory=lambda: ["rebracketing", "temporal_complexity", "energy",
                                                           "valence", "tension", "intimacy", "motion"])
    attribute_mask: Literal["each", "shared"] = "each"
    attribute_dropout: float = 0.3
    # Fader-network adversary: a classifier reads the mode and the attributes from z, and the encoder is
    # trained (gradient reversal) to leave them out, so the decoder must take them from the condition. 0 = off.
    adversary_weight: float = 0.0
    # A checkpoint (best.pt of an earlier run, same shape) whose weights this run starts from instead of random
    # ones: a fine-tune, e.g. of a trained VAE with the critic below. "" = train from scratch.
    init_checkpoint: str = ""
    # A frozen critic (a guidance-classifier checkpoint with an attribute head) that reads what the decoder writes
    # for z of one segment and the condition of another; its squared error against the condition, times
    # critic_weight, trains the decoder to follow the condition (engines/training/vae_critic.py). "" = off.
    critic: str = ""
    critic_weight: float = 0.0
