"""`python -m engines evaluate --engine autoregressive`: the autoregressive issue's bars, on held-out prompts.

    valid_rate        share of generated MIDI spans that decode to a MIDI file holding notes (REMI ->
                      Segment -> a written Standard MIDI File read back by symusic)
    consistency       per mode, the share of outputs the analyzer hears in the mode the prompt names; the
                      prompts are not among the caption templates, so no training caption is one of them
                      (EVAL_TEMPLATES: other articles and word orders), sampled at the
                      configured temperature / top-k / top-p and prompt guidance, one seed per output
    complexity_pairs  for each mode and seed, "... with high temporal complexity" against "... with low
                      temporal complexity": the share of pairs where the high one measures higher
    perplexity        per MIDI token on test segments with fixed captions (the caption -> MIDI task), and
                      without captions (`perplexity_unconditioned`)
    latency_ms        one 4-bar segment from a prompt, median of three
    audio_task        a checkpoint trained on the MIDI -> audio task: its own audio against the FluidSynth
                      render of its own MIDI (engines/evaluation/audio_task_eval.py)
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.config import Config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.evaluation.suite import copy_index
from engines.models.trained_autoregressive import Generated, TrainedAutoregressive
from engines.music.analyzer import MODES, ChromaticAnalyzer
from engines.training.autoregressive_trainer import SequenceDataset, collate, fitting_indices, validate

# Phrasings of a mode prompt that the caption templates (engines/data/captions.py) never produce exactly.
EVAL_TEMPLATES = ("a {noun} in the {MODE} mode", "write the {MODE} {noun}", "generate the {MODE} {noun}")
EVAL_NOUNS = ("segment", "phrase", "passage")
COMPLEXITY_TEMPLATE = "write the {MODE} {noun} with {level} temporal complexity"


def mode_prompt(mode: str, i: int) -> str:
    return EVAL_TEMPLATES[i % len(EVAL_TEMPLATES)].format(MODE=mode, noun=EVAL_NOUNS[i // len(EVAL_TEMPLATES) % 3])


def is_valid(generated: Generated) -> bool:
    """The MIDI span decodes to notes and survives writing and reading a Standard MIDI File."""
    if not len(generated.segment.notes):
        return False
    from symusic import Score

    from engines.data.midi_io import segment_to_score

    try:
        score = Score.from_midi(segment_to_score(generated.segment).dumps_midi())
    except Exception:  # noqa: BLE001  (any failure to write or read back counts as invalid)
        return False
    return sum(len(t.notes) for t in score.tracks) == len(generated.segment.notes)


def perplexity(engine: TrainedAutoregressive, cfg: Config, test_limit: int, captioned: bool, seed: int) -> float:
    cache = ensure_corpus_cache(cfg)
    rows = fitting_indices(cache, cache.split_indices("test"), engine.model.config.block_size)
    rows = rows[:test_limit] if test_limit else rows
    weights = {"caption_to_midi": 1.0, "continuation": 0.0} if captioned else {"caption_to_midi": 0.0,
                                                                              "continuation": 1.0}
    data = SequenceDataset(cache, rows, engine.vocabulary, engine.model.config.block_size, weights,
                           fixed=True, seed=seed)
    return round(validate(engine.model, DataLoader(data, batch_size=32, collate_fn=collate),
                          engine.device)["val_perplexity"], 3)


def evaluate_autoregressive(checkpoint: str, cfg: Config, n_per_mode: int = 50, seed: int = 0,
                            test_limit: int = 2000, max_new_tokens: int = 0) -> dict:
    """The JSON of the module docstring. `max_new_tokens` caps each output (0 = the model's context; tests)."""
    if not Path(checkpoint).is_file():
        raise StudioError(f"no autoregressive checkpoint at '{checkpoint}'; pass --checkpoint RUN/best.pt")
    engine = TrainedAutoregressive.load(checkpoint)
    analyzer = ChromaticAnalyzer(cfg.analyzer)
    s = cfg.generation.sampling.autoregressive
    common = dict(top_k=s.top_k, top_p=s.top_p, max_bars=cfg.data.segment_bars, max_new_tokens=max_new_tokens,
                  copies=copy_index(cfg) if s.avoid_copies else None)   # kept off copies, as the studio samples
    outputs, per_mode, pairs, pair_wins = 0, {}, 0, 0
    valid = 0
    for m, mode in enumerate(MODES):
        temperature, guidance = engine.sampling_for(mode, s.temperature, s.prompt_guidance)   # the mode's own
        sampling = dict(common, temperature=temperature, guidance_scale=guidance)
        hits = 0
        for i in range(n_per_mode):
            (g,) = engine.generate(mode_prompt(mode, i), seed=seed + 1000 * m + i, **sampling)
            outputs += 1
            valid += is_valid(g)
            hits += bool(len(g.segment.notes)) and analyzer.analyze(g.segment).mode == mode
            measured = {}
            for level in ("high", "low"):
                prompt = COMPLEXITY_TEMPLATE.format(MODE=mode, noun=EVAL_NOUNS[i % 3], level=level)
                (h,) = engine.generate(prompt, seed=seed + 1000 * m + i, **sampling)
                outputs += 1
                valid += is_valid(h)
                measured[level] = analyzer.analyze(h.segment).temporal_complexity if len(h.segment.notes) else 0.0
            pairs += 1
            pair_wins += measured["high"] > measured["low"]
        per_mode[mode] = round(hits / max(n_per_mode, 1), 4)
    times = []
    temperature, guidance = engine.sampling_for("RED", s.temperature, s.prompt_guidance)
    for i in range(3):
        start = time.perf_counter()
        engine.generate(mode_prompt("RED", i), seed=seed + i, **common, temperature=temperature,
                        guidance_scale=guidance)
        times.append(time.perf_counter() - start)
    result = {
        "engine": "autoregressive", "checkpoint": str(checkpoint), "n": n_per_mode,
        "valid_rate": round(valid / max(outputs, 1), 4), "outputs": outputs,
        "consistency": {"overall": round(float(np.mean(list(per_mode.values()))), 4), "per_mode": per_mode},
        "complexity_pairs": round(pair_wins / max(pairs, 1), 4), "pairs": pairs,
        "perplexity": perplexity(engine, cfg, test_limit, True, seed),
        "perplexity_unconditioned": perplexity(engine, cfg, test_limit, False, seed),
        "latency_ms": round(statistics.median(times) * 1000, 1),
        "sampling": {k: v for k, v in sampling.items() if k != "copies"}, "avoid_copies": bool(s.avoid_copies),
        "prompts": {"mode": list(EVAL_TEMPLATES), "complexity": COMPLEXITY_TEMPLATE},
        "parameters": engine.parameter_count, "precision": engine.precision,
        "device": str(engine.device), "threads": torch.get_num_threads(),
    }
    if engine.audio_task:
        from engines.evaluation.audio_task_eval import audio_task_report
        from engines.models.codec import installed_codec
        from engines.models.trained_autoregressive import audio_codec_problem

        codec = installed_codec(cfg)
        problem = audio_codec_problem(engine, codec)   # e.g. another codec installed: the MIDI figures still stand
        result["audio_task"] = {"skipped": problem} if problem else audio_task_report(
            engine, codec, cfg, n=min(3 * len(MODES), 3 * n_per_mode), seed=seed, max_new_tokens=max_new_tokens)
    return result
