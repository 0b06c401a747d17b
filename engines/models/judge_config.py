"""Config of the learned chromatic judge (engines/models/chromatic_judge.py) and its training; torch-free."""
from dataclasses import dataclass, field


@dataclass
class JudgeConfig:
    base_channels: int = 48                                # channels at full time resolution
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2, 4])  # levels at T, T/2, T/4, T/8
    condition_dim: int = 64                                # metre + tempo conditioning of every block
    embedding_dim: int = 128                               # the penultimate layer: the Fréchet embedding
    key_profiles: int = 16                                 # learned key profiles of the harmony branch (0: none)
    harmony_dim: int = 128                                 # its MLP width (0: no harmony branch)
    top_line: bool = True                                  # the harmony branch also reads the top line's moves
    # training augmentation: semitones each training segment may be moved by (labelled afresh by the analyzer)
    transpositions: list[int] = field(default_factory=lambda: [-3, -2, -1, 1, 2, 3])
    dropout: float = 0.1
    attribute_weight: float = 1.0                          # loss = mode CE + weight * attribute MSE
    soft_weight: float = 0.5                               # mode target: (1 - w) * label + w * analyzer's soft scores
    feature_weight: float = 2.0                            # + weight * MSE of the analyzer's raw features (0: no head)
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    batch_size: int = 128
    epochs: int = 10
    ema_decay: float = 0.999
