"""The autoregressive engine: unified vocabulary, captions, GPT with KV cache, sampling strategies, REMI grammar,
training, generation from prompts and continuation, CLI, API, evaluation and bench rows."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.data.cache import FEATURE_NAMES
from engines.data.captions import SegmentFacts, complexity_level, describe, facts_from_row, mode_named, prompt_for
from engines.errors import StudioError
from engines.models.gpt import GPT, IGNORE, KVCache, model_from_checkpoint
from engines.models.gpt_config import GPTConfig
from engines.sampling.autoregressive import (ROW_BUCKET, RemiGrammar, RowGroup, beam_search, filter_logits,
                                             sample_token_groups, sample_tokens)
from engines.tokenizers.midi import decode_tokens
from engines.tokenizers.vocabulary import (AUDIO, BOS, EOS, MIDI, SPECIALS, TEXT, UNK, UnifiedVocabulary,
                                           remi_token_names, split_words)
from tests.conftest import note_tuples

TINY_GPT = ["model.autoregressive.n_layer=1", "model.autoregressive.n_head=2", "model.autoregressive.n_embd=32",
            "model.autoregressive.batch_size=16", "model.autoregressive.epochs=1",
            "model.autoregressive.captions_per_segment=2", "model.autoregressive.copy_check_samples=4"]


@pytest.fixture(scope="module")
def cache():
    from engines.data.prepare import ensure_corpus_cache

    return ensure_corpus_cache(load_config())


@pytest.fixture(scope="module")
def vocabulary():
    return UnifiedVocabulary.build(["a calm, intimate BLUE phrase", "generate a RED segment in 3/4", "a calm one"],
                                   remi_token_names(), audio_codebooks=2, audio_bins=4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A GPT of one layer trained for an epoch on 64 segments by the project's trainer (seconds)."""
    from engines.training.autoregressive_trainer import train_autoregressive

    folder = tmp_path_factory.mktemp("gpt")
    best = train_autoregressive(load_config(overrides=TINY_GPT), folder / "run", limit=64, workers=0)
    shutil.copyfile(folder / "run" / "best.pt", folder / "autoregressive.pt")
    return folder, best


# ---- vocabulary -------------------------------------------------------------------------------------------
def test_vocabulary_ranges_follow_specials_text_midi_audio(vocabulary):
    v = vocabulary
    assert v.text_start == len(SPECIALS) and v.midi_start == v.text_start + len(v.words)
    assert v.audio_start == v.midi_start + len(remi_token_names()) and len(v) == v.audio_start + 8
    assert v.words[0] == "a"  # most frequent first
    assert [v.modality_of(i) for i in (0, v.text_start, v.midi_start, v.audio_start)] == \
           ["special", "text", "midi", "audio"]
    with pytest.raises(StudioError, match="outside the vocabulary"):
        v.modality_of(len(v))


def test_text_round_trips_and_unknown_words_become_unk(vocabulary):
    assert split_words("A calm, intimate BLUE phrase in 3/4") == ["a", "calm", ",", "intimate", "blue", "phrase",
                                                                  "in", "3/4"]
    ids = vocabulary.encode_text("a calm, intimate BLUE phrase")
    assert vocabulary.decode_text(ids) == "a calm, intimate blue phrase"
    assert vocabulary.encode_text("a purple phrase")[1] == UNK


def test_midi_span_round_trips_a_corpus_segment(vocabulary, cache):
    remi = cache.segment_tokens(3).astype(int)
    ids = vocabulary.encode(text="a calm phrase", midi=remi)
    assert ids[0] == BOS and ids[1] == TEXT and ids[-1] == EOS and MIDI in ids
    spans = vocabulary.spans(ids)
    assert set(spans) == {"text", "midi"} and vocabulary.decode_midi(spans["midi"]) == remi.tolist()
    decoded = vocabulary.decode(ids)
    assert decoded["text"] == "a calm phrase"
    assert note_tuples(decoded["midi"].notes) == note_tuples(decode_tokens(remi).notes)


