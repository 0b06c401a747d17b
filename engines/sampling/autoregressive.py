"""Sampling strategies for the autoregressive engine, written once for the CLI, the studio and `evaluate`.

    filter_logits     temperature, top-k and top-p (nucleus, Holtzman et al.) on a (B, V) logits row
    RemiGrammar       which ids may come next in a MIDI span, so every generated span decodes (below)
    AudioGrammar      the same for an audio span: codebooks 0..q-1 of each frame in turn, then <eos> after
                      `frames` frames (the MIDI -> audio task)
    sample_tokens     ancestral sampling of n continuations of one prompt with a KV cache
    sample_token_groups  the same for several requests' rows of one prompt, each with its own settings and seed
    beam_search       the most probable continuation under a length penalty (Wu et al. 2016)
    ClassifierFreeGuidance  the model pushed toward its prompt: uncond + scale * (cond - uncond)

Both generators take the model as `model(idx, cache=cache) -> (logits (B, 1, V), _)` with `model.new_cache()`
(engines/models/gpt.py), stop at <eos>, after `max_new_tokens`, or once `max_bars` bars are written, and call
`on_token(step, rows)` after every token: returning True stops early (the studio's Stop button).

The grammar follows the order REMI writes (miditok's REMI with time signatures and tempos):

    Bar -> TimeSig -> ( Position -> [Tempo] -> ( Pitch -> Velocity -> Duration )* )* -> Bar | <eos>

Positions rise within a bar and stay below the bar's length (ts_num * beat resolution); every bar keeps the
first bar's time signature (a segment has one metre); a tempo comes only right after the first bar's
Position_0, where a segment keeps its one tempo (it may stand alone there: a segment that opens with a rest
writes Position_0 Tempo, then the position of its first note);
<eos> may follow a complete note (or an empty bar) once a note exists; a `max_bars` + 1-th Bar is never
allowed, so the span ends with <eos> there.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from engines.errors import StudioError
from engines.tokenizers.midi import BEAT_RESOLUTION
from engines.tokenizers.vocabulary import AUDIO, EOS, MIDI, UnifiedVocabulary

KINDS = ("Bar", "TimeSig", "Position", "Tempo", "Pitch", "Velocity", "Duration")
# kind of the last MIDI token -> kinds that may follow ("start": right after <midi>)
NEXT = {"start": ("Bar",), "Bar": ("TimeSig",), "TimeSig": ("Position", "Bar"), "Position": ("Tempo", "Pitch"),
        "Tempo": ("Pitch", "Position", "Bar"), "Pitch": ("Velocity",), "Velocity": ("Duration",),
        "Duration": ("Pitch", "Position", "Bar")}


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits (B, V) -> logits with everything outside the top-k and the top-p nucleus at -inf, divided by
    the temperature. top_k 0 and top_p 1 switch those filters off; the most probable id always survives."""
    if not temperature > 0:
        raise StudioError(f"temperature must be > 0, got {temperature}")
    if top_k < 0 or not 0 < top_p <= 1:
        raise StudioError(f"top_k must be >= 0 and top_p in (0, 1], got {top_k} and {top_p}")
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        # drop an id when the ids before it already hold top_p of the mass
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


ROW_BUCKET = 8   # sampling computes a multiple of this many rows (or all of them) while rows end


@dataclass
class GrammarState:
    last: str = "start"        # kind of the last MIDI token
    bars: int = 0              # Bar tokens written
    position: int = -1         # last Position in the current bar
    time_signature: int = -1   # id of the first bar's TimeSig token
    bar_positions: int = 0     # positions in a bar of that time signature
    tempo_written: bool = False
    notes: int = 0
    done: bool = False


