"""The GPT (engines/models/gpt.py): the KV cache, rows leaving a batch, the loss and tied weights."""
from __future__ import annotations


import pytest
import torch

from engines.models.gpt import GPT, IGNORE, KVCache
from engines.models.gpt_config import GPTConfig
from engines.sampling.autoregressive import (ROW_BUCKET, RemiGrammar, RowGroup, sample_token_groups)
from engines.tokenizers.vocabulary import MIDI


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