def test_audio_codes_flatten_frame_by_frame_and_come_back(vocabulary):
    codes = np.array([[0, 1, 2], [3, 2, 1]])  # [n_q, frames]
    ids = vocabulary.encode_audio(codes)
    a = vocabulary.audio_start
    assert ids == [a + 0, a + 4 + 3, a + 1, a + 4 + 2, a + 2, a + 4 + 1]
    assert (vocabulary.decode_audio(ids + [a]) == codes).all()  # a trailing partial frame is dropped
    assert (vocabulary.decode(vocabulary.encode(audio=codes))["audio"] == codes).all()
    with pytest.raises(StudioError, match="codebook order"):
        vocabulary.decode_audio([ids[1], ids[0]])
    with pytest.raises(StudioError, match=r"shaped \[2, frames\]"):
        vocabulary.encode_audio(np.zeros((3, 2), int))
    assert AUDIO in vocabulary.encode(audio=codes)


def test_vocabulary_saves_as_json_and_refuses_another_format(vocabulary):
    data = json.loads(json.dumps(vocabulary.to_dict()))
    assert UnifiedVocabulary.from_dict(data) == vocabulary
    with pytest.raises(StudioError, match="another version"):
        UnifiedVocabulary.from_dict({**data, "format": 99})


# ---- captions ---------------------------------------------------------------------------------------------
def _facts(**kw) -> SegmentFacts:
    values = dict(mode="BLUE", axes={"energy": 0.1, "valence": 0.2, "tension": 0.5, "intimacy": 0.9, "motion": 0.2},
                  temporal_complexity=0.7, rebracketing=0.9, key="D minor", metre="3/4", notes_per_bar=3,
                  register=50.0)
    values.update(kw)
    return SegmentFacts(**values)


def test_captions_vary_but_are_reproducible_and_say_true_things():
    captions = [describe(_facts(), np.random.default_rng(i)) for i in range(60)]
    assert captions == [describe(_facts(), np.random.default_rng(i)) for i in range(60)]
    assert len(set(captions)) > 30
    joined = " ".join(captions)
    for word in ("BLUE", "high temporal complexity", "D minor", "3/4", "intimate"):
        assert word in joined
    for wrong in ("RED", "low temporal complexity", "energetic", "E major"):
        assert wrong not in joined
    assert 0.6 < np.mean(["BLUE" in c for c in captions]) < 1.0  # the mode is sometimes left out
    assert not any(" a excerpt" in c or " a intimate" in c for c in captions)


def test_caption_facts_come_from_the_cache_row(cache):
    row = cache.segments[10]
    facts = facts_from_row(row, FEATURE_NAMES)
    assert facts.metre == f"{row['ts_num']}/{row['ts_den']}" and 0 <= facts.axes["valence"] <= 1
    assert complexity_level(0.2) == "low" and complexity_level(0.5) == "medium" and complexity_level(0.9) == "high"
    assert prompt_for("RED", "high") == "generate a RED segment with high temporal complexity"
    assert prompt_for("ORANGE") == "generate an ORANGE segment" and prompt_for(None) == "generate a segment"
    assert mode_named("a calm, intimate Blue phrase") == "BLUE" and mode_named("a calm phrase") is None


# ---- GPT --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", ["rotary", "learned"])
def test_kv_cache_gives_the_same_logits_as_the_full_forward(positions):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                          positions=positions)).eval()
    idx = torch.randint(0, 50, (2, 12))
    full, _ = model(idx, torch.zeros_like(idx))
    cache = model.new_cache()
    first, _ = model(idx[:, :5], cache=cache)
    steps = [first[:, -1]] + [model(idx[:, i:i + 1], cache=cache)[0][:, -1] for i in range(5, 12)]
    assert torch.allclose(torch.stack(steps[1:], 1), full[:, 5:], atol=1e-5)
    assert torch.allclose(steps[0], full[:, 4], atol=1e-5)
    assert cache.length == 12
    cache = model.new_cache()
    model(idx[:, :5], cache=cache)
    several, _ = model(idx[:, 5:9], cache=cache)  # several new tokens at once after a cache
    assert torch.allclose(several[:, -1], full[:, 8], atol=1e-5)


def test_kv_cache_grows_a_chunk_at_a_time_and_refuses_more_than_its_capacity():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=160, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()
    cache = model.new_cache()
    model(torch.randint(0, 50, (1, 3)), cache=cache)
    buffer = cache.keys[0]
    assert buffer.shape == (1, 2, KVCache.CHUNK, 8) and cache.length == 3   # room for what is written, not 160
    model(torch.randint(0, 50, (1, 1)), cache=cache)
    assert cache.keys[0] is buffer and cache.length == 4  # no reallocation per token
    model(torch.randint(0, 50, (1, KVCache.CHUNK)), cache=cache)
    assert cache.keys[0].shape[2] == 2 * KVCache.CHUNK and torch.equal(cache.keys[0][:, :, :4], buffer[:, :, :4])
    model(torch.randint(0, 50, (1, 160 - cache.length)), cache=cache)
    assert cache.keys[0].shape[2] == 160   # the last chunk stops at the block size
    k = torch.zeros(1, 2, 1, 8)
    with pytest.raises(ValueError, match="holds 160 tokens; 161"):
        cache.extend(0, k, k)