class RemiGrammar:
    """Masks over the unified vocabulary that keep a MIDI span in REMI's order (module docstring)."""

    marker = MIDI   # the span it rules opens with this marker

    def __init__(self, vocabulary: UnifiedVocabulary, max_bars: int = 0):
        self.vocabulary, self.max_bars = vocabulary, max_bars
        size = len(vocabulary)
        self.kind_masks = {kind: torch.zeros(size, dtype=torch.bool) for kind in KINDS}
        self.kind_of: dict[int, str] = {}
        self.value_of: dict[int, int] = {}   # Position -> index, TimeSig -> positions per bar
        self.positions = torch.full((size,), -1, dtype=torch.long)
        for i, name in enumerate(vocabulary.midi_tokens):
            kind, _, value = name.partition("_")
            if kind not in self.kind_masks:
                continue  # PAD/BOS/EOS/MASK of miditok, drum pitches: never generated
            token = vocabulary.midi_start + i
            self.kind_masks[kind][token] = True
            self.kind_of[token] = kind
            if kind == "Position":
                self.positions[token] = int(value)
            elif kind == "TimeSig":
                self.value_of[token] = int(value.split("/")[0]) * BEAT_RESOLUTION

    def start(self, prefix: list[int] = ()) -> GrammarState:
        """The state after the MIDI tokens `prefix` (a continuation's given bars); StudioError if they break
        the grammar."""
        return _follow(self, GrammarState(), prefix, "the MIDI to continue does not follow REMI's order")

    def allowed(self, state: GrammarState) -> torch.Tensor:
        """(V,) bool: the ids that may come next."""
        mask = torch.zeros(len(self.vocabulary), dtype=torch.bool)
        if state.done:
            mask[EOS] = True
            return mask
        for kind in NEXT[state.last]:
            if kind == "Bar" and self.max_bars and state.bars >= self.max_bars:
                continue
            if kind == "Tempo" and (state.tempo_written or state.bars != 1 or state.position != 0):
                continue
            if kind == "Position":
                mask |= self.kind_masks["Position"] & (self.positions > state.position) & \
                        (self.positions < state.bar_positions)
            elif kind == "TimeSig" and state.time_signature >= 0:
                mask[state.time_signature] = True
            else:
                mask |= self.kind_masks[kind]
        if state.notes and state.last in ("Duration", "TimeSig"):
            mask[EOS] = True
        return mask

    def advance(self, state: GrammarState, token: int) -> None:
        if token == EOS:
            state.done = True
            return
        kind = self.kind_of.get(token)
        if kind is None:
            raise StudioError(f"'{self.vocabulary.name(token)}' is not a MIDI token the grammar knows")
        if kind == "Bar":
            state.bars += 1
            state.position = -1
        elif kind == "TimeSig":
            if state.time_signature < 0:
                state.time_signature, state.bar_positions = token, self.value_of[token]
        elif kind == "Position":
            state.position = int(self.positions[token])
        elif kind == "Tempo":
            state.tempo_written = True
        elif kind == "Duration":
            state.notes += 1
        state.last = kind


@dataclass
class AudioState:
    written: int = 0           # audio tokens written so far
    done: bool = False


class AudioGrammar:
    """Masks that keep an audio span whole: frame by frame, codebook 0 .. codebooks-1 of each frame (the
    vocabulary's flattening; codebook q's ids are its own range), and <eos> once `frames` frames are written.
    `codebooks` may be fewer than the vocabulary's audio range holds: the coarse ones, which the codec decodes
    alone."""

    marker = AUDIO

    def __init__(self, vocabulary: UnifiedVocabulary, frames: int, codebooks: int | None = None):
        codebooks = vocabulary.audio_codebooks if codebooks is None else codebooks
        if not 1 <= codebooks <= vocabulary.audio_codebooks:
            raise StudioError(f"an audio span uses 1..{vocabulary.audio_codebooks} codebooks of this vocabulary, "
                              f"got {codebooks}")
        if frames < 1:
            raise StudioError(f"an audio span needs at least one frame, got {frames}")
        self.vocabulary, self.frames, self.codebooks = vocabulary, int(frames), int(codebooks)
        size, bins = len(vocabulary), vocabulary.audio_bins
        self.masks = []
        for q in range(self.codebooks):
            mask = torch.zeros(size, dtype=torch.bool)
            mask[vocabulary.audio_start + q * bins:vocabulary.audio_start + (q + 1) * bins] = True
            self.masks.append(mask)
        self.end = torch.zeros(size, dtype=torch.bool)
        self.end[EOS] = True

    def start(self, prefix: list[int] = ()) -> AudioState:
        return _follow(self, AudioState(), prefix, "the audio tokens given are out of codebook order")

    def allowed(self, state: AudioState) -> torch.Tensor:
        if state.done or state.written >= self.frames * self.codebooks:
            return self.end
        return self.masks[state.written % self.codebooks]

    def advance(self, state: AudioState, token: int) -> None:
        if token == EOS:
            state.done = True
        else:
            state.written += 1


