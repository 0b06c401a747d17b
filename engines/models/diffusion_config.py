"""Config of the diffusion denoiser (the network arrives with the diffusion issue); torch-free, see vae_config."""
from dataclasses import dataclass
from typing import Literal


@dataclass
class DiffusionConfig:
    num_steps: int = 1000                                  # T of the forward process
    noise_schedule: Literal["linear", "cosine"] = "cosine"
    prediction: Literal["epsilon", "v"] = "v"
    condition_dropout: float = 0.1                         # for classifier-free guidance
    base_channels: int = 64
    learning_rate: float = 2e-4
    batch_size: int = 64
