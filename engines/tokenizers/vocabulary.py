"""One vocabulary for text, MIDI and audio tokens: what the autoregressive engine reads and writes.

Id ranges, in this order:

    specials   <pad> <bos> <eos> <text> <midi> <audio> <sep> <unk>
    text       lower-cased words and punctuation learned from the training captions (`words`);
               anything else becomes <unk>
    midi       the REMI vocabulary of engines/tokenizers/midi.py, in miditok's id order (its names are
               kept, so a checkpoint can tell when the tokenizer changed under it)
    audio      `audio_codebooks` ranges of `audio_bins` codes each: code c of codebook q is
               audio_start + q * audio_bins + c; frames are flattened frame by frame (q = 0..n_q-1 of
               frame 0, then of frame 1 ...), so a prefix of the sequence is always whole frames plus a
               few codebooks of the next one

A sequence is `<bos>`, then spans that each open with their modality's marker, then `<eos>`:

    <bos> <text> a calm BLUE phrase <midi> Bar_None TimeSig_3/4 Position_0 ... <eos>

`encode(text=, midi=, audio=)` builds one; `spans(ids)` cuts one back into its parts; `decode(ids)` gives
the text, a Segment and/or the codes. The vocabulary saves as JSON beside the checkpoint (`to_dict`).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engines.errors import StudioError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<text>", "<midi>", "<audio>", "<sep>", "<unk>")
PAD, BOS, EOS, TEXT, MIDI, AUDIO, SEP, UNK = range(len(SPECIALS))
MARKERS = {TEXT: "text", MIDI: "midi", AUDIO: "audio"}
VOCABULARY_FORMAT = 1
WORD_PATTERN = re.compile(r"\d+/\d+|[a-z]+#?|\d+|[^\sa-z\d]")


def split_words(text: str) -> list[str]:
    """Lower-cased words, metres ("3/4"), numbers and single punctuation marks."""
    return WORD_PATTERN.findall(text.lower())


@dataclass
class UnifiedVocabulary:
    words: list[str]                                   # the text range, in id order
    midi_tokens: list[str]                             # the REMI range: miditok's token names in id order
    audio_codebooks: int = 0                           # n_q of the codec (0 = no audio range)
    audio_bins: int = 0                                # codes per codebook
    _word_ids: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self._word_ids = {w: i for i, w in enumerate(self.words)}

    # ---- building and saving --------------------------------------------------------------------------
    @classmethod
    def build(cls, captions, midi_tokens: list[str], audio_codebooks: int = 0, audio_bins: int = 0,
              min_count: int = 1) -> "UnifiedVocabulary":
        """Learn the text range from `captions` (words seen at least `min_count` times, most frequent first)."""
        counts = Counter(w for caption in captions for w in split_words(caption))
        words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(words, list(midi_tokens), audio_codebooks, audio_bins)

    def to_dict(self) -> dict:
        return {"format": VOCABULARY_FORMAT, "specials": list(SPECIALS), "words": self.words,
                "midi_tokens": self.midi_tokens, "audio_codebooks": self.audio_codebooks,
                "audio_bins": self.audio_bins}

    @classmethod
    def from_dict(cls, data: dict) -> "UnifiedVocabulary":
        if data.get("format") != VOCABULARY_FORMAT or list(data.get("specials", [])) != list(SPECIALS):
            raise StudioError("the vocabulary was saved by another version of the studio; retrain the "
                              "autoregressive engine (`python -m engines train --engine autoregressive`)")
        return cls(list(data["words"]), list(data["midi_tokens"]), int(data["audio_codebooks"]),
                   int(data["audio_bins"]))

    # ---- ranges ---------------------------------------------------------------------------------------
    @property
    def text_start(self) -> int:
        return len(SPECIALS)

    @property
    def midi_start(self) -> int:
        return self.text_start + len(self.words)

    @property
    def audio_start(self) -> int:
        return self.midi_start + len(self.midi_tokens)

    def __len__(self) -> int:
        return self.audio_start + self.audio_codebooks * self.audio_bins

    def modality_of(self, token: int) -> str:
        """'special', 'text', 'midi' or 'audio' for one id."""
        if not 0 <= token < len(self):
            raise StudioError(f"token id {token} is outside the vocabulary (0..{len(self) - 1})")
        if token < self.text_start:
            return "special"
        if token < self.midi_start:
            return "text"
        return "midi" if token < self.audio_start else "audio"

    def name(self, token: int) -> str:
        """A readable name of one id (for debugging and the studio's token view)."""
        kind = self.modality_of(token)
        if kind == "special":
            return SPECIALS[token]
        if kind == "text":
            return self.words[token - self.text_start]
        if kind == "midi":
            return self.midi_tokens[token - self.midi_start]
        q, code = divmod(token - self.audio_start, self.audio_bins)
        return f"Audio_{q}_{code}"

    # ---- per-modality spans ---------------------------------------------------------------------------
    def encode_text(self, text: str) -> list[int]:
        return [self.text_start + self._word_ids[w] if w in self._word_ids else UNK for w in split_words(text)]

    def decode_text(self, ids) -> str:
        words = [self.words[i - self.text_start] if self.text_start <= i < self.midi_start else "<unk>"
                 for i in ids]
        text = " ".join(words)
        return re.sub(r" ([,.:;!?])", r"\1", text)

    def encode_midi(self, remi_ids) -> list[int]:
        remi_ids = np.asarray(remi_ids, dtype=np.int64)
        if remi_ids.size and (remi_ids.min() < 0 or remi_ids.max() >= len(self.midi_tokens)):
            raise StudioError(f"REMI ids must lie in 0..{len(self.midi_tokens) - 1}")
        return (remi_ids + self.midi_start).tolist()

    def decode_midi(self, ids) -> list[int]:
        """Unified ids of a MIDI span -> REMI ids (anything outside the MIDI range is dropped)."""
        return [i - self.midi_start for i in ids if self.midi_start <= i < self.audio_start]

    def encode_audio(self, codes) -> list[int]:
        """codes [n_q, frames] (ints in 0..audio_bins-1) -> ids, frame by frame."""
        codes = np.asarray(codes, dtype=np.int64)
        if codes.ndim != 2 or codes.shape[0] != self.audio_codebooks:
            raise StudioError(f"audio codes must be shaped [{self.audio_codebooks}, frames], got {list(codes.shape)}")
        if codes.size and (codes.min() < 0 or codes.max() >= self.audio_bins):
            raise StudioError(f"audio codes must lie in 0..{self.audio_bins - 1}")
        offsets = self.audio_start + np.arange(self.audio_codebooks)[:, None] * self.audio_bins
        return (codes + offsets).T.reshape(-1).tolist()

    def decode_audio(self, ids) -> np.ndarray:
        """Ids of an audio span -> codes [n_q, frames]. Ids must run q = 0..n_q-1 in each frame; a trailing
        partial frame is dropped."""
        ids = [i for i in ids if i >= self.audio_start]
        frames = len(ids) // max(self.audio_codebooks, 1)
        if not self.audio_codebooks or not frames:
            return np.zeros((self.audio_codebooks, 0), dtype=np.int64)
        flat = np.asarray(ids[:frames * self.audio_codebooks], dtype=np.int64) - self.audio_start
        q, code = np.divmod(flat.reshape(frames, self.audio_codebooks), self.audio_bins)
        if not (q == np.arange(self.audio_codebooks)[None]).all():
            raise StudioError("the audio tokens are out of codebook order; they cannot be decoded")
        return code.T

    # ---- whole sequences ------------------------------------------------------------------------------
    def encode(self, text: str | None = None, midi=None, audio=None, eos: bool = True) -> list[int]:
        """<bos> [<text> words] [<midi> REMI] [<audio> codes] [<eos>]: the spans given, in that order."""
        ids = [BOS]
        if text is not None:
            ids += [TEXT] + self.encode_text(text)
        if midi is not None:
            ids += [MIDI] + self.encode_midi(midi)
        if audio is not None:
            ids += [AUDIO] + self.encode_audio(audio)
        return ids + ([EOS] if eos else [])

    def spans(self, ids) -> dict:
        """Cut a sequence at its markers: {"text": [...], "midi": [...], "audio": [...]} (unified ids of each
        span, markers and specials removed; a modality absent from the sequence is absent from the dict)."""
        out, current = {}, None
        for token in list(ids):
            token = int(token)
            if token == EOS:
                break
            if token in MARKERS:
                current = MARKERS[token]
                out.setdefault(current, [])
            elif current is not None and token >= self.text_start:
                out[current].append(token)
        return out

    def decode(self, ids, tempo_qpm: float | None = None) -> dict:
        """A sequence -> {"text": str, "midi": Segment, "audio": codes [n_q, frames]} for the spans it holds."""
        from engines.tokenizers.midi import decode_tokens

        out = {}
        for kind, span in self.spans(ids).items():
            if kind == "text":
                out["text"] = self.decode_text(span)
            elif kind == "midi":
                out["midi"] = decode_tokens(self.decode_midi(span), "remi", tempo_qpm)
            else:
                out["audio"] = self.decode_audio(span)
        return out


def remi_token_names() -> list[str]:
    """The REMI tokenizer's token names in id order (the MIDI range of a new vocabulary)."""
    from engines.tokenizers.midi import get_tokenizer

    tokenizer = get_tokenizer("remi")
    return [tokenizer[i] for i in range(len(tokenizer))]
