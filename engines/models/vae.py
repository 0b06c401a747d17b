"""Conditional β-VAE over 4-bar segments. This file holds its config; the network arrives with the VAE issue."""
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class VAEConfig:
    latent_dim: int = 128        # 512 must also build and train
    hidden_dim: int = 512
    beta: float = 0.5            # weight of the KL term after annealing
    beta_schedule: Literal["constant", "linear", "cyclical"] = "cyclical"
    free_bits: float = 0.1       # minimum KL per latent dimension (nats), against posterior collapse
    learning_rate: float = 1e-3
    batch_size: int = 128
    dropout: float = 0.1
    attributes: list[str] = field(default_factory=lambda: ["rebracketing", "temporal_complexity"])