def test_kv_cache_keeps_the_rows_selected_and_they_go_on_as_before():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=64, n_layer=2, n_head=2, n_embd=16, dropout=0.0)).eval()
    idx = torch.randint(0, 50, (4, 9))
    cache = model.new_cache()
    model(idx[:, :8], cache=cache)
    cache.select(torch.tensor([3, 1]))
    kept, _ = model(idx[[3, 1], 8:], cache=cache)
    full, _ = model(idx)
    assert cache.keys[0].shape[0] == 2 and cache.length == 9
    assert torch.allclose(kept, full[[3, 1]], atol=1e-5)


@pytest.mark.parametrize("guided", [False, True])
def test_rows_that_end_leave_the_batch_and_every_row_samples_as_if_alone(vocabulary, guided):
    from engines.sampling.autoregressive import ClassifierFreeGuidance

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=160, n_layer=1, n_head=2, n_embd=16)).eval()
    plain = vocabulary.encode(eos=False) + [MIDI]
    if guided:   # prompt guidance: both streams in one batch, each row with its own scale
        scales = torch.linspace(1.5, 3.0, 20)
        guide = lambda rows: ClassifierFreeGuidance(model, plain, scales[rows])  # noqa: E731
    else:
        guide = lambda rows: model  # noqa: E731
    batch_sizes = []

    class Watched:   # the model, recording how many rows each step computes
        config = model.config

        inner = guide(torch.arange(20))

        def parameters(self):
            return model.parameters()

        def new_cache(self):
            return self.inner.new_cache()

        def __call__(self, idx, cache):
            batch_sizes.append(idx.shape[0])
            return self.inner(idx, cache=cache)

    prompt = vocabulary.encode(text="a calm phrase", eos=False) + [MIDI]
    grammar = RemiGrammar(vocabulary, max_bars=2)
    groups = [RowGroup(1, 1.0, 0, 1.0, torch.Generator().manual_seed(seed)) for seed in range(20)]
    together = sample_token_groups(Watched(), prompt, groups, 150, grammar)
    alone = [sample_token_groups(guide(torch.tensor([seed])), prompt, [group], 150, grammar)[0]
             for seed, group in enumerate(RowGroup(1, 1.0, 0, 1.0, torch.Generator().manual_seed(seed))
                                          for seed in range(20))]
    assert together == alone
    assert len({len(row) for row in together}) > 1
    # rows that ended were not computed, in whole buckets of rows (few batch sizes: few kernels built)
    assert batch_sizes[0] == 20 and min(batch_sizes) < 20
    assert all(size == 20 or size % ROW_BUCKET == 0 for size in batch_sizes)


def test_gpt_loss_skips_ignored_targets_and_weights_are_tied():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, block_size=16, n_layer=1, n_head=2, n_embd=8))
    assert model.lm_head.weight is model.wte.weight
    idx = torch.randint(0, 20, (1, 6))
    targets = idx.clone()
    targets[0, :3] = IGNORE
    logits, loss = model(idx, targets)
    expected = torch.nn.functional.cross_entropy(logits[0, 3:], idx[0, 3:])
    assert torch.allclose(loss, expected)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


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


def test_every_corpus_segment_follows_the_remi_grammar(vocabulary, cache):
    grammar = RemiGrammar(vocabulary)
    names = vocabulary.midi_tokens
    # segments that open with a rest write Position_0 Tempo and then their first note's position
    opens_with_rest = [row for row in range(12000)
                       if names[int(cache.segment_tokens(row)[4])].startswith("Position")][:30]
    assert len(opens_with_rest) == 30
    for row in list(range(0, len(cache), 61)) + opens_with_rest:
        ids = vocabulary.encode_midi(cache.segment_tokens(row).astype(int))
        state = grammar.start(ids)
        assert state.bars == cache.segments["num_bars"][row] and bool(grammar.allowed(state)[EOS])


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


