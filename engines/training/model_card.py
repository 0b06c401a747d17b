"""`python -m engines ship`: a run's best checkpoint -> assets/checkpoints/<engine>.pt with a model card beside it.

The card records what reproduces the checkpoint (the exact training command), the data, the training time
and the final metrics, and the evaluation JSON when one is given.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from engines.errors import StudioError
from engines.music.analyzer import MODES
from engines.training.common import MetricsLog, device_name, load_checkpoint

SIZE_LIMITS_MB = {"vae": 30, "diffusion": 30, "guidance-classifier": 15, "autoregressive": 40, "codec": 15,
                  "judge": 15}
CARD_NOTES = {
    "diffusion": "A 1-D U-Net denoiser over the 4-bar piano roll (onset and sustain channels, 64 steps x 88 "
                 "pitches, in C), predicting x0, conditioned on step, mode (WHITE = the classifier-free null), "
                 "attributes and metre. The roll is the default representation, not the VAE latent: a prior "
                 "over the latent inherits the VAE's decoding errors (the VAE's samples reach 35 % consistency "
                 "and a latent diffusion prior 55-63 %, README), while a roll model writes notes directly. "
                 "Sampling: DDIM, DDPM or DPM-Solver++ with classifier-free guidance; classifier guidance with "
                 "guidance-classifier.pt; inpainting.",
    "guidance-classifier": "The noise-aware classifier p(y | x_t, t) that steers the diffusion sampler toward a "
                           "mode and high (or low) rebracketing, and whose attribute head (the analyzer's reading "
                           "of the clean roll: rebracketing, temporal complexity and the five axes) steers it "
                           "toward the axes a request asks for (axis guidance): trained on rolls noised to levels "
                           "of the denoiser's forward process (low noise drawn more often), with the metre's bar "
                           "and beat grid and the tempo as input. Sampling takes its gradient on the denoiser's "
                           "clean estimate (space x0, the default: it reads that as at t = 0, where it is most "
                           "accurate) or on x_t (Dhariwal & Nichol). Not the evaluation suite's judge.",
    "autoregressive": "A GPT-style decoder (pre-norm blocks, rotary positions, tied input and output embeddings, "
                      "KV cache) over the unified vocabulary saved inside the checkpoint: specials, the words of "
                      "the training captions, REMI and (once a codec is trained) audio codes. Trained on "
                      "caption -> MIDI (captions drawn afresh from each segment's analysis every epoch) and on MIDI "
                      "alone, which is what continuation uses; the loss counts MIDI tokens and <eos> only. "
                      "Segments keep their own key (captions name it). Sampling: temperature, top-k, top-p or "
                      "beam search under the REMI grammar mask, so every MIDI span decodes, with classifier-free "
                      "guidance toward the prompt (against the same MIDI with no text).",
    "judge": "The evaluation suite's learned chromatic judge: a 1-D convolutional network over the clean 4-bar roll "
             "in its own key (sustain as 0/1) and its chroma, the metre's bar and beat grid beside them and the "
             "tempo as a FiLM condition, and beside it a harmony branch over the whole segment (pitch-class "
             "histogram, learned key profiles at all 12 rotations, the interval vector of notes sounding together, "
             "register, range, onset density, the top line's moves), with a mode head and seven attribute heads "
             "(rebracketing, temporal complexity, the five axes). Its penultimate layer is the embedding of the "
             "suite's Fréchet distance. "
             "Trained on clean corpus segments only, each drawn as it is or moved by one of the config's "
             "`transpositions` (semitones) and labelled as the analyzer hears the moved copy; the mode target mixes "
             "the label with the analyzer's soft scores (`soft_weight`), and an auxiliary head learns the "
             "analyzer's raw features (training only). Not the diffusion engine's guidance classifier.",
    "codec": "EnCodec's architecture from the encodec package (SEANet encoder and decoder with an LSTM at the "
             "bottleneck, residual vector quantizer with EMA k-means codebooks), trained on FluidSynth piano renders "
             "of training segments (16 kHz mono, each scaled to RMS 0.1 as encode scales a clip) with waveform L1, "
             "multi-scale log-mel L1, minus SI-SNR and the "
             "commitment loss; no adversarial term. Official EnCodec weights, when on disk, replace it "
             "(model.codec.pretrained_path).",
}
# Validation columns of each engine's training curve beyond the losses: (metrics key, title, format).
CURVE_COLUMNS = {
    "vae": [("val_f1", "val note F1", ".3f"), ("val_kl", "val KL", ".1f")],
    "codec": [("val_si_snr", "val SI-SNR dB", ".2f"), ("val_mel_l1", "val log-mel L1", ".3f")],
    "autoregressive": [("val_perplexity", "val perplexity per MIDI token", ".3f")],
    "judge": [("val_mode_acc", "val mode acc.", ".3f"), ("val_mae_rebracketing", "val MAE rebracketing", ".3f"),
              ("val_mae_energy", "val MAE energy", ".3f")],
    "guidance-classifier": [("val_mode_acc", "mode acc.", ".3f"), ("val_high_acc", "high-reb. acc.", ".3f"),
                            ("val_high_recall", "high-reb. recall", ".3f"),
                            ("val_mode_acc_low_noise", "mode acc. t < T/10", ".3f"),
                            ("val_high_acc_low_noise", "high-reb. acc. t < T/10", ".3f"),
                            ("val_high_recall_low_noise", "high-reb. recall t < T/10", ".3f"),
                            ("val_axes_mae_low_noise", "axes MAE t < T/10", ".3f")],
}


def ship(engine: str, run_dir: str | Path, checkpoints_dir: str | Path, evaluation: str | None = None) -> dict:
    run_dir, checkpoints_dir = Path(run_dir), Path(checkpoints_dir)
    best = run_dir / "best.pt"
    payload = load_checkpoint(best)  # also proves it loads with weights_only=True
    if payload.get("engine") != engine:
        raise StudioError(f"'{best}' is a {payload.get('engine')} checkpoint, not {engine}")
    size_mb = best.stat().st_size / 1048576
    if size_mb > SIZE_LIMITS_MB[engine]:
        raise StudioError(f"'{best}' is {size_mb:.1f} MB; shipped {engine} checkpoints stay under "
                          f"{SIZE_LIMITS_MB[engine]} MB")
    command = json.loads((run_dir / "command.json").read_text()) if (run_dir / "command.json").is_file() else {}
    rows = MetricsLog(run_dir / "metrics.jsonl").rows()
    report = json.loads(Path(evaluation).read_text()) if evaluation else None
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    target = checkpoints_dir / f"{engine}.pt"
    shutil.copyfile(best, target)
    card = checkpoints_dir / f"{engine}.md"
    card.write_text(render_card(engine, payload, command, rows, report, size_mb))
    return {"checkpoint": str(target), "card": str(card), "size_mb": round(size_mb, 2)}


def render_card(engine: str, payload: dict, command: dict, rows: list[dict], report: dict | None,
                size_mb: float) -> str:
    argv = command.get("argv") or []
    cmd = "python -m engines " + " ".join(argv[1:]) if argv else "(not recorded)"
    if command.get("finalize_argv"):
        cmd += "`, then `python -m engines " + " ".join(command["finalize_argv"][1:])
    for step in command.get("finalize_steps") or []:   # single finalize steps run after it (train --finalize-step)
        cmd += "`, then `python -m engines " + " ".join(step["argv"][1:])
    # a run that started from another's weights (init_checkpoint) lists the steps before it in command.json:
    # [{"command": "python -m engines train ...", "minutes": 35.0, "rows": [its metrics.jsonl rows]}, ...],
    # oldest first
    before = command.get("preceded_by") or []
    if before:
        cmd = "`, then `".join([step["command"] for step in before] + [cmd])
    last = rows[-1] if rows else {}
    device = command.get("device") or device_name()   # train records it; runs from before that: this machine's
    params = sum(v.numel() for v in payload["state_dict"].values())
    lines = [
        f"# Model card: {engine}",
        "",
        f"- **Reproduce:** `{cmd}`, then `python -m engines ship --engine {engine} --run <out>`",
        "- **Data:** the segment cache of the default music21 corpus (training split; validation each epoch)",
        f"- **Size:** {size_mb:.1f} MB, {params / 1e6:.2f} M parameters; loads with `torch.load(weights_only=True)`",
        f"- **Trained:** {last.get('epoch', '?')} epochs" + (f" ({last['step']:,} steps; the last epoch may stop at "
                                                           f"the time budget)" if "step" in last else "") +
        f", {last.get('minutes', '?')} min on {device}"
        + (f"; {round(sum(step['minutes'] for step in before) + float(last.get('minutes', 0)), 2)} min in all with the "
           f"step{'s' if len(before) > 1 else ''} before it" if before else ""),
        *([f"- **Shipped weights:** the run's best.pt, epoch {payload['metrics']['epoch']} of {last['epoch']}"]
          if "epoch" in payload.get("metrics", {}) and "epoch" in last else []),
        f"- **Config:** `{json.dumps(payload.get('config', {}))}`",
        *([f"- **Latent map:** UMAP ({json.dumps(payload['latent_map']['params'])}, random_state "
           f"{payload['latent_map']['seed']}) of {len(payload['latent_map']['rows'])} training latents; onset "
           f"threshold {payload.get('onset_threshold')} (best validation F1 {payload.get('onset_threshold_validation_f1', 0):.3f}); "
           f"fitted after training in {payload.get('finalize_seconds', '?')} s"] if "latent_map" in payload else []),
        *([f"- **Sampling:** from the prior fitted per mode to its clearest training latents"
           f"{refinement_note(payload)} (finalize; `generation.sampling.vae.prior: network` draws from the "
           f"network's own), decoded at onset threshold "
           f"{payload['sample_onset_threshold']}: {payload['sample_calibration']['notes_per_segment']} notes per "
           f"sample against {payload['sample_calibration']['corpus_notes_per_segment']} per training segment "
           f"({payload['sample_calibration']['samples']} samples)" + temperatures_note(payload)]
          if "sample_calibration" in payload else []),
        *([f"- **Attribute prior:** a request that asks attributes and no mode mixes "
           f"{payload['attribute_prior']['mixed']} of the {payload['attribute_prior']['neighbours']} latents (of "
           f"{len(payload['attribute_prior']['rows'])} rare training segments of the map, encoded with no mode) whose "
           f"attributes lie nearest the asked ones (finalize)"] if payload.get("attribute_prior") else []),
        *([f"- **Onset calibration:** threshold {payload['onset_calibration']['onset_threshold']} on the x0 scale: "
           f"{payload['onset_calibration']['notes_per_segment']} notes per sample against "
           f"{payload['onset_calibration']['corpus_notes_per_segment']} per training segment "
           f"({payload['onset_calibration']['samples']} samples)"] if "onset_calibration" in payload else []),
        *([f"- **Labels:** the cache's mode; high rebracketing = above "
           f"{payload['high_rebracketing_threshold']:.3f} (the training split's 75th percentile); forward process "
           f"{payload['num_steps']} {payload['noise_schedule']} steps"] if "high_rebracketing_threshold" in payload
          else []),
        *(["", "## About", "", CARD_NOTES[engine]] if engine in CARD_NOTES else []),
        "",
        "## Training curve (validation)",
        "",
    ]
    columns = CURVE_COLUMNS.get(engine, [])

    def curve(curve_rows: list[dict]) -> list[str]:
        table = ["| epoch | minutes | train loss | val loss |" + "".join(f" {title} |" for _, title, _ in columns),
                 "|---:|---:|---:|---:|" + "---:|" * len(columns)]
        for r in curve_rows:
            table.append(f"| {r['epoch']} | {r['minutes']} | {r['train_loss']:.4f} | {r['val_loss']:.4f} |"
                         + "".join(f" {r[key]:{spec}} |" if key in r else " |" for key, _, spec in columns))
        return table

    earlier = [step for step in before if step.get("rows")]   # the steps this run started from, with curves
    for step in earlier:
        lines += [f"Before this run (`{step['command']}`):", "", *curve(step["rows"]), ""]
    lines += (["This run:", ""] if earlier else []) + curve(rows)
    return "\n".join(lines + evaluation_sections(engine, payload, report)) + "\n"


# the headings evaluation_sections writes: a refreshed card keeps what comes before the first of them
EVALUATION_HEADINGS = ("## Sampling per mode", "## Quality bars", "## Raw model", "## Confusion", "## Evaluation")


def evaluation_sections(engine: str, payload: dict, report: dict | None) -> list[str]:
    """The card's lines after the training curve: the GPT's sampling per mode, the quality bars, the raw model
    beside verified generation, the judge's confusion and the evaluation JSON."""
    lines = []
    if "sampling_calibration" in payload:
        lines += sampling_section(payload["sampling_calibration"])
    bars = {"vae": vae_bars, "diffusion": diffusion_bars, "autoregressive": autoregressive_bars,
            "codec": codec_bars, "judge": judge_bars}
    if report and engine in bars:
        lines += ["", "## Quality bars (held-out test split)", "", "| bar | target | measured | met |",
                  "|---|---|---|---|"]
        for name, target, value, met in bars[engine](report):
            lines.append(f"| {name} | {target} | {value} | {'yes' if met else 'no'} |")
    if report and "verification" in report:
        lines += verification_section(report)
    if report and "confusion" in report and engine == "judge":
        lines += ["", "## Confusion on the test split (rows: label, columns: the judge)", "",
                  "| | " + " | ".join(MODES) + " |", "|---|" + "---:|" * len(MODES)]
        lines += [f"| {m} | " + " | ".join(str(c) for c in row) + " |" for m, row in zip(MODES, report["confusion"])]
    if report:
        lines += ["", "## Evaluation (`python -m engines evaluate`)", "", "```json",
                  json.dumps(report, indent=1), "```"]
    return lines