def _follow(grammar, state, prefix, problem: str):
    """`state` advanced by the tokens `prefix` under `grammar`; StudioError naming `problem` and the first token
    the grammar does not allow."""
    for token in prefix:
        if not bool(grammar.allowed(state)[token]):
            raise StudioError(f"{problem} at token '{grammar.vocabulary.name(int(token))}'")
        grammar.advance(state, int(token))
    return state


class PairCache:
    """The KV caches of the conditional and the unconditional stream of ClassifierFreeGuidance, and the guidance
    scale of each of their rows (a float: the same for every row)."""

    def __init__(self, conditional, unconditional, scale: float | torch.Tensor = 1.0):
        self.conditional, self.unconditional, self.scale = conditional, unconditional, scale

    @property
    def length(self) -> int:
        return self.conditional.length

    def select(self, rows: torch.Tensor) -> None:
        self.conditional.select(rows)
        self.unconditional.select(rows)
        self.scale = _scale_of_rows(self.scale, rows)


class GuidedCache:
    """The KV cache of ClassifierFreeGuidance's two streams run as one batch: rows 0..B-1 read the prompt, rows
    B..2B-1 the unconditional prompt (the shorter one left-padded, its padding blocked), and each row's scale."""

    def __init__(self, cache, scale: float | torch.Tensor = 1.0):
        self.cache, self.scale = cache, scale

    @property
    def length(self) -> int:
        return self.cache.length

    def select(self, rows: torch.Tensor) -> None:
        half = self.cache.keys[0].shape[0] // 2 if self.cache.keys[0] is not None else 0
        self.cache.select(torch.cat([rows, rows + half]))
        self.scale = _scale_of_rows(self.scale, rows)


def _scale_of_rows(scale: float | torch.Tensor, rows: torch.Tensor) -> float | torch.Tensor:
    """The guidance scale of the rows a cache keeps: a float is every row's."""
    return scale[rows.to(scale.device)] if isinstance(scale, torch.Tensor) else scale


class ClassifierFreeGuidance:
    """The model, guided: logits = uncond + scale * (cond - uncond) (Ho & Salimans; for language models Sanchez
    et al. 2023), where cond reads the prompt and uncond reads `unconditional_prompt`: for prompt guidance the
    same MIDI span with no text (the model was trained on both); for the GPT's audio a contrast, the same bars
    a tritone off (TrainedAutoregressive.write_audio). Scale 1 is the plain conditional model. It stands in for
    the model in sample_tokens and beam_search: the first call reads the prompt, later calls feed each new token
    to both streams."""

    def __init__(self, model, unconditional_prompt: list[int], scale: float | torch.Tensor):
        # scale: one for every row, or (B,) one per row (requests sharing a batch each keep their own); the
        # cache carries it, so rows dropped from the batch drop their scale too
        self.model, self.unconditional_prompt = model, list(unconditional_prompt)
        self.scale = scale[:, None, None] if isinstance(scale, torch.Tensor) else float(scale)
        self.config = model.config

    def parameters(self):
        return self.model.parameters()

    def new_cache(self) -> PairCache | GuidedCache:
        # with rotary positions attention sees only how far apart tokens are, so a prompt moved right by its
        # padding reads the same and both streams run as one batch (1.3-1.4x a step at 128 rows); learned
        # positions keep two
        if getattr(self.config, "positions", None) == "rotary":
            return GuidedCache(self.model.new_cache(), self.scale)
        return PairCache(self.model.new_cache(), self.model.new_cache(), self.scale)

    def __call__(self, idx: torch.Tensor, cache: PairCache | GuidedCache):
        if isinstance(cache, GuidedCache):
            return self._together(idx, cache)
        plain = idx
        if cache.conditional.length == 0:  # the prompt: the unconditional stream reads its own
            plain = torch.tensor([self.unconditional_prompt] * idx.shape[0], device=idx.device)
        conditional, _ = self.model(idx, cache=cache.conditional)
        unconditional, _ = self.model(plain, cache=cache.unconditional)
        return unconditional + cache.scale * (conditional - unconditional), None

    def _together(self, idx: torch.Tensor, cache: GuidedCache):
        rows = idx.shape[0]
        if cache.length == 0:   # the prompts, each left-padded to the longer one
            plain = torch.tensor([self.unconditional_prompt] * rows, device=idx.device)
            width = max(idx.shape[1], plain.shape[1])
            pads = [width - idx.shape[1], width - plain.shape[1]]
            both = torch.cat([F.pad(idx, (pads[0], 0)), F.pad(plain, (pads[1], 0))])
            blocked = torch.zeros(2 * rows, width, dtype=torch.bool, device=idx.device)
            blocked[:rows, :pads[0]] = True
            blocked[rows:, :pads[1]] = True
            cache.cache.blocked = blocked if any(pads) else None
        else:
            both = torch.cat([idx, idx])
        logits, _ = self.model(both, cache=cache.cache)
        conditional, unconditional = logits[:rows], logits[rows:]
        return unconditional + cache.scale * (conditional - unconditional), None


