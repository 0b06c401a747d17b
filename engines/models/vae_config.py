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
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: int = 200
    dropout: float = 0.1
    attributes: list[str] = field(default_factory=lambda: ["rebracketing", "temporal_complexity"])
