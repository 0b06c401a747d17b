"""The GPT's own audio, measured against FluidSynth: `audio_task` in `evaluate --engine autoregressive`.

For `n` segments the GPT writes from held-out mode prompts (one candidate each, the raw model), it then writes
the audio tokens of each one's opening seconds (engines/models/trained_autoregressive.py, `model_audio`), and
the codec decodes them. Both are compared with the FluidSynth render of the same opening bars (the reference):

    chroma_correlation   mean frame-wise correlation of 12-bin chroma (engines/evaluation/audio_metrics.py)
    log_mel_l1           multi-scale log-mel L1, after scaling the clip to the reference's RMS (the codec
                         decodes at the level it was trained at; loudness is not what is measured)
    codec_round_trip     the same two figures for the codec's own round trip of the reference, every codebook:
                         the floor the GPT's audio is held to
    codec_round_trip_coarse  the round trip through only the codebooks the GPT writes (its own ceiling)

Means over the segments; `chroma_correlation` leaves out a segment whose reference is silent throughout. A
segment whose opening bars hold too many tokens to leave room for the audio is counted in `too_long`. The audio
is written as the studio writes it, contrastively at `guidance` (1 would be the plain model).
"""
from __future__ import annotations

import numpy as np
import torch

from engines.config import Config
from engines.data.audio_tokens import render_opening
from engines.errors import StudioError
from engines.evaluation.audio_metrics import chroma_correlation, log_mel_l1
from engines.models.trained_autoregressive import AUDIO_GUIDANCE, TrainedAutoregressive, audio_codec_problem
from engines.music.analyzer import MODES


def _at_rms(x: torch.Tensor, rms: float) -> torch.Tensor:
    own = float(x.pow(2).mean().sqrt())
    return x * (rms / own) if own > 1e-8 else x


def audio_task_report(engine: TrainedAutoregressive, codec, cfg: Config, n: int = 24, seed: int = 0,
                      max_new_tokens: int = 0) -> dict:
    """The module docstring's figures over `n` GPT segments (held-out prompts over the eight modes)."""
    from engines.evaluation.autoregressive_eval import mode_prompt

    problem = audio_codec_problem(engine, codec)
    if problem:
        raise StudioError(problem)
    task = engine.audio_task
    rate, codebooks = codec.config.sample_rate, int(task["codebooks"])
    samples = int(task["frames"]) * codec.hop_length
    s = cfg.generation.sampling.autoregressive
    rows = {"model": [], "round_trip": [], "coarse": []}
    too_long = 0
    for i in range(n):
        mode = MODES[i % len(MODES)]
        temperature, guidance = engine.sampling_for(mode, s.temperature, s.prompt_guidance)
        (generated,) = engine.generate(mode_prompt(mode, i // len(MODES)), seed=seed + i, top_k=s.top_k,
                                       top_p=s.top_p, temperature=temperature, guidance_scale=guidance,
                                       max_bars=cfg.data.segment_bars, max_new_tokens=max_new_tokens)
        segment = generated.segment
        if not len(segment.notes):
            continue
        reference = torch.from_numpy(render_opening(segment, samples / rate, rate, cfg.render.soundfont,
                                                    cfg.render.gain))
        rms = float(reference.pow(2).mean().sqrt())
        if rms <= 1e-6:
            continue
        try:
            (codes,) = engine.write_audio(segment, seed=seed + i, guidance=AUDIO_GUIDANCE)
        except StudioError:   # the opening bars fill the context (engine.write_audio says so)
            too_long += 1
            continue
        own = codec.decode(torch.as_tensor(codes))[:samples]
        full, round_trip = codec.round_trip(reference)
        coarse = codec.decode(full[:codebooks])[:samples]
        for key, clip in (("model", own), ("round_trip", round_trip), ("coarse", coarse)):
            clip = _at_rms(clip, rms)
            rows[key].append((chroma_correlation(clip, reference, rate),
                              float(log_mel_l1(clip, reference, rate))))

    def summary(pairs) -> dict:
        chroma = [c for c, _ in pairs if np.isfinite(c)]
        return {"chroma_correlation": round(float(np.mean(chroma)), 4) if chroma else None,
                "log_mel_l1": round(float(np.mean([m for _, m in pairs])), 4) if pairs else None}

    return {**summary(rows["model"]), "codec_round_trip": summary(rows["round_trip"]),
            "codec_round_trip_coarse": summary(rows["coarse"]), "segments": len(rows["model"]), "too_long": too_long,
            "seconds": float(task["seconds"]), "codebooks": codebooks, "codec_codebooks": int(codec.n_q_used),
            "guidance": AUDIO_GUIDANCE}
