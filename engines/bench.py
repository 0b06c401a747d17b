"""`python -m engines bench`: speed of the foundation, as JSON. Medians over repeats; nothing here asserts.

Each engine issue adds its rows (generation latency, sampling speed) beside these.
"""
from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from engines.config import Config


def _median_seconds(func, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sample_indices(n_total: int, n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_total, size=min(n, n_total), replace=False).tolist())


def bench_corpus(cfg: Config, repeats: int) -> dict:
    from engines.data.cache import SegmentCache, unpack
    from engines.data.prepare import corpus_cache_dir, ensure_corpus_cache

    ensure_corpus_cache(cfg)
    out = {"open_seconds": round(_median_seconds(lambda: len(SegmentCache(corpus_cache_dir(cfg))), repeats), 4)}
    archive = Path(cfg.data.shipped_cache)
    if archive.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            out["unpack_shipped_seconds"] = round(_median_seconds(lambda: unpack(archive, Path(tmp)), 1), 3)
        out["shipped_archive_mb"] = round(archive.stat().st_size / 1048576, 2)
    return out


def bench_tokenization(cfg: Config, repeats: int, n_files: int = 100) -> dict:
    from engines.data.midi_io import write_segment_midi
    from engines.data.prepare import ensure_corpus_cache
    from engines.tokenizers.midi import decode_tokens, encode_segment, get_tokenizer

    cache = ensure_corpus_cache(cfg)
    segments = [cache.segment(i) for i in _sample_indices(len(cache), n_files)]
    out = {"files": len(segments)}
    with tempfile.TemporaryDirectory() as tmp:
        paths = [write_segment_midi(s, Path(tmp) / f"{i}.mid") for i, s in enumerate(segments)]
        for kind in ("remi", "cpword"):
            tokenizer = get_tokenizer(kind)
            seconds = _median_seconds(lambda: [tokenizer.encode(p) for p in paths], repeats)
            out[f"{kind}_midi_files_per_second"] = round(len(paths) / seconds, 1)
            seconds = _median_seconds(lambda: [encode_segment(s, kind) for s in segments], repeats)
            out[f"{kind}_segments_per_second"] = round(len(segments) / seconds, 1)
            ids = [encode_segment(s, kind) for s in segments]
            seconds = _median_seconds(lambda: [decode_tokens(t, kind) for t in ids], repeats)
            out[f"{kind}_decodes_per_second"] = round(len(ids) / seconds, 1)
    return out


def bench_analyzer(cfg: Config, repeats: int, n: int = 200) -> dict:
    from engines.data.prepare import ensure_corpus_cache
    from engines.music.analyzer import ChromaticAnalyzer

    cache = ensure_corpus_cache(cfg)
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    segments = [cache.segment(i) for i in _sample_indices(len(cache), n, seed=1)]
    seconds = _median_seconds(lambda: [analyzer.analyze(s) for s in segments], repeats)
    return {"segments": len(segments), "ms_per_segment": round(seconds / len(segments) * 1000, 3)}


def bench_render(cfg: Config, repeats: int) -> dict:
    from engines.data.midi_io import segment_to_score
    from engines.data.prepare import ensure_corpus_cache
    from engines.render.fluidsynth_renderer import find_soundfont, measure_speed

    cache = ensure_corpus_cache(cfg)
    r = cfg.render
    kwargs = dict(sample_rate=r.sample_rate, soundfont=r.soundfont, gain=r.gain, tail_seconds=r.tail_seconds)
    rows = []
    for index in _sample_indices(len(cache), 5, seed=2):
        rows.append(measure_speed(segment_to_score(cache.segment(index)), repeats=repeats, **kwargs))
    return {"soundfont": find_soundfont(r.soundfont).name, "segments": len(rows),
            "audio_seconds_median": round(statistics.median(x["audio_seconds"] for x in rows), 2),
            "x_realtime_median": round(statistics.median(x["x_realtime"] for x in rows), 1),
            "x_realtime_min": round(min(x["x_realtime"] for x in rows), 1)}


def bench_vae(cfg: Config, repeats: int) -> dict | None:
    """One 4-bar segment sampled and decoded to notes, at batch 1 and per segment at batch 8 (CPU)."""
    import torch

    from engines.generation import GENERATORS

    path = Path(cfg.model.checkpoints_dir) / "vae.pt"
    if not path.is_file():
        return None
    vae = GENERATORS["vae"].load(path, device="cpu").model
    vae.sample("RED", n=1, seed=0)  # warm-up
    counter = iter(range(10**6))
    one = _median_seconds(lambda: vae.sample("RED", n=1, seed=next(counter)), max(repeats, 20))
    eight = _median_seconds(lambda: vae.sample("BLUE", n=8, seed=next(counter)), max(repeats, 5))
    return {"checkpoint": str(path), "threads": torch.get_num_threads(), "ms_per_segment_batch1": round(one * 1000, 2),
            "ms_per_segment_batch8": round(eight / 8 * 1000, 2)}