def _grammar_states(grammar: RemiGrammar | AudioGrammar | None, prompt: list[int], n: int) -> list | None:
    if grammar is None:
        return None
    marker = grammar.marker
    if marker not in prompt:
        kind = "a MIDI span (<midi>)" if marker == MIDI else "an audio span (<audio>)"
        raise StudioError(f"grammar-aware sampling needs a prompt that opens {kind}")
    prefix = prompt[len(prompt) - prompt[::-1].index(marker):]
    first = grammar.start(prefix)
    return [copy.copy(first) for _ in range(n)]


@dataclass
class RowGroup:
    """Rows of one request in a batch several requests share (engines/generation/batching.py): sampled with its
    own settings from its own generator, so they are the rows it would get alone."""

    rows: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None
    guidance_scale: float = 1.0     # its prompt guidance (the caller builds ClassifierFreeGuidance from these)


@torch.no_grad()
def sample_tokens(model, prompt: list[int], n: int = 1, max_new_tokens: int = 256, temperature: float = 1.0,
                  top_k: int = 0, top_p: float = 1.0, grammar: RemiGrammar | AudioGrammar | None = None,
                  generator: torch.Generator | None = None,
                  on_token: Callable[[int, list[list[int]]], bool | None] | None = None) -> list[list[int]]:
    """n sampled continuations of `prompt` (each without the prompt, ending with <eos> when it ended)."""
    return sample_token_groups(model, prompt, [RowGroup(n, temperature, top_k, top_p, generator)], max_new_tokens,
                               grammar, on_token)


