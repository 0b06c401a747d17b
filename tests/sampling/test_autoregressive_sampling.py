"""Sampling the GPT (engines/sampling/autoregressive.py): filters, the REMI grammar and its masks, and beam
search on a known chain."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from engines.errors import StudioError
from engines.models.gpt import GPT, KVCache
from engines.models.gpt_config import GPTConfig
from engines.sampling.autoregressive import (AudioGrammar, RemiGrammar, beam_search, filter_logits,
                                             sample_tokens)
from engines.tokenizers.midi import decode_tokens
from engines.tokenizers.vocabulary import (AUDIO, BOS, EOS, MIDI)


# ---- sampling ---------------------------------------------------------------------------------------------
def test_top_k_top_p_and_temperature_filter_as_defined():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, top_k=2))[0].tolist() == [True, True, False, False]
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))[0].tolist()
    assert kept == [True, True, False, False]  # 0.5 + 0.3 reach 0.8: the rest goes
    assert torch.isfinite(filter_logits(logits, top_p=0.81))[0].tolist() == [True, True, True, False]
    assert torch.isfinite(filter_logits(logits, top_p=0.01))[0].tolist() == [True, False, False, False]
    assert torch.allclose(filter_logits(logits, temperature=2.0), logits / 2)
    with pytest.raises(StudioError, match="temperature"):
        filter_logits(logits, temperature=0)


def test_every_corpus_segment_follows_the_remi_grammar(vocabulary, corpus_cache):
    grammar = RemiGrammar(vocabulary)
    names = vocabulary.midi_tokens
    # segments that open with a rest write Position_0 Tempo and then their first note's position
    opens_with_rest = [row for row in range(12000)
                       if names[int(corpus_cache.segment_tokens(row)[4])].startswith("Position")][:30]
    assert len(opens_with_rest) == 30
    for row in list(range(0, len(corpus_cache), 61)) + opens_with_rest:
        ids = vocabulary.encode_midi(corpus_cache.segment_tokens(row).astype(int))
        state = grammar.start(ids)
        assert state.bars == corpus_cache.segments["num_bars"][row] and bool(grammar.allowed(state)[EOS])


def test_grammar_masks_keep_positions_rising_and_the_metre_fixed(vocabulary):
    names = vocabulary.midi_tokens
    tok = lambda name: vocabulary.midi_start + names.index(name)  # noqa: E731
    grammar = RemiGrammar(vocabulary, max_bars=1)
    tempo = next(n for n in names if n.startswith("Tempo_"))
    assert grammar.allowed(grammar.start([tok("Bar_None"), tok("TimeSig_3/4"), tok("Position_0")]))[tok(tempo)]
    state = grammar.start([tok("Bar_None"), tok("TimeSig_3/4"), tok("Position_24")])
    allowed = grammar.allowed(state)
    assert allowed[tok("Pitch_60")] and not allowed[tok(tempo)] and not allowed[tok("Velocity_79")]
    assert not allowed[tok("Position_12")] and not allowed[EOS]
    grammar.advance(state, tok("Pitch_60")), grammar.advance(state, tok("Velocity_79"))
    grammar.advance(state, tok("Duration_1.0.24"))
    allowed = grammar.allowed(state)
    assert allowed[tok("Position_48")] and not allowed[tok("Position_24")] and not allowed[tok("Position_72")]
    assert allowed[EOS] and not allowed[tok("Bar_None")]  # max_bars = 1 reached
    with pytest.raises(StudioError, match="REMI's order"):
        grammar.start([tok("Bar_None"), tok("Pitch_60")])


def test_sampling_an_untrained_model_under_the_grammar_always_decodes(vocabulary):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=160, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = vocabulary.encode(text="a calm phrase", eos=False) + [MIDI]
    rows = sample_tokens(model, prompt, n=6, max_new_tokens=150, grammar=RemiGrammar(vocabulary, max_bars=2),
                         generator=torch.Generator().manual_seed(1))
    for row in rows:
        remi = vocabulary.decode_midi([t for t in row if t != EOS])
        assert all(vocabulary.modality_of(t) == "midi" for t in row if t != EOS)
        segment = decode_tokens(remi)
        assert remi.count(names_index(vocabulary, "Bar_None")) <= 2 and segment.num_bars >= 1


def test_an_audio_span_runs_codebook_by_codebook_for_its_frames_then_ends(vocabulary):
    # the session vocabulary has 2 codebooks of 4 bins
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = vocabulary.encode(midi=[4, 5], eos=False) + [AUDIO]
    grammar = AudioGrammar(vocabulary, frames=5)
    rows = sample_tokens(model, prompt, n=4, max_new_tokens=40, grammar=grammar,
                         generator=torch.Generator().manual_seed(2))
    for row in rows:
        assert len(row) == 11 and row[-1] == EOS
        codes = vocabulary.decode_audio(row[:-1])
        assert codes.shape == (2, 5) and codes.max() < 4
    coarse = AudioGrammar(vocabulary, frames=3, codebooks=1)
    state = coarse.start([vocabulary.audio_start + 1, vocabulary.audio_start + 3])
    assert torch.nonzero(coarse.allowed(state)).squeeze(1).tolist() == list(range(vocabulary.audio_start,
                                                                                 vocabulary.audio_start + 4))
    with pytest.raises(StudioError, match="out of codebook order"):
        grammar.start([vocabulary.audio_start + 4])          # codebook 1 where codebook 0 must come
    with pytest.raises(StudioError, match="1..2 codebooks"):
        AudioGrammar(vocabulary, frames=3, codebooks=3)
    with pytest.raises(StudioError, match="opens an audio span"):
        sample_tokens(model, prompt[:-1], grammar=grammar)


def names_index(vocabulary, name: str) -> int:
    return vocabulary.midi_tokens.index(name)


class MarkovModel(torch.nn.Module):
    """Logits that depend on the last token only: a known chain for beam search."""

    def __init__(self, table: dict, size: int = 10):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = GPTConfig(vocab_size=size, block_size=64)
        self.logp = torch.full((size, size), -1e9)
        for last, nexts in table.items():
            for token, p in nexts.items():
                self.logp[last, token] = float(np.log(p))

    def new_cache(self):
        return KVCache(1, self.config.block_size)

    def forward(self, idx, cache=None):
        return self.logp[idx[:, -1]][:, None], None


def test_beam_search_finds_the_likelier_path_greedy_misses():
    # from <bos>: 3 (0.6) then 5|6 (0.5 each) -> 0.30; or 4 (0.4) then 7 (0.9) -> 0.36
    model = MarkovModel({BOS: {3: 0.6, 4: 0.4}, 3: {5: 0.5, 6: 0.5}, 4: {7: 0.9, 8: 0.1}, 5: {EOS: 1.0},
                         6: {EOS: 1.0}, 7: {EOS: 1.0}, 8: {EOS: 1.0}})
    assert beam_search(model, [BOS], width=1) in ([3, 5, EOS], [3, 6, EOS])
    assert beam_search(model, [BOS], width=2) == [4, 7, EOS]
    with pytest.raises(StudioError, match="beam width"):
        beam_search(model, [BOS], width=0)