def refresh_card(engine: str, checkpoints_dir: str | Path, evaluation: str) -> dict:
    """The shipped card of `engine` with its evaluation sections measured again (an evaluate JSON of the
    shipped checkpoint): what it says of training (command, data, curve) stays; the checkpoint is untouched."""
    checkpoints_dir = Path(checkpoints_dir)
    card, checkpoint = checkpoints_dir / f"{engine}.md", checkpoints_dir / f"{engine}.pt"
    if not card.is_file() or not checkpoint.is_file():
        raise StudioError(f"no shipped {engine} checkpoint and card in '{checkpoints_dir}' to refresh")
    report = json.loads(Path(evaluation).read_text())
    if report.get("engine") != engine:
        raise StudioError(f"'{evaluation}' evaluates {report.get('engine')}, not {engine}")
    text = card.read_text()
    starts = [text.find("\n" + heading) for heading in EVALUATION_HEADINGS if "\n" + heading in text]
    head = text[:min(starts)] if starts else text.rstrip("\n")
    card.write_text(head + "\n".join(evaluation_sections(engine, load_checkpoint(checkpoint), report)) + "\n")
    return {"card": str(card), "evaluation": str(evaluation)}


def refinement_note(payload: dict) -> str:
    """The VAE's refitted prior (vae_finalize.refine_prior) as a clause of the Sampling line: per mode, the share
    of its samples heard as asked before the first refit and before the last."""
    refinement = payload.get("prior_refinement")
    if not refinement:
        return ""
    shares = ", ".join(f"{mode} {m['heard'][0]:.0%} -> {m['heard'][-1]:.0%}" for mode, m in refinement["modes"].items())
    ranged = any("note_range" in m for m in refinement["modes"].values())
    return (f", then refitted {refinement['rounds']} times to the latents of its samples the analyzer hears as asked"
            + (", that copy no training segment" if refinement.get("copies_checked") else "")
            + (" and that hold as many notes as the mode's segments (10th-90th percentile)" if ranged else "")
            + f" ({refinement['samples_per_round']} samples a round at temperature 1, seeds from {refinement['seed']}; "
            f"heard as asked before the first refit and before the last: {shares})")