# ---- training, generation, CLI, API, evaluation, bench ------------------------------------------------------
@pytest.mark.slow
def test_training_writes_a_checkpoint_that_rebuilds_itself(tiny_run):
    folder, best = tiny_run
    assert best["val_perplexity"] == pytest.approx(np.exp(best["val_loss"]), rel=1e-6)
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and "val_perplexity" in rows[0] and (folder / "run" / "loss.png").is_file()
    # each epoch's copy check: best.pt is chosen among epochs at or under the copy target, by loss
    assert 0 <= rows[0]["val_copy_rate"] <= 1
    assert rows[0]["val_select"] == pytest.approx(rows[0]["val_loss"] + (1000 if rows[0]["val_copy_rate"] > 0.01 else 0))
    payload = torch.load(folder / "autoregressive.pt", weights_only=True)
    assert payload["engine"] == "autoregressive" and "lm_head.weight" not in payload["state_dict"]
    vocab = UnifiedVocabulary.from_dict(payload["vocabulary"])
    assert "blue" in vocab.words and "temporal" in vocab.words
    assert model_from_checkpoint(payload).config.vocab_size == len(vocab)


def test_generate_from_a_prompt_and_by_beam_search(tiny_run):
    from engines.models.trained_autoregressive import TrainedAutoregressive

    engine = TrainedAutoregressive.load(tiny_run[0] / "autoregressive.pt")
    seen = []
    results = engine.generate("a calm, intimate BLUE phrase", n=2, seed=3, max_bars=2,
                              on_token=lambda step, rows: seen.append(len(rows)))
    assert len(results) == 2 and seen and set(seen) == {2}
    for r in results:
        assert r.segment.num_bars <= 2 and all(engine.vocabulary.modality_of(t) == "midi" for t in r.tokens)
    again = engine.generate("a calm, intimate BLUE phrase", n=2, seed=3, max_bars=2)
    assert [r.tokens for r in again] == [r.tokens for r in results]
    (beam,) = engine.generate(mode="RED", beam_width=2, max_bars=1)
    assert beam.segment.num_bars <= 1
    with pytest.raises(StudioError, match="one segment"):
        engine.generate("x", n=2, beam_width=2)


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_reduced_precision_on_cpu_follows_the_float_model(tiny_run, precision):
    from engines.models.trained_autoregressive import TrainedAutoregressive

    path = tiny_run[0] / "autoregressive.pt"
    reduced, exact = TrainedAutoregressive.load(path, precision=precision), \
        TrainedAutoregressive.load(path, precision="float32")
    assert reduced.precision == precision and exact.precision == "float32"
    if precision == "int8":
        assert reduced.model.blocks[0].attn.qkv.weight().dtype == torch.qint8
        assert type(reduced.model.lm_head) is torch.nn.Linear  # the output layer stays float
    else:
        assert reduced.model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert reduced.parameter_count == exact.parameter_count == exact.model.num_parameters()
    ids = torch.tensor([reduced.prompt_ids("a calm, intimate BLUE phrase")])
    with torch.no_grad():
        q, _ = reduced.model(ids, torch.zeros_like(ids))
        f, _ = exact.model(ids, torch.zeros_like(ids))
    assert q.dtype == torch.float32   # logits in float32 whatever the weights (prompt guidance subtracts them)
    assert (q - f).abs().max() < 0.05 * f.abs().max()
    assert (q.argmax(-1) == f.argmax(-1)).float().mean() > 0.9
    with pytest.raises(StudioError, match="precision must be"):
        TrainedAutoregressive.load(path, precision="half")


