"""Config of the noise-aware guidance classifier (engines/models/guidance_classifier.py); torch-free, see vae_config."""
from dataclasses import dataclass, field


@dataclass
class GuidanceClassifierConfig:
    # The forward process it is trained on is the denoiser's (model.diffusion.num_steps / noise_schedule); the
    # checkpoint records it, and sampling refuses a classifier trained for another one.
    base_channels: int = 64                                # channels at full time resolution
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2, 4])  # levels at T, T/2, T/4, T/8
    embedding_dim: int = 128                               # timestep + metre conditioning
    dropout: float = 0.1
    high_rebracketing_quantile: float = 0.75               # "high" = above this quantile of the training split
    rebracketing_weight: float = 1.0                       # loss = mode CE + weight * high-rebracketing BCE
    high_weight: float = 3.0                               # BCE weight of the positives (1 in 4 is "high")
    step_power: float = 2.0                                # t = T u^power: more low-noise steps (draw_steps)
    # The attribute head: the analyzer's reading (unit scale, conditioning.CONDITION_ATTRIBUTES names) of the
    # clean roll, regressed from x_t; its gradient steers samples toward asked axes ([] = no head: checkpoints
    # from before it). The loss adds attribute_weight * the squared error.
    attributes: list[str] = field(default_factory=lambda: ["rebracketing", "temporal_complexity", "energy",
                                                           "valence", "tension", "intimacy", "motion"])
    attribute_weight: float = 10.0
    # The tempo beside the roll: notes per second (energy, motion) depend on it, and a roll in steps has none
    tempo_input: bool = True
    key_to_c: bool = True                                  # as the denoiser: it sees rolls in C
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    epochs: int = 12                                       # ~15 min on 2 CPU cores (the shipped checkpoint)
    ema_decay: float = 0.999