def bench_diffusion(cfg: Config, repeats: int) -> dict | None:
    """DDIM with 50 steps and classifier-free guidance: one segment, and a batch of 8 (CPU); bars 1 s and 3 s.
    Also one segment with DPM-Solver++ at 20 steps and, when the guidance classifier is shipped, one with
    classifier guidance on top."""
    import torch

    from engines.generation import GENERATORS
    from engines.generation.diffusion import SUGGESTED_CLASSIFIER_SCALE
    from engines.models.guidance_classifier import GuidanceTarget

    path = Path(cfg.model.checkpoints_dir) / "diffusion.pt"
    if not path.is_file():
        return None
    engine = GENERATORS["diffusion"].load(path, device="cpu").model   # with the classifier beside it, if any
    settings = cfg.generation.sampling.diffusion
    guidance = settings.guidance_scale
    engine.sample("RED", n=1, steps=5, guidance_scale=guidance)  # warm-up
    counter = iter(range(10**6))

    def seconds(n: int, **settings) -> float:
        return round(_median_seconds(lambda: engine.sample("BLUE", n=n, guidance_scale=guidance, seed=next(counter),
                                                           **settings), max(repeats, 3)), 3)

    row = {"checkpoint": str(path), "threads": torch.get_num_threads(), "sampler": "ddim", "steps": 50,
           "guidance_scale": guidance, "seconds_one_segment": seconds(1, steps=50), "seconds_batch8": seconds(8, steps=50)}
    engine.sample("RED", n=1, steps=2, sampler="dpmsolver++")  # loads diffusers once
    row["seconds_one_segment_dpmsolver_20_steps"] = seconds(1, steps=20, sampler="dpmsolver++")
    if engine.classifier is not None:
        row["seconds_one_segment_classifier_guided"] = seconds(
            1, steps=50, classifier_scale=SUGGESTED_CLASSIFIER_SCALE,
            target=GuidanceTarget(mode=True, rebracketing="high", space=settings.classifier_space))
    if engine.steers_axes and settings.axis_guidance > 0:   # a request with the axis sliders set
        row["seconds_one_segment_axis_guided"] = seconds(
            1, steps=50, axis_scale=settings.axis_guidance,
            attributes={"energy": 0.8, "valence": -0.2, "tension": 0.6, "intimacy": 0.3, "motion": 0.7})
    return row