def temperatures_note(payload: dict) -> str:
    """The VAE's temperature per mode (vae_finalize.calibrate_temperatures) as a clause of the Sampling line."""
    calibration = payload.get("temperature_calibration")
    if not calibration:
        return ""
    def measured(m: dict) -> str:
        former, share = next(iter(m["heard"].items()))   # the first temperature tried: the former default
        return f"{m['temperature']:g} ({m['heard'][str(m['temperature'])]:.0%} heard as asked, {share:.0%} at " \
               f"{float(former):g})"

    limit = (f"; a temperature whose samples nearly copy a training segment more than {calibration['copy_limit']:.0%} "
             f"of the time is not kept" if "copy_limit" in calibration else "")
    return ("; a request that sets no temperature samples its mode at the one finalize measured it is heard as "
            f"asked at ({calibration['samples_per_setting']} samples per temperature, seeds from "
            f"{calibration['seed']}{limit}): " + ", ".join(f"{mode} {measured(m)}"
                                                           for mode, m in calibration["modes"].items()))


def sampling_section(calibration: dict) -> list[str]:
    """The GPT's sampling per mode (engines/training/autoregressive_calibration.py): the setting kept and what it
    measured beside the former defaults (temperature 0.8, prompt guidance 3)."""
    grid = calibration["grid"]
    lines = ["", "## Sampling per mode (finalize)", "",
             f"A request that leaves temperature or prompt guidance unset gets its mode's. Each setting of the grid "
             f"(prompt guidance x temperature: {', '.join(f'{g:g} x {t:g}' for g, t in grid)}) wrote "
             f"{calibration['candidates_per_setting']} candidates per mode from the mode's prompt (seeds from "
             f"{calibration['seed']}; evaluation seeds start at 10,000); kept: the most often heard by the analyzer "
             f"in the asked mode and not a near copy of a training segment ({calibration['seconds']:.0f} s).", "",
             "| mode | temperature | prompt guidance | heard and new | heard | copies | at 0.8 x 3: heard and new | "
             "copies |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, m in calibration["modes"].items():
        d = m["default"]
        lines.append(f"| {mode} | {m['temperature']:g} | {m['prompt_guidance']:g} | {m['heard_new']:.0%} | "
                     f"{m['heard']:.0%} | {m['copies']:.0%} | {d['heard_new']:.0%} | {d['copies']:.0%} |")
    return lines


def verification_section(report: dict) -> list[str]:
    """The raw model beside verified generation (`evaluate --candidates K`): analyzer and judge consistency
    per mode, copies, one segment's latency."""
    k = report["verification"]["candidates"]
    consistency, copies, latency = report["consistency"], report["copies"], report["latency_ms"]
    judge = report.get("judge", {}).get("consistency", {})
    lines = ["", f"## Raw model and verified generation (best of {k} candidates by the judge, copies rejected)", "",
             "| | raw | verified |", "|---|---:|---:|",
             f"| mode heard by the analyzer | {consistency['raw']['overall']:.0%} | "
             f"{consistency['verified']['overall']:.0%} |"]
    if "raw" in judge and "verified" in judge:
        role = "which selects and steers" if report.get("steer") else "which selects"
        lines.append(f"| mode heard by the judge ({role}) | {judge['raw']['overall']:.0%} | "
                     f"{judge['verified']['overall']:.0%} |")
    lines += [f"| {mode} (analyzer) | {consistency['raw']['per_mode'].get(mode, 0):.0%} | "
              f"{consistency['verified']['per_mode'].get(mode, 0):.0%} |" for mode in MODES]
    lines += [f"| near copies of training segments | {copies['raw']['near_copy_rate']:.1%} | "
              f"{copies['verified']['near_copy_rate']:.1%} |",
              f"| one segment, batch 1 ({latency.get('threads', '?')} CPU threads) | {latency['raw']:.0f} ms | "
              f"{latency['verified']:.0f} ms |",
              "", f"`python -m engines evaluate --engine {report.get('engine', 'E')} --candidates {k} "
                  f"--n {report['verification']['n_per_mode']}`: "
                  f"{report['verification']['n_per_mode']} results per mode on held-out seeds"
                  + (f" (from {report['verification']['seeds_from']})"
                     if "seeds_from" in report["verification"] else "")
                  + (" and held-out prompt phrasings" if report["verification"].get("prompts") else "")
                  + f"; {report['verification']['rejected_copies']} candidates were rejected as copies. Near copies "
                    "are checked against the whole train split."
                  + (" Both sample kept off copies (`avoid_copies`, docs/generation.md); `evaluate --set "
                     f"generation.sampling.{report.get('engine', 'E')}.avoid_copies=false` measures the model alone."
                     if report.get("avoid_copies", report.get("sampler", {}).get("avoid_copies")) else "")
                  + (f" Both steer each drawn latent by one signed step of {report['steer']} toward the asked mode "
                     "and axes, as the judge reads it (`steer`, docs/vae.md); `evaluate --set "
                     "generation.sampling.vae.steer=0` measures the prior's draws as they are."
                     if report.get("steer") else "")]
    return lines


def vae_bars(report: dict) -> list[tuple[str, str, str, bool]]:
    """The VAE issue's bars against an evaluate report: (name, target, measured, met)."""
    per_mode = report["consistency"]["per_mode"]
    attributes = report.get("attributes", {})
    rows = [
        ("reconstruction note F1", ">= 0.90", f"{report['reconstruction']['f1']:.3f}",
         report["reconstruction"]["f1"] >= 0.90),
        ("active units", ">= 90 %", f"{report['active_units']:.0%}", report["active_units"] >= 0.90),
        ("prior-sample consistency, mean of modes", ">= 85 %", f"{report['consistency']['overall']:.0%}",
         report["consistency"]["overall"] >= 0.85),
        ("prior-sample consistency, worst mode", ">= 70 %", f"{min(per_mode.values()):.0%}",
         min(per_mode.values()) >= 0.70),
    ]
    for name in ("rebracketing", "temporal_complexity"):
        if name in attributes:
            rho = attributes[name]["spearman"]
            rows.append((f"{name.replace('_', ' ')} direction, Spearman", ">= 0.8", f"{rho:.2f}", rho >= 0.8))
    smooth = report["interpolation"]["paths_with_every_step_smaller"]
    rows.append(("slerp neighbours closer than endpoints", "all paths", f"{smooth:.0%} of paths", smooth == 1.0))
    rows.append(("latency, one segment", "<= 20 ms", f"{_latency(report):.1f} ms", _latency(report) <= 20))
    return rows + (conditioning_bars(report, 0.70, 0.15) if "raw" in report["consistency"] else [])


def conditioning_bars(report: dict, consistency: float, axes_mae: float) -> list[tuple[str, str, str, bool]]:
    """The raw model's bars for holding the condition (one candidate per result, held-out seeds): the mode
    the analyzer hears, its worst mode, the asked-vs-heard axes and near copies of training segments."""
    raw = report["consistency"].get("raw", report["consistency"])
    worst = min(raw["per_mode"].values())
    rows = [("raw consistency (analyzer), mean of modes", f">= {consistency * 100:.0f} %", f"{raw['overall']:.1%}",
             raw["overall"] >= consistency),
            ("raw consistency, worst mode", ">= 60 %", f"{worst:.0%}", worst >= 0.60)]
    axes = report.get("axes") or {}
    if axes.get("mae") is not None:
        rows.append(("asked vs heard axes, mean absolute error (nothing asked)", f"<= {axes_mae:.2f}",
                     f"{axes['mae']:.3f} ({axes['mae_unconditioned']:.3f})", axes["mae"] <= axes_mae))
    if (axes.get("copies") or {}).get("near_copy_rate") is not None:   # measured since AXES_VERSION 2
        rate = axes["copies"]["near_copy_rate"]
        rows.append(("near copies among those results", "<= 1 %", f"{rate:.1%}", rate <= 0.01))
    copies = report.get("copies") or {}
    copies = copies.get("raw", copies)
    if "near_copy_rate" in copies:
        rows.append(("near copies of training segments, raw", "<= 1 %", f"{copies['near_copy_rate']:.1%}",
                     copies["near_copy_rate"] <= 0.01))
    return rows


def diffusion_bars(report: dict) -> list[tuple[str, str, str, bool]]:
    """The diffusion engine's bars that an evaluate report measures: (name, target, measured, met)."""
    frechet = report.get("frechet_diffusion", report["frechet"])  # its own, when the suite's is beside it
    distance = "n/a" if frechet["distance"] is None else f"{frechet['distance']:.2f}"
    return conditioning_bars(report, 0.88, 0.12) + [
        ("Fréchet distance (baseline: real vs real)", "reported",
         f"{distance} ({frechet['real_baseline']:.2f})", frechet["distance"] is not None),
        ("latency, one segment", "<= 1.0 s", f"{_latency(report) / 1000:.2f} s", _latency(report) <= 1000),
    ] + guidance_bars(report.get("guidance") or {})


def guidance_bars(guidance: dict) -> list[tuple[str, str, str, bool]]:
    """Classifier guidance toward high rebracketing: the lift over unguided samples and the consistency kept."""
    if "rebracketing_lift" not in guidance:
        return [("classifier guidance", "measured", guidance.get("error", "not measured"), False)]
    return [
        ("rebracketing lift, guided over unguided (same modes and seeds)", ">= 0.20",
         f"{guidance['rebracketing_lift']:+.2f} ({guidance['rebracketing_unguided']:.2f} -> "
         f"{guidance['rebracketing_guided']:.2f})", guidance["rebracketing_lift"] >= 0.2),
        ("consistency with classifier guidance", ">= 80 %", f"{guidance['consistency_guided']:.0%}",
         guidance["consistency_guided"] >= 0.8),
    ]


def autoregressive_bars(report: dict) -> list[tuple[str, str, str, bool]]:
    """The autoregressive issue's bars that an evaluate report measures: (name, target, measured, met)."""
    return [
        ("generated MIDI spans that decode to valid MIDI", "100 %", f"{report['valid_rate']:.1%}",
         report["valid_rate"] == 1.0),
        ("mode named in the prompt heard by the analyzer, mean of modes", ">= 80 %",
         f"{report['consistency']['overall']:.0%}", report["consistency"]["overall"] >= 0.8),
        ("high vs low temporal complexity prompts, pairs ordered", ">= 80 %", f"{report['complexity_pairs']:.0%}",
         report["complexity_pairs"] >= 0.8),
        ("validation perplexity per MIDI token", "< 5", f"{report['perplexity']:.2f}", report["perplexity"] < 5),
        ("latency, one 4-bar segment from a prompt", "<= 1.5 s", f"{_latency(report) / 1000:.2f} s",
         _latency(report) <= 1500),
    ]


def judge_bars(report: dict) -> list[tuple[str, str, str, bool]]:
    """The evaluation issue's bar for the judge: accuracy on the held-out split."""
    worst = min(report["per_mode"], key=report["per_mode"].get)
    return [(f"mode accuracy, {report['n']} test segments", ">= 90 %", f"{report['accuracy']:.1%}",
             report["accuracy"] >= 0.9),
            ("worst mode (recall)", "reported", f"{worst} {report['per_mode'][worst]:.0%}", True)]


def codec_bars(report: dict) -> list[tuple[str, str, str, bool]]:
    """The codec's bars (autoregressive issue) against its evaluate report."""
    return [
        ("tokens per second of audio", "<= 200", f"{report['token_rate']:.0f}", report["token_rate"] <= 200),
        (f"SI-SNR of the round trip, {report['n']} held-out piano renders (mean)", ">= 6 dB",
         f"{report['si_snr_db']:.2f} dB", report["si_snr_db"] >= 6),
        *([("the same, median", ">= 6 dB", f"{report['si_snr_db_median']:.2f} dB", report["si_snr_db_median"] >= 6)]
          if "si_snr_db_median" in report else []),
        ("log-mel L1 of the round trip", "reported", f"{report['log_mel_l1']:.3f}", True),
        ("bitrate", "reported (EnCodec's published settings: 1.5 and 3 kbps at 24 kHz)",
         f"{report['bitrate_kbps']:.2f} kbps", True),
    ]


def _latency(report: dict) -> float:
    """The engine's own one-segment latency in ms (evaluate --candidates keeps it as latency_ms.engine)."""
    latency = report["latency_ms"]
    return float(latency.get("engine", latency.get("raw")) if isinstance(latency, dict) else latency)
