"""A GPT-style decoder over the unified vocabulary (engines/tokenizers/vocabulary.py), after nanoGPT.

    idx (B, T) ids -> token embedding -> n_layer x [LayerNorm -> causal self-attention -> LayerNorm -> MLP]
                   -> LayerNorm -> logits (B, T, V) through the token embedding again (weight tying)

Positions are rotary (RoPE, Su et al.) by default: q and k are rotated by their absolute position, so a KV
cache holds keys that never need recomputing, and nothing caps the length but `block_size`. "learned"
adds a position table instead, as GPT-2 does.

`forward(idx, targets=None, cache=None) -> (logits, loss)`: with targets, logits for every position and the
mean cross-entropy over targets != -100; without, logits of the last position only (B, 1, V). A KVCache
passed in is extended by idx (generation feeds the prompt once, then one token per step).
"""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from engines.models.gpt_config import GPTConfig

IGNORE = -100  # target id that does not count in the loss (prompt text, padding)


class KVCache:
    """Keys and values of every layer for the tokens seen so far: per layer (B, n_head, room, head_dim), of which
    the first `length` positions are filled. The room grows by `CHUNK` positions at a time (up to `capacity`,
    the block size), so a step writes in place instead of concatenating, and a batch holds memory for the
    tokens it has written, not for the whole block (at 128 rows with prompt guidance, the whole block was
    1.2 GB). `select` keeps some rows: sampling drops the rows that have ended, beam search reorders beams."""

    CHUNK = 64

    def __init__(self, n_layer: int, capacity: int):
        self.capacity = capacity
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.filled = [0] * n_layer
        # (B, n) True at positions no later token may attend: the padding before a shorter prompt, so rows whose
        # prompts differ in length share one batch (prompt guidance's two streams). None: every row attends all
        self.blocked: torch.Tensor | None = None

    def attention_mask(self, past: int, t: int) -> torch.Tensor:
        """(B, 1, t, past + t) bool for t new tokens after `past` cached ones: causal, never a blocked position,
        and always the token itself (a padding position attends to itself: no row of the softmax is empty)."""
        keys = past + t
        allowed = torch.ones(self.blocked.shape[0], keys, dtype=torch.bool, device=self.blocked.device)
        width = min(self.blocked.shape[1], keys)
        allowed[:, :width] = ~self.blocked[:, :width]
        causal = torch.ones(t, keys, dtype=torch.bool, device=allowed.device).tril(diagonal=past)
        mask = causal[None] & allowed[:, None, :]
        mask[:, torch.arange(t), past + torch.arange(t)] = True
        return mask[:, None]

    @property
    def length(self) -> int:
        return self.filled[0]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H, t, D) to `layer`; returns that layer's keys and values so far (B, H, length, D)."""
        start, end = self.filled[layer], self.filled[layer] + k.shape[2]
        if end > self.capacity:
            raise ValueError(f"the cache holds {self.capacity} tokens; {end} were given")
        if self.keys[layer] is None or self.keys[layer].shape[2] < end:
            self.keys[layer], self.values[layer] = self._grown(self.keys[layer], start, end, k), \
                self._grown(self.values[layer], start, end, v)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        self.filled[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _grown(self, buffer: torch.Tensor | None, filled: int, needed: int, like: torch.Tensor) -> torch.Tensor:
        """A buffer with room for `needed` positions rounded up to a whole chunk, the first `filled` copied."""
        b, h, _, d = like.shape
        room = min(self.capacity, -(-needed // self.CHUNK) * self.CHUNK)
        grown = like.new_empty(b, h, room, d)
        if buffer is not None and filled:
            grown[:, :, :filled] = buffer[:, :, :filled]
        return grown

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder, repeat) the batch rows `rows`: only the filled positions are copied."""
        if self.blocked is not None:
            self.blocked = self.blocked[rows.to(self.blocked.device)]
        for layer, filled in enumerate(self.filled):
            if self.keys[layer] is not None:
                self.keys[layer] = self._kept(self.keys[layer], rows, filled)
                self.values[layer] = self._kept(self.values[layer], rows, filled)

    @staticmethod
    def _kept(buffer: torch.Tensor, rows: torch.Tensor, filled: int) -> torch.Tensor:
        kept = buffer.new_empty(len(rows), *buffer.shape[1:])
        kept[:, :, :filled] = buffer[rows.to(buffer.device), :, :filled]
        return kept


def rotary_tables(head_dim: int, length: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (length, head_dim / 2) of RoPE's rotation angles."""
    inv = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv[None]
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, D) rotated pairwise (first half with second half) by cos, sin (T, D/2)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary, cache: KVCache | None, layer: int, past: int, mask: torch.Tensor | None = None):
        # x (B, T, C); past: cached tokens; mask (B, 1, T, past + T): which keys each query sees, when not causal
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, H, T, D)
        qk, v = qkv[:2], qkv[2]
        if rotary is not None:  # q and k rotated in one call: decoding is bound by the number of small ops
            qk = apply_rotary(qk, *rotary)
        q, k = qk[0], qk[1]
        if cache is not None:
            k, v = cache.extend(layer, k, v)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1,
                                               dropout_p=self.dropout if self.training else 0.0)
        elif t == 1:  # one new token (decoding) sees every cached one: no mask to build
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # new tokens see every cached one and the new ones up to themselves
            allowed = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        y = y.transpose(1, 2).contiguous().view(b, t, c)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = nn.Sequential(nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias), nn.GELU(),
                                 nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias),
                                 nn.Dropout(config.dropout))

    def forward(self, x, rotary, cache, layer, past, mask=None):
        x = x + self.attn(self.ln_1(x), rotary, cache, layer, past, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.vocab_size <= 0:
            raise ValueError("GPTConfig.vocab_size must be set from the vocabulary")
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.positions == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf)
        if config.positions == "rotary":
            cos, sin = rotary_tables(config.n_embd // config.n_head, config.block_size)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> KVCache:
        return KVCache(self.config.n_layer, self.config.block_size)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        b, t = idx.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(f"sequence of {start + t} tokens is longer than block_size {self.config.block_size}")
        x = self.wte(idx)  # (B, T, C)
        rotary = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + t, device=idx.device))
        else:
            rotary = (self.rotary_cos[start:start + t], self.rotary_sin[start:start + t])
        x = self.drop(x)
        mask = cache.attention_mask(start, t) if cache is not None and cache.blocked is not None else None
        for layer, block in enumerate(self.blocks):
            x = block(x, rotary, cache, layer, start, mask)
        x = self.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:]).float(), None  # (B, 1, V), float32 whatever the weights
        logits = self.lm_head(x).float()  # (B, T, V)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE)
        return logits, loss


def checkpoint_payload(model: GPT, vocabulary: dict, metrics: dict, extra: dict | None = None) -> dict:
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied to wte
    return {"engine": "autoregressive", "config": asdict(model.config), "state_dict": state,
            "vocabulary": vocabulary, "metrics": metrics, **(extra or {})}


def model_from_checkpoint(payload: dict) -> GPT:
    model = GPT(GPTConfig(**payload["config"]))
    state = dict(payload["state_dict"])
    state["lm_head.weight"] = state["wte.weight"]
    model.load_state_dict(state)
    return model