@torch.no_grad()
def sample_token_groups(model, prompt: list[int], groups: list[RowGroup], max_new_tokens: int = 256,
                        grammar: RemiGrammar | AudioGrammar | None = None,
                        on_token: Callable[[int, list[list[int]]], bool | None] | None = None) -> list[list[int]]:
    """sample_tokens for several groups of rows of one prompt in one batch: each group's rows (in group order)
    filtered by its own settings and drawn from its own generator."""
    device = next(model.parameters()).device
    max_new_tokens = min(max_new_tokens, model.config.block_size - len(prompt))
    if max_new_tokens <= 0:
        raise StudioError(f"the prompt is {len(prompt)} tokens; the model reads at most {model.config.block_size}")
    n = sum(group.rows for group in groups)
    spans = [(sum(g.rows for g in groups[:i]), sum(g.rows for g in groups[:i + 1])) for i in range(len(groups))]
    states = _grammar_states(grammar, prompt, n)
    cache = model.new_cache()
    logits, _ = model(torch.tensor([prompt] * n, device=device), cache=cache)
    rows: list[list[int]] = [[] for _ in range(n)]
    finished = torch.zeros(n, dtype=torch.bool)
    computed = torch.arange(n)   # the rows the model still computes, in the cache's order
    for step in range(max_new_tokens):
        if len(computed) == n:
            scores = logits[:, -1].float().cpu()
        else:   # rows that ended are not computed: they draw <eos> from any scores (the grammar allows no other)
            scores = torch.zeros(n, logits.shape[-1])
            scores[computed] = logits[:, -1].float().cpu()
        if states is not None:
            scores = scores.masked_fill(~torch.stack([grammar.allowed(s) for s in states]), float("-inf"))
        # one draw per row of every row, ended or not: torch draws a fixed amount of noise per row for one sample,
        # so each row's tokens do not depend on when the others ended
        chosen = torch.cat([torch.multinomial(filter_logits(scores[a:b], g.temperature, g.top_k, g.top_p).softmax(-1),
                                              1, generator=g.generator).squeeze(1)
                            for g, (a, b) in zip(groups, spans)])
        chosen = torch.where(finished, torch.full_like(chosen, EOS), chosen)
        for i, token in enumerate(chosen.tolist()):
            if not finished[i]:
                rows[i].append(token)
                if states is not None:
                    grammar.advance(states[i], token)
        finished |= chosen == EOS
        if finished.all() or (on_token is not None and on_token(step, rows)):
            break
        ended = finished[computed]
        # drop the rows that ended, keeping a multiple of ROW_BUCKET rows computed: a copy of their cache costs
        # about a third of a step, and every new batch size makes oneDNN build (and keep) new kernels
        live = int((~ended).sum())
        bucket = min(len(computed), -(-live // ROW_BUCKET) * ROW_BUCKET)
        if len(computed) - bucket >= max(1, len(computed) // 8):
            keep = torch.cat([torch.nonzero(~ended).squeeze(1), torch.nonzero(ended).squeeze(1)[:bucket - live]])
            keep = keep.sort().values
            cache.select(keep)
            computed = computed[keep]
        logits, _ = model(chosen[computed][:, None].to(device), cache=cache)
    return rows


@torch.no_grad()
def beam_search(model, prompt: list[int], width: int = 4, max_new_tokens: int = 256, length_penalty: float = 1.0,
                grammar: RemiGrammar | None = None,
                on_token: Callable[[int, list[list[int]]], bool | None] | None = None) -> list[int]:
    """The continuation of `prompt` with the best sum of log-probabilities / length ** length_penalty among
    `width` beams (length_penalty 0: raw sums, which favour short outputs; 1: per-token average)."""
    if width < 1:
        raise StudioError(f"beam width must be at least 1, got {width}")
    device = next(model.parameters()).device
    max_new_tokens = min(max_new_tokens, model.config.block_size - len(prompt))
    if max_new_tokens <= 0:
        raise StudioError(f"the prompt is {len(prompt)} tokens; the model reads at most {model.config.block_size}")
    states = _grammar_states(grammar, prompt, 1)
    cache = model.new_cache()
    logits, _ = model(torch.tensor([prompt], device=device), cache=cache)
    beams: list[list[int]] = [[]]
    scores = torch.zeros(1)
    finished: list[tuple[float, list[int]]] = []
    normalise = lambda total, length: total / max(length, 1) ** length_penalty  # noqa: E731
    for step in range(max_new_tokens):
        logp = logits[:, -1].float().cpu().log_softmax(-1)  # (beams, V)
        if states is not None:
            logp = logp.masked_fill(~torch.stack([grammar.allowed(s) for s in states]), float("-inf"))
        total = (scores[:, None] + logp).view(-1)
        top = torch.topk(total, min(2 * width, int(torch.isfinite(total).sum())))
        vocab = logp.shape[1]
        keep_rows, keep_tokens, keep_scores = [], [], []
        for value, flat in zip(top.values.tolist(), top.indices.tolist()):
            row, token = divmod(flat, vocab)
            if token == EOS:
                finished.append((normalise(value, len(beams[row]) + 1), beams[row] + [token]))
            else:
                keep_rows.append(row), keep_tokens.append(token), keep_scores.append(value)
            if len(keep_rows) == width:
                break
        best_open = max((normalise(s, len(beams[r]) + 1) for r, s in zip(keep_rows, keep_scores)), default=None)
        if not keep_rows or (len(finished) >= width and best_open is not None
                             and max(f[0] for f in finished) >= best_open):
            break
        beams = [beams[r] + [t] for r, t in zip(keep_rows, keep_tokens)]
        scores = torch.tensor(keep_scores)
        if states is not None:
            states = [copy.copy(states[r]) for r in keep_rows]
            for s, t in zip(states, keep_tokens):
                grammar.advance(s, t)
        rows = torch.tensor(keep_rows, device=device)
        cache.select(rows)
        if on_token is not None and on_token(step, beams):
            break
        logits, _ = model(torch.tensor(keep_tokens, device=device)[:, None], cache=cache)
    if finished:
        return max(finished, key=lambda f: f[0])[1]
    return beams[int(torch.argmax(torch.tensor([normalise(s, len(b)) for s, b in zip(scores.tolist(), beams)])))]
