"""Config of the diffusion denoiser (engines/models/denoiser.py); torch-free, see vae_config."""
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class DiffusionConfig:
    num_steps: int = 1000                                  # T of the forward process
    noise_schedule: Literal["linear", "cosine"] = "cosine"
    prediction: Literal["epsilon", "v", "x0"] = "x0"       # x0: see the denoiser docstring for why
    min_snr_gamma: float = 5.0                             # x0 loss weighted by min(SNR, gamma) (Hang et al. 2023);
                                                           # 0 = the target's plain loss (denoiser.loss_weights)
    condition_dropout: float = 0.1                         # share trained without mode / attributes (for CFG)
    # the condition besides the mode (engines/models/conditioning.py): which attributes, each given or not on
    # its own ("each"; "shared": one flag for all, the first checkpoints), and each one's training dropout
    attributes: list[str] = field(default_factory=lambda: ["rebracketing", "temporal_complexity", "energy",
                                                           "valence", "tension", "intimacy", "motion"])
    attribute_mask: Literal["each", "shared"] = "each"
    attribute_dropout: float = 0.3
    base_channels: int = 96                                # channels at full time resolution
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])  # per U-Net level (T, T/2, T/4)
    blocks_per_level: int = 1                              # 3.4 M parameters: 50 DDIM steps in ~0.5 s on 2 cores
    attention_heads: int = 4                               # self-attention at the coarsest level (T/4 steps)
    embedding_dim: int = 256                               # time + mode + attributes + metre conditioning
    dropout: float = 0.1
    key_to_c: bool = True                                  # train in C; generation moves to any tonic
    learning_rate: float = 4e-4                            # with warm-up, cosine decay and EMA (ema_loop.py)
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: int = 17                                       # ~70 min on 2 CPU cores (the shipped checkpoint)
    ema_decay: float = 0.999                               # sampling uses the exponential moving average
    onset_threshold: float = 0.0                           # decoding: x0 onset channel above this starts a note
    pitch_window: int = 2                                  # decoding: as the VAE's (roll_decoding.py)
    sustain_onsets: bool = True                            # decoding: a rise of the sustain channel starts a note
    min_note_steps: int = 1                                # decoding: shorter notes are dropped
