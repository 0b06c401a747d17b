"""The shipped GPT as the studio and CLI use it: prompts in, segments out.

    engine = TrainedAutoregressive.load("assets/checkpoints/autoregressive.pt")
    results = engine.generate("a calm, intimate BLUE phrase", n=2, temperature=0.9, top_p=0.95, seed=3)
    results[0].segment, results[0].tokens

The prompt is `<bos> <text> words <midi>` (+ the REMI of the bars to continue, for a continuation), and
the model writes the MIDI span under engines/sampling/autoregressive.py's REMI grammar until <eos> or
`max_bars` bars. Sampling (temperature, top-k, top-p) or beam search (beam_width > 1).

A checkpoint trained on the MIDI -> audio task (its `audio_task` record) also writes audio tokens for a segment:

    codes = engine.write_audio(segment, seed=0)      # [codebooks, frames] codec codes of its opening seconds
    waveform = model_audio(engine, codec, segment)   # those codes decoded by the codec it learned them from,
                                                     # at the loudness of the FluidSynth render

On CPU the transformer blocks' linear layers run with int8 weights (PyTorch's dynamic quantization: weights
quantized once, activations per call): decoding one token at a time is bound by reading the weights, and int8
reads a quarter as much; the embedding and the output layer stay float32. A batch that many users' requests
share (sample_groups) is bound by reading the KV cache instead: from WIDE_ROWS rows on it runs on a bfloat16
copy of the model where the CPU multiplies bfloat16 in hardware (AMX tiles, Intel Xeon 4th generation on),
1.5x the tokens a second of int8 at 128 rows (at batch 1 it is slower than int8, so a lone user keeps int8).
On the shipped checkpoint the perplexity of 300 test segments is the same to three decimals in every precision
(1.665-1.666; README, bench), and logits are float32 in all. `precision="float32"` turns both off (and is
what a GPU gets); "int8" and "bfloat16" use one precision for every batch.
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from engines.data.captions import prompt_for
from engines.errors import StudioError
from engines.models.gpt import GPT, model_from_checkpoint
from engines.music.notes import NOTE_DTYPE, Segment, bars_window, first_bars  # noqa: F401  (bars_window: its home was here)
from engines.music.notes import transpose_notes
from engines.sampling.autoregressive import (AudioGrammar, ClassifierFreeGuidance, RemiGrammar, RowGroup,
                                             beam_search, sample_token_groups, sample_tokens)
from engines.sampling.copy_guard import CopyGuard
from engines.tokenizers.midi import decode_tokens, encode_segment
from engines.tokenizers.vocabulary import AUDIO, EOS, MIDI, UnifiedVocabulary, remi_token_names
from engines.training.common import load_checkpoint

MAX_PROMPT_WORDS = 64
FALLBACK_TEMPERATURE, FALLBACK_GUIDANCE = 0.8, 3.0   # an uncalibrated checkpoint's sampling for every mode
WIDE_ROWS = 32   # rows from which a shared batch runs in bfloat16 (where the CPU computes it natively)
AUDIO_TEMPERATURE, AUDIO_TOP_P = 1.0, 0.95   # audio tokens are sampled (greedy codes repeat one frame)
# Audio is written toward its own REMI and away from the same bars a tritone off (write_audio): chroma against
# the render 0.29 -> 0.42 on the 24 held-out prompts of the evaluation (docs/autoregressive.md)
AUDIO_GUIDANCE, AUDIO_CONTRAST_SEMITONES = 4.0, 6


@dataclass
class Generated:
    segment: Segment
    tokens: list[int]        # the MIDI span written (unified ids, with the continued bars' tokens first)
    ended: bool              # the model wrote <eos> (else max_bars or max_new_tokens ended it)


Precision = Literal["auto", "bfloat16", "int8", "float32"]


def int8_blocks(model: GPT) -> GPT:
    """`model` with the linear layers of its blocks dynamically quantized to int8 (CPU only; in place)."""
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 points to torchao; the eager API is what the pinned torch has
        warnings.simplefilter("ignore")
        return quantize_dynamic(model, {"blocks": default_dynamic_qconfig}, inplace=True)


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX tiles): elsewhere bfloat16 is emulated and
    slower than int8."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:   # a torch without the probe
        return False


class TrainedAutoregressive:
    def __init__(self, model: GPT, payload: dict, device: str | torch.device = "cpu", precision: Precision = "auto"):
        self.device = torch.device(device)
        if precision not in ("auto", "bfloat16", "int8", "float32"):
            raise StudioError(f"precision must be auto, bfloat16, int8 or float32, got '{precision}'")
        if precision in ("int8", "bfloat16") and self.device.type != "cpu":
            raise StudioError(f"{precision} weights are for CPU inference; use precision float32 on a GPU")
        model = model.to(device).eval()
        cpu = self.device.type == "cpu"
        # the bfloat16 copy for wide shared batches, made before int8 quantizes the model in place
        self.wide = copy.deepcopy(model).to(torch.bfloat16) if precision == "auto" and cpu and native_bfloat16() \
            else None
        if precision == "auto":
            precision = "int8" if cpu else "float32"
        self.precision = precision
        self.model = int8_blocks(model) if precision == "int8" else \
            model.to(torch.bfloat16) if precision == "bfloat16" else model
        self.payload = payload
        self.vocabulary = UnifiedVocabulary.from_dict(payload["vocabulary"])
        if self.vocabulary.midi_tokens != remi_token_names():
            raise StudioError("the autoregressive checkpoint was trained with another REMI vocabulary; retrain it "
                              "(`python -m engines train --engine autoregressive`)")
        self.data = payload.get("data", {"segment_bars": 4})
        # per mode, the attributes inside its region (conditioning.mode_targets); absent before issue 19
        self.mode_targets: dict = payload.get("mode_targets", {})
        # the training segments' attributes and metres (conditioning.attribute_metre_pool; {} before them): a
        # request that asks attributes and no mode is written in a metre of the segments nearest them
        self.attribute_metres: dict = payload.get("attribute_metres", {})
        # per mode, the temperature and prompt guidance it is sampled with when a request leaves them unset
        # (engines/training/autoregressive_calibration.py); absent from a checkpoint never calibrated
        self.sampling_calibration: dict = payload.get("sampling_calibration", {})
        # the MIDI -> audio task it learned (seconds, codebooks, frames, the codec's fingerprint); None: no audio
        self.audio_task: dict | None = payload.get("audio_task")

    @property
    def parameter_count(self) -> int:  # from the checkpoint: int8 layers hold packed weights, not parameters
        return int(sum(v.numel() for v in self.payload["state_dict"].values()))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             precision: Precision = "auto") -> "TrainedAutoregressive":
        payload = load_checkpoint(path, map_location=device, engine="autoregressive")
        return cls(model_from_checkpoint(payload), payload, device, precision)

    def prompt_ids(self, prompt: str, continue_from: Segment | None = None, keep_bars: int = 0,
                   metre: tuple[int, int] | None = None) -> list[int]:
        """The ids the model reads first: the text prompt, <midi>, and the first `keep_bars` bars of
        `continue_from` (REMI) when continuing, else the first bar's `Bar TimeSig_<metre>` when a metre is
        asked (the grammar keeps every later bar in it)."""
        text = (prompt or "").strip()
        if len(text.split()) > MAX_PROMPT_WORDS:
            raise StudioError(f"the prompt has {len(text.split())} words; keep it under {MAX_PROMPT_WORDS}")
        ids = self.vocabulary.encode(text=text, eos=False) if text else self.vocabulary.encode(eos=False)
        ids.append(MIDI)
        if continue_from is not None:
            ids += self.vocabulary.encode_midi(bars_prefix(continue_from, keep_bars))
        elif metre is not None:
            names = remi_token_names()
            ids += self.vocabulary.encode_midi([names.index("Bar_None"), names.index(f"TimeSig_{metre[0]}/{metre[1]}")])
        return ids

    def generate(self, prompt: str | None = None, mode: str | None = None, n: int = 1, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, beam_width: int = 1, length_penalty: float = 1.0,
                 max_bars: int = 4, max_new_tokens: int = 0, seed: int = 0, continue_from: Segment | None = None,
                 keep_bars: int = 2, on_token: Callable | None = None, guidance_scale: float = 1.0,
                 metre: tuple[int, int] | None = None, copies=None) -> list[Generated]:
        """n segments for `prompt` (None: the default prompt of `mode`). With beam search n must be 1.
        guidance_scale > 1: classifier-free guidance toward the prompt against the same MIDI without text.
        `metre` (e.g. (3, 4)): the first bar opens in it (a continuation keeps the metre of what it continues).
        `copies` (a CopyIndex of the training split): every row is kept off the passage of a training segment it
        would copy (engines/sampling/copy_guard.py); None: the model's own choices."""
        if not 1 <= n <= 64:
            raise StudioError(f"n must lie in 1..64, got {n}")
        if not 1 <= max_bars <= 16:
            raise StudioError(f"max_bars must lie in 1..16, got {max_bars}")
        if beam_width > 1 and n != 1:
            raise StudioError("beam search writes one segment (its best beam); ask for n = 1")
        if not 0 <= guidance_scale <= 10:
            raise StudioError(f"guidance scale must lie in 0..10, got {guidance_scale}")
        if continue_from is not None and not 1 <= keep_bars < max_bars:
            raise StudioError(f"bars to keep must lie in 1..{max_bars - 1} (max bars {max_bars})")
        # the model learned segments of `window` bars and ends there: a longer one is written in windows
        window, first = self.windows(max_bars, keep_bars if continue_from is not None else 0)
        stopped = {"now": False}
        if on_token is not None and first < max_bars:   # the first window's Stop also ends the windows after it
            watch_first = on_token

            def on_token(step, rows):
                stopped["now"], stopped["step"] = bool(watch_first(step, rows)), max(step, stopped.get("step", 0))
                return stopped["now"]
        generated = self._generate_window(prompt, mode, n, temperature, top_k, top_p, beam_width, length_penalty,
                                           first, max_new_tokens, seed, continue_from, keep_bars, on_token,
                                           guidance_scale, metre, copies)
        if first < max_bars and not stopped["now"]:
            generated = self._extend(generated, prompt, mode, max_bars, window, temperature, top_k, top_p,
                                     seed, guidance_scale, on_token, stopped.get("step", 0), copies)
        return generated

    def _generate_window(self, prompt, mode, n, temperature, top_k, top_p, beam_width, length_penalty, max_bars,
                         max_new_tokens, seed, continue_from, keep_bars, on_token, guidance_scale,
                         metre=None, copies=None) -> list[Generated]:
        """One pass of at most `max_bars` bars (generate's arguments)."""
        ids = self.prompt_ids(prompt if prompt is not None else prompt_for(mode), continue_from,
                              keep_bars if continue_from is not None else 0, metre)
        grammar = self.grammar(max_bars, copies)
        budget = min(max_new_tokens or self.model.config.block_size, self.model.config.block_size - len(ids))
        given = ids[ids.index(MIDI) + 1:]
        # on_token sees every row's whole MIDI span so far, the continued bars included
        watch = None if on_token is None else (lambda step, rows: on_token(step, [given + r for r in rows]))
        model = self._guided(ids, guidance_scale)
        if beam_width > 1:
            rows = [beam_search(model, ids, beam_width, budget, length_penalty, grammar, watch)]
        else:
            generator = torch.Generator().manual_seed(int(seed))
            rows = sample_tokens(model, ids, n, budget, temperature, top_k, top_p, grammar, generator, watch)
        return [self.to_generated(given + row, max_bars) for row in rows]

    def write_audio(self, segment: Segment, n: int = 1, temperature: float = AUDIO_TEMPERATURE, top_k: int = 0,
                    top_p: float = AUDIO_TOP_P, seed: int = 0, guidance: float = AUDIO_GUIDANCE) -> list[np.ndarray]:
        """n samples of the codec codes [codebooks, frames] of `segment`'s opening `audio_task.seconds`, written
        after the REMI of its opening bars (the MIDI -> audio task, engines/data/audio_tokens.py).

        `guidance` > 1 writes them contrastively: logits = other + guidance * (own - other), where `own` reads
        the segment's REMI and `other` the same bars moved AUDIO_CONTRAST_SEMITONES (a tritone: the rhythm
        kept, every pitch class changed). Written freely, each wrong frame feeds the next and the audio drifts
        from the notes; the contrast keeps what the notes' own pitches add. (Plain classifier-free guidance
        would need the task trained with the REMI dropped; against an empty MIDI span it did less.) 1: plain."""
        from engines.data.audio_tokens import opening_bars, opening_remi

        if not self.audio_task:
            raise StudioError("this GPT checkpoint never learned to write audio tokens (train it with "
                              "model.autoregressive.task_weights.midi_to_audio > 0)")
        if not len(segment.notes):
            raise StudioError("the segment holds no notes; there is nothing to write audio for")
        if not 1 <= guidance <= 20:
            raise StudioError(f"audio guidance must lie in 1..20, got {guidance}")
        task = self.audio_task
        bars = opening_bars(segment, task["seconds"])

        def audio_prompt(notes: Segment) -> list[int]:   # <bos> <midi> REMI of the opening bars <audio>
            return self.vocabulary.encode(midi=opening_remi(encode_segment(notes, "remi").tolist(), bars),
                                          eos=False) + [AUDIO]
        prompt = audio_prompt(segment)
        frames, codebooks = int(task["frames"]), int(task["codebooks"])
        budget = frames * codebooks + 1
        if len(prompt) + budget - 1 > self.model.config.block_size:   # <eos> is written, never read back
            raise StudioError(f"the segment's opening bars take {len(prompt)} tokens; with {budget - 1} audio "
                              f"tokens that is more than the model reads ({self.model.config.block_size})")
        model = self.model
        if guidance != 1:
            moved = replace(segment, notes=transpose_notes(segment.notes, AUDIO_CONTRAST_SEMITONES))
            model = ClassifierFreeGuidance(self.model, audio_prompt(moved), guidance)
        generator = torch.Generator().manual_seed(int(seed))
        rows = sample_tokens(model, prompt, n, budget, temperature, top_k, top_p,
                             AudioGrammar(self.vocabulary, frames, codebooks), generator)
        return [self.vocabulary.decode_audio(row)[:codebooks] for row in rows]

    def sampling_for(self, mode: str | None, temperature: float | None = None,
                     guidance: float | None = None) -> tuple[float, float]:
        """(temperature, prompt guidance) to sample `mode` with: those given, and for each left None the
        checkpoint's calibration for the mode, else 0.8 and 3 (WHITE and uncalibrated checkpoints)."""
        calibrated = self.sampling_calibration.get("modes", {}).get((mode or "").upper(), {})
        return (float(temperature if temperature is not None else calibrated.get("temperature", FALLBACK_TEMPERATURE)),
                float(guidance if guidance is not None else calibrated.get("prompt_guidance", FALLBACK_GUIDANCE)))

    def grammar(self, max_bars: int, copies=None) -> RemiGrammar | CopyGuard:
        """The REMI grammar of a window of `max_bars` bars, kept off copies of the training segments of `copies`
        (a CopyIndex) when one is given."""
        grammar = RemiGrammar(self.vocabulary, max_bars)
        return grammar if copies is None else CopyGuard(grammar, copies)

    def sample_groups(self, prompt: str | None, mode: str | None, groups: list[RowGroup], max_bars: int = 4,
                      metre: tuple[int, int] | None = None, on_token: Callable | None = None,
                      copies=None) -> list[list[int]]:
        """Several requests of one prompt in one batch (engines/generation/batching.py), each group of rows
        sampled with its own settings, prompt guidance and generator: every row's whole MIDI span (ids;
        to_generated reads it), in group order, as _generate_window writes them for one window of at most
        `max_bars` bars."""
        if not 1 <= max_bars <= int(self.data.get("segment_bars", 4)):
            window = self.data.get("segment_bars", 4)
            raise StudioError(f"a shared batch writes one window: max_bars must lie in 1..{window}")
        ids = self.prompt_ids(prompt if prompt is not None else prompt_for(mode), None, 0, metre)
        given = ids[ids.index(MIDI) + 1:]
        model = self._guided(ids, torch.tensor([g.guidance_scale for g in groups for _ in range(g.rows)],
                                               device=self.device),
                             self.batch_model(sum(g.rows for g in groups)))
        watch = None if on_token is None else (lambda step, rows: on_token(step, [given + r for r in rows]))
        rows = sample_token_groups(model, ids, groups, self.model.config.block_size - len(ids),
                                   self.grammar(max_bars, copies), watch)
        return [given + row for row in rows]

    def batch_model(self, rows: int) -> GPT:
        """The model a shared batch of `rows` rows runs on: the bfloat16 copy from WIDE_ROWS rows where there is
        one, else the model."""
        return self.wide if self.wide is not None and rows >= WIDE_ROWS else self.model

    def _guided(self, ids: list[int], scale: float | torch.Tensor, model: GPT | None = None):
        """`model` (default the model) guided toward the text of prompt `ids` at `scale` (one, or (B,) one per
        row), against the same MIDI span without text; the plain model when no row is guided or the prompt has
        no text."""
        model = model if model is not None else self.model
        guided = bool((torch.as_tensor(scale) != 1.0).any())
        if not guided or ids.index(MIDI) <= 1:
            return model
        given = ids[ids.index(MIDI) + 1:]
        return ClassifierFreeGuidance(model, self.vocabulary.encode(eos=False) + [MIDI] + given, scale)

    def _extend(self, generated: list[Generated], prompt, mode, max_bars: int, window: int, temperature: float,
                top_k: int, top_p: float, seed: int, guidance_scale: float,
                on_token: Callable | None, step: int = 0, copies=None) -> list[Generated]:
        """Each row written on, window by window, to `max_bars` bars: a window keeps the last half of the one
        before as its start and writes the rest (sampled, also after a beam search), so every join is a
        continuation the model learned. A row whose window ends without a new bar stops
        there; on_token (every row's whole span so far, at each token) returning True stops them all."""
        keep = max(window // 2, 1)
        segments = [g.segment for g in generated]
        done = [False] * len(segments)
        stopped = False

        def spans() -> list[list[int]]:
            return [self.vocabulary.encode_midi(encode_segment(s, "remi").tolist()) for s in segments]

        for window_index in range(1, max_bars):
            for row, segment in enumerate(segments):
                have = segment.num_bars
                if done[row] or have >= max_bars:
                    done[row] = True
                    continue
                context = bars_window(segment, have - keep, keep)
                if not len(context.notes):   # nothing to continue from: the row ends where it is
                    done[row] = True
                    continue
                shown = spans() if on_token is not None else None

                def watch(_, rows):   # the live view shows what is stitched so far
                    nonlocal step
                    step += 1
                    return on_token(step, shown)
                (more,) = self._generate_window(prompt, mode, 1, temperature, top_k, top_p, 1, 1.0, window,
                                                0, seed + 7919 * window_index + row, context, keep,
                                                watch if on_token is not None else None, guidance_scale,
                                                copies=copies)
                new_bars = more.segment.num_bars - keep
                if new_bars <= 0:
                    done[row] = True
                    continue
                written = more.segment.notes[more.segment.notes["start"] >= keep * segment.bar_length].copy()
                written["start"] += (have - keep) * segment.bar_length
                segments[row] = first_bars(replace(segment, notes=np.concatenate([segment.notes, written]),
                                                   num_bars=have + new_bars), max_bars)
                stopped = on_token is not None and bool(on_token(step, spans()))
                if stopped:
                    break
            if stopped or all(done) or all(s.num_bars >= max_bars for s in segments):
                break
        return [Generated(s, tokens, g.ended and not stopped) for s, tokens, g in zip(segments, spans(), generated)]

    def token_budget(self, prompt: str | None = None, mode: str | None = None, continue_from: Segment | None = None,
                     keep_bars: int = 0, max_bars: int = 4) -> int:
        """How many tokens generation may write after this prompt (the model's context minus the prompt), for
        every window `max_bars` takes (generate)."""
        ids = self.prompt_ids(prompt if prompt is not None else prompt_for(mode), continue_from,
                              keep_bars if continue_from is not None else 0)
        budget = self.model.config.block_size - len(ids)
        if budget <= 0:
            raise StudioError("the prompt and the bars to continue fill the model's whole context; shorten them")
        window, first = self.windows(max_bars, keep_bars if continue_from is not None else 0)
        keep = max(window // 2, 1)
        return budget * (1 + -(-(max_bars - first) // (window - keep)))

    def windows(self, max_bars: int, kept: int = 0) -> tuple[int, int]:
        """(the bars of one window: the segments the model learned, the bars the first window writes to)."""
        window = int(self.data.get("segment_bars", 4))
        return window, max_bars if max_bars <= window else max(window, kept + 1)

    def partial_segment(self, midi_ids: list[int], max_bars: int = 4) -> Segment | None:
        """The notes of a MIDI span still being written (the live view); None while it decodes to nothing."""
        try:
            return self.to_generated(list(midi_ids), max_bars).segment
        except Exception:  # noqa: BLE001  (a half-written note or bar may not decode yet)
            return None

    def to_generated(self, midi_ids: list[int], max_bars: int = 4) -> Generated:
        """A MIDI span -> Generated; notes held past the end of bar `max_bars` are cut there."""
        ended = bool(midi_ids) and midi_ids[-1] == EOS
        tokens = [t for t in midi_ids if t != EOS]
        remi = self.vocabulary.decode_midi(tokens)
        segment = decode_tokens(remi, "remi") if remi else Segment(notes=np.zeros(0, dtype=NOTE_DTYPE))
        return Generated(segment=first_bars(segment, max_bars), tokens=tokens, ended=ended)


def audio_codec_problem(engine: TrainedAutoregressive, codec) -> str | None:
    """Why `engine` cannot write audio for `codec` (None: it can): no audio task, no codec, or another codec than
    the one whose tokens it learned."""
    from engines.data.audio_tokens import codec_fingerprint

    task = engine.audio_task or {}
    if not task:
        return "this GPT checkpoint never learned to write audio tokens (its audio task is untrained)"
    if codec is None:
        return "no audio codec is installed (assets/checkpoints/codec.pt) to decode the GPT's audio tokens"
    fingerprint = getattr(codec, "fingerprint", None) or codec_fingerprint(codec)
    codec.fingerprint = fingerprint   # the weights are hashed once per loaded codec
    if fingerprint != task.get("codec_fingerprint"):
        return ("the GPT learned the audio tokens of another codec than the one installed "
                f"({task.get('codec_checkpoint', 'unknown')}); retrain its audio task with this codec")
    return None


def model_audio(engine: TrainedAutoregressive, codec, segment: Segment, seed: int = 0, soundfont: str = "",
                gain: float = 0.5) -> np.ndarray:
    """The GPT's own audio for `segment`: its audio tokens decoded by `codec`, mono float32 at the codec's rate,
    brought to the loudness of the FluidSynth render of the same opening bars (with `soundfont` and `gain`), so
    the two play alike (where that render is silent, as the codec decodes it). StudioError unless the GPT
    learned that codec's tokens."""
    from engines.data.audio_tokens import render_opening

    problem = audio_codec_problem(engine, codec)
    if problem:
        raise StudioError(problem)
    (codes,) = engine.write_audio(segment, seed=seed)
    decoded = codec.decode(torch.as_tensor(codes)).numpy()
    reference = render_opening(segment, len(decoded) / codec.config.sample_rate, codec.config.sample_rate,
                               soundfont, gain)
    level, own = float(np.sqrt((reference ** 2).mean())), float(np.sqrt((decoded ** 2).mean()))
    return (decoded * (level / own) if own > 1e-8 and level > 1e-6 else decoded).astype(np.float32)


def bars_prefix(segment: Segment, bars: int) -> list[int]:
    """REMI ids of the first `bars` bars of `segment` and the Bar token that opens the next one, so that the
    model continues in a new bar instead of adding notes to the kept ones."""
    remi = encode_segment(segment, "remi").tolist()
    bar_id = remi_token_names().index("Bar_None")
    starts = [i for i, t in enumerate(remi) if t == bar_id]
    if len(starts) < bars and segment.num_bars >= bars:
        # silent bars at the end are not written: they are kept as bars with nothing in them (Bar, TimeSig)
        empty_bar = [bar_id, remi_token_names().index(f"TimeSig_{segment.ts_num}/{segment.ts_den}")]
        return remi + empty_bar * (bars - len(starts)) + [bar_id]
    if len(starts) < bars:
        raise StudioError(f"the MIDI to continue has {len(starts)} bar(s); cannot keep {bars}")
    return (remi[:starts[bars]] if len(starts) > bars else remi) + [bar_id]
