"""Config of the autoregressive engine's GPT (engines/models/gpt.py) and its training; torch-free, see vae_config."""
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class GPTConfig:
    vocab_size: int = 0                    # set from the unified vocabulary when the model is built
    block_size: int = 384                  # longest sequence (caption + REMI of 4 bars: 99.4 % of segments fit)
    n_layer: int = 6
    n_head: int = 4
    n_embd: int = 256                      # ~5 M parameters with the vocabulary: ~35 min per epoch on 2 cores
    dropout: float = 0.1
    positions: Literal["rotary", "learned"] = "rotary"  # rotary: the KV cache needs no position table
    bias: bool = False                     # no biases in linears and layer norms (nanoGPT: a little better, faster)
    # training
    learning_rate: float = 1e-3            # with warm-up, cosine decay and EMA (ema_loop.py)
    weight_decay: float = 0.1
    batch_size: int = 32
    epochs: int = 10
    ema_decay: float = 0.999
    # share of training examples per task (normalised): caption -> MIDI, MIDI alone (continuation of any
    # prefix; also the unconditioned case), MIDI -> audio tokens (needs a codec checkpoint)
    task_weights: dict = field(default_factory=lambda: {"caption_to_midi": 0.75, "continuation": 0.25,
                                                        "midi_to_audio": 0.0})
    captions_per_segment: int = 8          # captions drawn per training segment to learn the text vocabulary
    # against memorisation (issue 19): each training example moved by up to this many semitones either way
    # (its caption's key with it; 0 = off), and each epoch's near-copy rate of prompted samples measured, so
    # best.pt is the lowest validation loss among epochs at or under copy_target
    transpose: int = 5
    # share of captions followed by an attribute phrase ("energy 7 valence 2", engines/data/captions.py), so
    # the GPT takes the studio's axis and rhythm sliders as text (0 = off, as the first checkpoints)
    attribute_captions: float = 0.5
    copy_check_samples: int = 32           # prompted samples per epoch for the copy check (0 = off)
    copy_target: float = 0.01
    # the MIDI -> audio task (engines/data/audio_tokens.py), trained when task_weights.midi_to_audio > 0: the REMI
    # of a segment's opening bars -> the codec tokens of their render's first audio_seconds, the coarse
    # audio_codebooks of the codec's (1 of 4: 2 s are 100 tokens; in equal training time one codebook learned
    # chroma 0.32 against two's 0.18, and it alone keeps 0.964 of the render's chroma; docs/autoregressive.md)
    audio_seconds: float = 2.0
    audio_codebooks: int = 1
    audio_segments: int = 6000             # training segments rendered and encoded for the task (once per codec)
    codec_checkpoint: str = ""             # the codec whose tokens the GPT learns; empty: checkpoints_dir/codec.pt
    # start from these GPT weights (a checkpoint of this engine) instead of random ones: its text and MIDI ranges
    # are kept as they are and an audio range is added, so a trained GPT learns the audio task on top
    init_checkpoint: str = ""
