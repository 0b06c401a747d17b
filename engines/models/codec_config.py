"""Config of the audio codec (engines/models/codec.py) and its training; torch-free, see vae_config."""
from dataclasses import dataclass, field


@dataclass
class CodecConfig:
    sample_rate: int = 16000                 # FluidSynth renders at this rate, mono
    n_filters: int = 16                      # SEANet base channels (EnCodec: 32)
    dimension: int = 64                      # latent channels per frame (EnCodec: 128)
    ratios: list[int] = field(default_factory=lambda: [8, 5, 4, 2])  # hop 320: 50 frames per second at 16 kHz
    lstm: int = 1                            # LSTM layers at the bottleneck (EnCodec: 2)
    n_q: int = 4                             # residual codebooks: 4 x 50 = 200 tokens per second
    bins: int = 1024                         # codes per codebook (10 bits): 2 kbps
    input_rms: float = 0.1                   # encode() scales a clip to this RMS first (renders sit near 0.014,
                                             # where waveform and log-mel losses barely move); 0 = as given
    # Official EnCodec weights, when the user has them on disk (encodec_24khz-d7cc33bc.th, e.g. from the
    # torch hub cache): used instead of the project's codec. Nothing is ever downloaded.
    pretrained_path: str = ""
    pretrained_bandwidth: float = 1.5        # kbps the official 24 kHz model encodes at (2 codebooks, 150 tokens/s)
    # training
    render_segments: int = 1200              # training segments rendered with FluidSynth (cached on disk)
    crop_seconds: float = 1.0
    crops_per_segment: int = 4               # random crops per rendered segment in one epoch
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 20
    l1_weight: float = 10.0                  # waveform L1 (EnCodec's l_t) of clips at input_rms
    mel_weight: float = 0.2                  # multi-scale log-mel L1 (EnCodec's l_f); weighted up, it holds
                                             # the waveform terms back for hundreds of steps (README, codec)
    si_snr_weight: float = 0.05              # minus SI-SNR (dB) of each crop: keeps the waveform's phase, which
                                             # a spectral loss alone leaves free (SI-SNR is the bar)
    commitment_weight: float = 1.0
    # start from this codec checkpoint's weights and codebooks (training on from a shipped codec; a fresh start
    # can sit in silence for thousands of steps, where the waveform L1 pulls an output it cannot yet align to 0)
    init_checkpoint: str = ""