def test_wide_shared_batches_run_in_bfloat16_only_where_the_cpu_computes_it(tiny_run, monkeypatch):
    from engines.models import trained_autoregressive
    from engines.models.trained_autoregressive import WIDE_ROWS, TrainedAutoregressive

    path = tiny_run[0] / "autoregressive.pt"
    monkeypatch.setattr(trained_autoregressive, "native_bfloat16", lambda: True)
    engine = TrainedAutoregressive.load(path)
    assert engine.precision == "int8" and engine.wide.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert engine.batch_model(WIDE_ROWS - 1) is engine.model and engine.batch_model(WIDE_ROWS) is engine.wide
    groups = [RowGroup(WIDE_ROWS // 2, 1.0, 0, 1.0, torch.Generator().manual_seed(i), 2.0) for i in range(2)]
    rows = engine.sample_groups(None, "BLUE", groups, max_bars=1)
    assert len(rows) == WIDE_ROWS and all(engine.to_generated(r, 1).segment.num_bars <= 1 for r in rows)
    assert TrainedAutoregressive.load(path, precision="int8").wide is None   # one precision when one is named
    monkeypatch.setattr(trained_autoregressive, "native_bfloat16", lambda: False)
    engine = TrainedAutoregressive.load(path)
    assert engine.wide is None and engine.batch_model(4 * WIDE_ROWS) is engine.model


def test_continuation_keeps_the_given_bars(tiny_run, cache):
    from engines.models.trained_autoregressive import TrainedAutoregressive, bars_prefix

    engine = TrainedAutoregressive.load(tiny_run[0] / "autoregressive.pt")
    source = cache.segment(7)
    (out,) = engine.generate("continue", continue_from=source, keep_bars=2, max_bars=4, seed=1)
    kept = engine.vocabulary.encode_midi(bars_prefix(source, 2))
    assert out.tokens[:len(kept)] == kept
    end = 2 * source.bar_length
    original = note_tuples(source.notes[source.notes["start"] < end])
    continued = note_tuples(out.segment.notes[out.segment.notes["start"] < end])
    assert [n[0::2] for n in continued] == [n[0::2] for n in original]  # same onsets and pitches
    with pytest.raises(StudioError, match="bars to keep"):
        engine.generate("x", continue_from=source, keep_bars=4, max_bars=4)


def test_cli_generates_midi_from_a_prompt(tiny_run, tmp_path, capsys):
    from engines.cli import main

    code = main(["generate", "--engine", "autoregressive", "--checkpoint", str(tiny_run[0] / "autoregressive.pt"),
                 "--prompt", "a fiery RED segment", "--n", "2", "--max-bars", "2", "--top-p", "0.9",
                 "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "autoregressive" and len(list(tmp_path.glob("*.mid"))) == 2
    assert main(["generate", "--engine", "autoregressive", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path)]) == 2
    assert main(["generate", "--engine", "autoregressive", "--checkpoint", str(tiny_run[0] / "autoregressive.pt"),
                 "--keep-bars", "1,2", "--out", str(tmp_path)]) == 2
    assert "give it with --init" in capsys.readouterr().err


def test_api_streams_the_growing_roll_and_stops_on_request(tiny_run, tmp_path):
    from engines.api import GenerationProgress, GenerationResult, Request, StudioEngine

    folder = tiny_run[0]
    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={folder}"]), out_dir=tmp_path)
    assert "autoregressive" in engine.engines_available()
    params = Request(engine="autoregressive", mode="BLUE", n=2, seed=0, settings={"max_bars": 2, "top_k": 50})
    items = list(engine.generate_stream(params, every=0.0001))
    progress = [i for i in items if isinstance(i, GenerationProgress)]
    assert progress and progress[-1].sounding.shape == (2, 32, 88)
    assert progress[-1].sounding.sum() >= progress[0].sounding.sum()  # the roll only grows
    views = items[-1].views
    assert len(views) == 2 and views[0].title.startswith("AUTOREGRESSIVE · BLUE")
    named = engine.generate(Request(engine="autoregressive", mode="RED", n=1, settings={"prompt": "a GREEN phrase",
                                                                                           "max_bars": 1}))
    assert named[0].requested_mode == "GREEN"  # the prompt, not the mode picker, says what was asked
    stream = engine.generate_stream(params, run_id="r1", every=0.0001)
    first = next(stream)
    assert isinstance(first, GenerationProgress) and engine.request_stop("r1")
    stopped = list(stream)[-1]
    assert isinstance(stopped, GenerationResult) and stopped.stopped
    for view in stopped.views:   # said to be stopped, with the bars it had written (issue 20, defect 4)
        assert view.stopped and view.title.endswith(" · stopped") and view.bars == 2
        if view.analysis is None:
            assert view.bars_written == 0
        else:   # the bar of its last note
            assert view.bars_written == sum(b <= max(view.notes.start) for b in view.notes.bar_lines[:view.bars])
    assert not any(v.stopped or v.bars_written is not None for v in views)   # a run that ended by itself
    with pytest.raises(StudioError, match="continuation needs a MIDI file"):
        list(engine.generate_stream(Request(engine="autoregressive", keep_bars=[1, 2])))


def test_results_are_analysed_and_rendered_on_the_requests_own_thread(tiny_run, tmp_path):
    """Not on the caller's: a server's worker threads that ran torch (the audio codec's preview) each kept an
    OpenMP team, and every later request paid for them (engines/api/generation.py)."""
    import threading

    from engines.api import Request, StudioEngine

    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tiny_run[0]}"]), out_dir=tmp_path)
    made_on = []
    views = engine._views

    def recorded(*args, **kwargs):
        made_on.append(threading.current_thread())
        return views(*args, **kwargs)
    engine._views = recorded
    results = engine.generate(Request(engine="autoregressive", mode="BLUE", n=1, settings={"max_bars": 1}))
    assert len(results) == 1 and results[0].midi_path
    assert len(made_on) == 1 and made_on[0] is not threading.current_thread()
    assert made_on[0].name == "autoregressive-sampling"
    made_on[0].join(timeout=10)   # ... and it ends with the request, and its OpenMP team with it
    assert not made_on[0].is_alive()


def test_evaluate_reports_the_issue_keys(tiny_run):
    from engines.evaluation.autoregressive_eval import evaluate_autoregressive

    result = evaluate_autoregressive(str(tiny_run[0] / "autoregressive.pt"), load_config(), n_per_mode=1,
                                     test_limit=16, max_new_tokens=60)
    assert result["engine"] == "autoregressive" and result["n"] == 1 and result["outputs"] == 24
    assert 0 <= result["valid_rate"] <= 1 and set(result["consistency"]["per_mode"]) == {
        "BLACK", "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "INDIGO", "VIOLET"}
    assert result["perplexity"] > 1 and result["perplexity_unconditioned"] > 1 and result["latency_ms"] > 0
    assert result["pairs"] == 8 and 0 <= result["complexity_pairs"] <= 1


@pytest.mark.slow
def test_bench_row_compares_with_hf_gpt2(tiny_run, tmp_path):
    from engines.bench import bench_autoregressive

    assert bench_autoregressive(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), 1) is None
    row = bench_autoregressive(load_config(overrides=[f"model.checkpoints_dir={tiny_run[0]}"]), 1, new_tokens=20)
    assert row["new_tokens"] == 20 and row["tokens_per_second_kv_cache"] > 0 and row["hf_gpt2_tokens_per_second"] > 0
    assert row["ratio_to_hf"] == pytest.approx(row["tokens_per_second_kv_cache"] / row["hf_gpt2_tokens_per_second"],
                                               rel=0.05)
    assert row["seconds_one_segment_from_prompt"] > 0 and row["precision"] == "int8"
    assert row["ratio_float32_to_hf"] == pytest.approx(
        row["tokens_per_second_float32"] / row["hf_gpt2_tokens_per_second"], rel=0.05)


def test_model_card_records_the_bars_from_an_evaluation(tiny_run, tmp_path):
    from engines.training.model_card import ship

    report = {"engine": "autoregressive", "n": 2, "valid_rate": 1.0, "consistency": {"overall": 0.5, "per_mode": {}},
              "complexity_pairs": 0.9, "perplexity": 4.2, "latency_ms": 800.0}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    shipped = ship("autoregressive", tiny_run[0] / "run", tmp_path / "out", str(tmp_path / "eval.json"))
    assert shipped["size_mb"] < 40
    card = (tmp_path / "out" / "autoregressive.md").read_text()
    assert "# Model card: autoregressive" in card and "val perplexity per MIDI token" in card
    assert "| mode named in the prompt heard by the analyzer, mean of modes | >= 80 % | 50% | no |" in card
    assert "| validation perplexity per MIDI token | < 5 | 4.20 | yes |" in card


def test_prompt_guidance_mixes_the_conditional_and_unconditional_streams(vocabulary):
    from engines.sampling.autoregressive import ClassifierFreeGuidance

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = vocabulary.encode(text="a calm phrase", eos=False) + [MIDI]
    plain = vocabulary.encode(eos=False) + [MIDI]
    guided = ClassifierFreeGuidance(model, plain, 2.5)
    cache = guided.new_cache()
    first, _ = guided(torch.tensor([prompt]), cache)
    conditional, _ = model(torch.tensor([prompt]))
    unconditional, _ = model(torch.tensor([plain]))
    assert torch.allclose(first, unconditional + 2.5 * (conditional - unconditional), atol=1e-5)
    token = torch.tensor([[vocabulary.midi_start + 4]])
    step, _ = guided(token, cache)  # the next token goes to both streams
    c2, _ = model(torch.tensor([prompt + [int(token)]]))
    u2, _ = model(torch.tensor([plain + [int(token)]]))
    assert torch.allclose(step, u2 + 2.5 * (c2 - u2), atol=1e-5) and cache.length == len(prompt) + 1


def test_training_examples_are_moved_by_a_few_semitones_with_the_key_their_caption_names():
    from engines.training.autoregressive_trainer import moved_key, pitch_shift_tables

    names = remi_token_names()
    tables = pitch_shift_tables(5)
    assert set(tables) == set(range(-5, 6))
    c4, d4 = names.index("Pitch_60"), names.index("Pitch_62")
    assert tables[2][c4] == d4 and tables[-2][d4] == c4 and tables[0][c4] == c4
    bar = names.index("Bar_None")
    assert all(tables[s][bar] == bar for s in tables)                     # only pitches move
    top = max(i for i, n in enumerate(names) if n.startswith("Pitch_"))
    assert tables[1][top] == -1                                            # off the range: not moved at all
    assert moved_key("D minor", 2) == "E minor" and moved_key("B major", 1) == "C major"
    assert moved_key("A minor", -2) == "G minor"


def test_a_transposed_example_keeps_its_intervals_and_validation_is_never_moved(cache, vocabulary):
    from engines.training.autoregressive_trainer import SequenceDataset

    rows = cache.split_indices("train")[:40]
    moving = SequenceDataset(cache, rows, vocabulary, 384, {"continuation": 1.0}, transpose=5)
    still = SequenceDataset(cache, rows, vocabulary, 384, {"continuation": 1.0}, fixed=True, transpose=5)
    def pitches(ids):
        return [int(vocabulary.name(t).split("_")[1]) for t in ids
                if vocabulary.modality_of(t) == "midi" and vocabulary.name(t).startswith("Pitch_")]

    moved = 0
    for i in range(len(rows)):
        original = pitches(vocabulary.encode(midi=cache.segment_tokens(int(rows[i])).astype(np.int64)))
        example = pitches(moving.example(i, np.random.default_rng(i)))
        assert np.all(np.diff(example) == np.diff(original))                # the same intervals, maybe elsewhere
        moved += example != original
        assert pitches(still.example(i, np.random.default_rng(i))) == original
    assert moved > 20


def test_attribute_phrases_teach_the_gpt_the_sliders_and_a_first_checkpoint_is_not_given_them(tiny_run):
    from engines.data.captions import SegmentFacts, attribute_phrase, with_attributes
    from engines.generation import GENERATORS

    assert attribute_phrase({"energy": 0.8, "valence": 0.0, "temporal_complexity": 1.0}) == \
        "energy 7 valence 0 complexity 9"
    facts = SegmentFacts(mode="RED", axes={"energy": 0.9, "valence": 0.2, "tension": 0.5, "intimacy": 0.1,
                                           "motion": 0.6}, temporal_complexity=0.3, rebracketing=0.7, key="C major",
                         metre="4/4", notes_per_bar=6, register=60)
    captions = [with_attributes("a RED phrase", facts, np.random.default_rng(i)) for i in range(40)]
    assert all(c.startswith("a RED phrase ; ") for c in captions)
    assert len(set(captions)) > 10 and any("energy 8" in c for c in captions)       # random subsets
    assert all(c.split(" ; ")[1] for c in captions)                                # never an empty phrase
    trained = GENERATORS["autoregressive"].load(tiny_run[0] / "autoregressive.pt")
    assert trained.takes_attributes                                                  # trained with them
    assert trained.prompt_with_attributes("a calm phrase", {"energy": 0.2, "valence": -1.0}) == \
        "a calm phrase ; energy 2 valence 0"
    shipped = GENERATORS["autoregressive"].load("assets/checkpoints/autoregressive.pt")
    assert not shipped.takes_attributes
    assert shipped.prompt_with_attributes("a calm phrase", {"energy": 0.2}) == "a calm phrase"


def test_a_mode_prompt_asks_for_the_axes_inside_the_mode_and_finalize_restores_them(tiny_run, tmp_path):
    from engines.generation import GENERATORS
    from engines.music.analyzer import AXES, MODES
    from engines.training.autoregressive_trainer import finalize_autoregressive
    from engines.training.common import load_checkpoint, save_checkpoint

    trained = GENERATORS["autoregressive"].load(tiny_run[0] / "autoregressive.pt")
    targets = trained.model.mode_targets
    assert targets and set(targets) <= set(MODES)                                    # stored by the trainer
    mode = next(iter(targets))
    asked = trained.asked_attributes(mode, {"energy": 0.9, "rebracketing": None})
    assert set(asked) == set(AXES) and asked["energy"] == 0.9                        # the slider wins
    assert asked["valence"] == pytest.approx(2 * targets[mode]["valence"] - 1)       # the analyzer's scale
    assert trained.asked_attributes("WHITE", None) == {}                             # no mode, nothing added
    phrase = trained.prompt_with_attributes(f"a {mode} phrase", trained.asked_attributes(mode, None))
    assert phrase.startswith(f"a {mode} phrase ; energy ")
    # a run from before the targets gets them from finalize, the same medians the trainer stores
    payload = load_checkpoint(tiny_run[0] / "autoregressive.pt")
    del payload["mode_targets"]
    save_checkpoint(payload, tmp_path / "best.pt")
    assert GENERATORS["autoregressive"].load(tmp_path / "best.pt").asked_attributes(mode, None) == {}
    summary = finalize_autoregressive(tmp_path / "best.pt", load_config(overrides=TINY_GPT), limit=64)
    finalized = load_checkpoint(tmp_path / "best.pt")
    assert finalized["mode_targets"] == targets
    # and the sampling each mode gets (a small calibration with a limit): a setting of the grid per mode
    from engines.training.autoregressive_calibration import GUIDANCE, TEMPERATURES

    calibration = finalized["sampling_calibration"]
    assert summary["sampling_calibration"] == calibration and set(calibration["modes"]) == {"BLACK", "GREEN"}
    assert calibration["grid"] == [[3.0, 0.8], [1.5, 0.8]] and calibration["candidates_per_setting"] == 2
    for m in calibration["modes"].values():
        assert (m["prompt_guidance"], m["temperature"]) in {(g, t) for g in GUIDANCE for t in TEMPERATURES}
        assert 0 <= m["heard_new"] <= m["heard"] <= 1 and m["heard_new"] >= m["default"]["heard_new"]
        assert (m["default"]["temperature"], m["default"]["prompt_guidance"]) == (0.8, 3.0)


def test_a_segment_longer_than_the_model_learned_is_written_window_by_window():
    """Issue 20, defect 3: 'bars to write = 8' gave at most 4 bars. The shipped GPT learned 4-bar segments;
    8 bars are written as windows that each keep the last 2 bars of the one before."""
    from engines.models.trained_autoregressive import TrainedAutoregressive, bars_window
    from engines.music.notes import Segment

    gpt = TrainedAutoregressive.load("assets/checkpoints/autoregressive.pt")
    four = gpt.generate("a calm BLUE phrase", n=2, temperature=0.8, top_p=0.95, max_bars=4, seed=3)
    eight = gpt.generate("a calm BLUE phrase", n=2, temperature=0.8, top_p=0.95, max_bars=8, seed=3)
    for short, long in zip(four, eight):
        assert short.segment.num_bars <= 4 and long.segment.num_bars == 8
        bar = long.segment.bar_length
        assert long.segment.notes["start"].max() >= 6 * bar                      # notes in the last two bars
        assert (long.segment.notes["start"] + long.segment.notes["duration"]).max() <= 8 * bar
        first = long.segment.notes[long.segment.notes["start"] < 4 * bar]       # the first window as written
        assert first.tolist() == short.segment.notes.tolist()
    # a window: bars 2-3 of a segment as a segment of its own, cut at its end
    notes = np.array([(0, 12, 60, 80, 0), (96, 60, 62, 80, 0), (120, 100, 64, 80, 0), (200, 12, 65, 80, 0)],
                     dtype=eight[0].segment.notes.dtype)                 # 4/4: 48 ticks a bar
    window = bars_window(Segment(notes=notes, num_bars=5), 2, 2)
    assert window.num_bars == 2 and window.bar_start == 2
    assert window.notes.tolist() == [(0, 60, 62, 80, 0), (24, 72, 64, 80, 0)]   # held past its end: cut
    # Stop during the first window ends the windows after it too
    calls = []
    (stopped,) = gpt.generate("a calm BLUE phrase", n=1, max_bars=8, seed=3,
                              on_token=lambda step, rows: calls.append(step) or len(calls) > 20)
    assert stopped.segment.num_bars < 4 and len(calls) == 21