def hf_reference(config):
    """HF transformers' GPT2LMHeadModel with the same depth, width, heads, context and vocabulary as our GPT
    (built from a config: nothing is downloaded), for the bench's speed reference."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from engines.tokenizers.vocabulary import BOS, EOS, PAD

    return GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=config.block_size,
                                      n_embd=config.n_embd, n_layer=config.n_layer, n_head=config.n_head,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=BOS,
                                      eos_token_id=EOS, pad_token_id=PAD)).eval()


def bench_autoregressive(cfg: Config, repeats: int, new_tokens: int = 200) -> dict | None:
    """Tokens per second at batch 1 with the KV cache, as the studio runs on CPU (int8 blocks) and in float32,
    plain and under the REMI grammar as the studio samples; HF's GPT2LMHeadModel.generate with the same
    config (float32) in the same run as the reference (`ratio_to_hf`, goal >= 1.5); one 4-bar segment from a
    prompt with the configured sampling and prompt guidance (bar 1.5 s)."""
    import torch

    from engines.generation import GENERATORS
    from engines.models.trained_autoregressive import TrainedAutoregressive
    from engines.sampling.autoregressive import sample_tokens
    from engines.tokenizers.vocabulary import EOS

    path = Path(cfg.model.checkpoints_dir) / "autoregressive.pt"
    if not path.is_file():
        return None
    engine = GENERATORS["autoregressive"].load(path, device="cpu").model
    float32 = TrainedAutoregressive.load(path, device="cpu", precision="float32")
    prompt = engine.prompt_ids("a calm, intimate BLUE phrase")
    new_tokens = min(new_tokens, engine.model.config.block_size - len(prompt))
    counter = iter(range(10**6))
    logits_bias = torch.zeros(len(engine.vocabulary))
    logits_bias[EOS] = float("-inf")

    def ours(model):  # <eos> is masked out so every run writes exactly new_tokens
        return lambda: sample_tokens(_Masked(model, logits_bias), prompt, 1, new_tokens,
                                     generator=torch.Generator().manual_seed(next(counter)))

    ours(engine.model)(), ours(float32.model)()
    ours_seconds = _median_seconds(ours(engine.model), max(repeats, 3))
    float32_seconds = _median_seconds(ours(float32.model), max(repeats, 3))
    grammar_rates = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        (written,) = engine.generate("a calm, intimate BLUE phrase", seed=next(counter), max_bars=16)
        grammar_rates.append(len(written.tokens) / (time.perf_counter() - start))
    reference = hf_reference(engine.model.config)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        def theirs():
            reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                               min_new_tokens=new_tokens, do_sample=True, top_k=0, use_cache=True, pad_token_id=0)
        theirs()
        hf_seconds = _median_seconds(theirs, max(repeats, 3))
    s = cfg.generation.sampling.autoregressive  # one segment as the studio writes it: prompt guidance doubles the work
    temperature, guidance = engine.sampling_for("RED", s.temperature, s.prompt_guidance)
    one = _median_seconds(lambda: engine.generate("a fiery RED segment with high temporal complexity",
                                                  seed=next(counter), temperature=temperature, top_p=s.top_p,
                                                  top_k=s.top_k, guidance_scale=guidance),
                          max(repeats, 5))
    ours_rate, float32_rate, hf_rate = new_tokens / ours_seconds, new_tokens / float32_seconds, new_tokens / hf_seconds
    return {"checkpoint": str(path), "threads": torch.get_num_threads(), "parameters": engine.parameter_count,
            "precision": engine.precision, "new_tokens": new_tokens,
            "tokens_per_second_kv_cache": round(ours_rate, 1),
            "tokens_per_second_float32": round(float32_rate, 1),
            "tokens_per_second_with_grammar": round(statistics.median(grammar_rates), 1),
            "hf_gpt2_tokens_per_second": round(hf_rate, 1), "ratio_to_hf": round(ours_rate / hf_rate, 2),
            "ratio_float32_to_hf": round(float32_rate / hf_rate, 2),
            "seconds_one_segment_from_prompt": round(one, 3)}


class _Masked:
    """The model with a fixed additive bias on its logits (the bench keeps <eos> out)."""

    def __init__(self, model, bias):
        self.model, self.bias, self.config = model, bias, model.config

    def parameters(self):
        return self.model.parameters()

    def new_cache(self):
        return self.model.new_cache()

    def __call__(self, idx, cache=None):
        logits, loss = self.model(idx, cache=cache)
        return logits + self.bias.to(logits.device), loss


def bench_verified(cfg: Config, repeats: int, verifier=None) -> dict:
    """One requested segment through engines/generation for every engine with a checkpoint, as the studio
    asks for it: raw (one candidate) and verified (the engine's K candidates ranked by the judge, copies
    rejected), in ms, medians over repeats after a warm-up; the copy index's build time. Bars (issue 17):
    verified VAE <= 100 ms, diffusion <= 2 s, GPT <= 3 s."""
    from engines.generation import GENERATORS, Request
    from engines.generation.verify import Verifier, candidates_per_result, draw

    verifier = verifier or Verifier.for_config(cfg)
    start = time.perf_counter()
    verifier.copies  # noqa: B018  (the studio builds it at start-up)
    out = {"copy_index_build_seconds": round(time.perf_counter() - start, 2), "judge": verifier.judge is not None}
    for name, kind in GENERATORS.items():
        path = Path(cfg.model.checkpoints_dir) / f"{name}.pt"
        if not path.is_file():
            continue
        generator = kind.load(path, device="cpu")
        settings = generator.settings_for(cfg)
        k = candidates_per_result(generator, Request(engine=name), settings, verifier)
        counter = iter(range(10**6))
        row = {"candidates": k}
        for label, count in (("raw", 1), ("verified", k)):
            def one():
                draw(generator, Request(engine=name, mode="RED", n=1, seed=next(counter), candidates=count),
                     settings, verifier)
            one()
            row[f"ms_one_segment_{label}"] = round(_median_seconds(one, max(repeats, 3)) * 1000, 1)
        out[name] = row
    return out


def bench_single_user(cfg: Config, repeats: int, verifier=None) -> dict:
    """A lone user's verified request through the engine's Batcher, as the studio samples it, with batching off
    (generation.batching.max_batch 1) and at the config's cap, in ms (medians after a warm-up): batching must
    not make a user alone on the server wait (issue 21). The VAE pair and one 20-step diffusion segment of the
    load test (engines/loadtest.py)."""
    from engines.generation import GENERATORS, Request
    from engines.generation.batching import Batcher
    from engines.generation.verify import Verifier, draw

    verifier = verifier or Verifier.for_config(cfg)
    verifier.copies  # noqa: B018  (the studio builds it at start-up)
    batching = cfg.generation.batching
    out = {"max_batch": batching.max_batch, "window_ms": batching.window_ms}
    for name, n, overrides in (("vae", 2, None), ("diffusion", 1, {"steps": 20})):
        path = Path(cfg.model.checkpoints_dir) / f"{name}.pt"
        if not path.is_file():
            continue
        generator = GENERATORS[name].load(path, device="cpu")
        settings = generator.settings_for(cfg, overrides)
        counter = iter(range(10**6))
        row = {}
        for label, cap in (("batching_off", 1), ("default_cap", batching.max_batch)):
            batcher = Batcher(generator, cap, batching.window_ms / 1000, name)

            def one():
                draw(generator, Request(engine=name, mode="RED", n=n, seed=next(counter)), settings, verifier,
                     run=batcher.run)
            one()
            row[f"ms_{label}"] = round(_median_seconds(one, max(repeats, 5)) * 1000, 1)
        out[name] = row
    return out


def bench_arrange(cfg: Config, repeats: int, verifier=None) -> dict:
    """Arranging (issue 23): one 8-bar section by the diffusion engine and by the GPT, checked as the arranger
    checks it (generation.arrange: candidates per window, diffusion steps, the section check) and rendered
    through FluidSynth, in seconds (medians
    after a warm-up); and a 32-bar piece of 4 sections (diffusion, GPT, diffusion, VAE), once. Bars: an 8-bar
    section <= 1.5 s with diffusion and <= 3 s with the GPT, the 32-bar piece <= 15 s."""
    from engines.arrange.arranger import Arranger
    from engines.arrange.plan import piece_plan
    from engines.data.midi_io import segments_to_score
    from engines.generation.verify import Verifier
    from engines.registry import ModelRegistry
    from engines.render.fluidsynth_renderer import render_score

    verifier = verifier or Verifier.for_config(cfg)
    registry = ModelRegistry(cfg.model.checkpoints_dir)
    available = set(registry.available())
    arranger = Arranger(registry, cfg, verifier)
    counter = iter(range(10**6))
    out = {}

    def piece(sections) -> float:
        started = time.perf_counter()
        arranged = arranger.arrange(piece_plan({"tempo": 100, "metre": "4/4", "sections": sections}),
                                    seed=next(counter))
        render_score(segments_to_score(arranged.segments), cfg.render.sample_rate, cfg.render.soundfont)
        return time.perf_counter() - started

    for name in ("diffusion", "autoregressive"):
        if name in available:
            section = [{"bars": 8, "mode": "RED", "engine": name}]
            piece(section)
            times = [piece(section) for _ in range(max(1, repeats // 2))]
            out[f"seconds_8_bars_{name}"] = round(float(np.median(times)), 2)
    if {"vae", "diffusion", "autoregressive"} <= available:
        out["seconds_32_bars_4_sections"] = round(piece([
            {"bars": 8, "mode": "BLUE", "engine": "diffusion"}, {"bars": 8, "mode": "RED", "engine": "autoregressive"},
            {"bars": 8, "mode": "VIOLET", "engine": "diffusion"}, {"bars": 8, "mode": "BLUE", "engine": "vae"}]), 2)
    return out


def run_benchmarks(cfg: Config, repeats: int = 5) -> dict:
    from engines.generation.verify import Verifier

    started = time.time()
    verifier = Verifier.for_config(cfg)   # one judge and copy index for both generation rows
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "repeats": repeats,
        "corpus": bench_corpus(cfg, repeats),
        "tokenization": bench_tokenization(cfg, repeats),
        "analyzer": bench_analyzer(cfg, repeats),
        "render": bench_render(cfg, repeats),
        "vae": bench_vae(cfg, repeats),
        "diffusion": bench_diffusion(cfg, repeats),
        "autoregressive": bench_autoregressive(cfg, repeats),
        "verified_generation": bench_verified(cfg, repeats, verifier),
        "single_user": bench_single_user(cfg, repeats, verifier),
        "arrange": bench_arrange(cfg, repeats, verifier),
    }
    result["seconds"] = round(time.time() - started, 1)
    return result
