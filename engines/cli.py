"""`python -m engines <command>`: prepare | stats | analyze | calibrate | render | train | evaluate | compare | generate | ship | bench.

Every command takes `--config FILE` and any number of `--set key.path=value`. A mistake the user can make
ends with one line on stderr naming what is wrong, and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

from engines.errors import StudioError


def _config(args):
    from engines.config import load_config

    return load_config(args.config, args.set or [])


def _emit(payload, out: str | None = None) -> None:
    text = json.dumps(payload, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)


def cmd_prepare(args) -> None:
    from engines.data.prepare import prepare

    report = prepare(_config(args), midi_dir=args.midi_dir, manifest=args.manifest, out=args.out,
                     workers=args.workers)
    if args.pack:
        from engines.data.cache import pack

        pack(Path(report["out"]), Path(args.pack))
        report["packed"] = args.pack
    _emit(report)


def cmd_stats(args) -> None:
    from engines.data.cache import SegmentCache
    from engines.data.prepare import corpus_stats, ensure_corpus_cache

    cfg = _config(args)
    cache = SegmentCache(args.cache) if args.cache else ensure_corpus_cache(cfg)
    stats = corpus_stats(cache)
    if args.json is not None:
        _emit(stats, args.json or None)
        return
    print(f"{stats['segments']} segments from {stats['pieces']} pieces; splits {stats['splits']}")
    for mode, share in stats["mode_shares"].items():
        print(f"  {mode:<7} {stats['modes'][mode]:>6}  {share:6.1%}")
    for name, count in sorted(stats["collections"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {count:>6}")


def cmd_analyze(args) -> None:
    from engines.analysis import analyze_midi_file

    cfg = _config(args)
    results = analyze_midi_file(args.file, cfg, with_features=args.features)
    if args.json:
        _emit(results)
        return
    for r in results:
        axes = ", ".join(f"{k} {v:+.2f}" if k == "valence" else f"{k} {v:.2f}" for k, v in r["axes"].items())
        print(f"bars {r['bars'][0]:>3}-{r['bars'][1]:<3} {r['mode']:<7} {r['key']:<9} rebracketing "
              f"{r['rebracketing']:.2f}  temporal complexity {r['temporal_complexity']:.2f}  ({axes})")


def cmd_calibrate(args) -> None:
    import numpy as np

    from engines.data.cache import FEATURE_NAMES, SegmentCache
    from engines.data.prepare import corpus_cache_dir
    from engines.music import analyzer

    cfg = _config(args)
    cache = SegmentCache(args.cache or corpus_cache_dir(cfg))
    table = np.asarray(cache.segments["features"], dtype=float)
    rows = [dict(zip(FEATURE_NAMES, row)) for row in table]
    constants = analyzer.calibrate(rows)
    target = Path(analyzer.__file__).with_name("calibration.py")
    if args.write:
        analyzer.write_calibration(constants, target, f"{len(rows)} segments of {cache.directory}")
        print(f"wrote {target}; run `python -m engines prepare` to relabel the cache", file=sys.stderr)
    _emit(constants)


def cmd_render(args) -> None:
    from engines.render.fluidsynth_renderer import render_midi_file, write_audio

    cfg = _config(args)
    soundfont = args.soundfont or cfg.render.soundfont
    audio = render_midi_file(args.file, sample_rate=cfg.render.sample_rate, soundfont=soundfont,
                             gain=cfg.render.gain, tail_seconds=cfg.render.tail_seconds)
    write_audio(audio, args.out, cfg.render.sample_rate)
    _emit({"out": args.out, "seconds": round(len(audio) / cfg.render.sample_rate, 3),
           "sample_rate": cfg.render.sample_rate})


# engine -> (module, function) of its trainer; every trainer takes the same arguments
TRAINERS = {"vae": ("engines.training.vae_trainer", "train_vae"),
            "diffusion": ("engines.training.diffusion_trainer", "train_diffusion"),
            "guidance-classifier": ("engines.training.guidance_trainer", "train_guidance_classifier"),
            "autoregressive": ("engines.training.autoregressive_trainer", "train_autoregressive"),
            "codec": ("engines.training.codec_trainer", "train_codec"),
            "judge": ("engines.training.judge_trainer", "train_judge")}


def cmd_train(args) -> None:
    import json as _json

    cfg = _config(args)
    out = args.out or f"data/runs/{args.engine}"
    if args.finalize_only:
        if args.engine not in ("vae", "diffusion"):
            raise StudioError("--finalize-only applies to the VAE and the diffusion engine")
        if not (Path(out) / "best.pt").is_file():
            raise StudioError(f"--finalize-only needs a run directory with best.pt; '{out}' has none")
        summary = _finalize(args.engine, str(Path(out) / "best.pt"), cfg, args)
        record = Path(out) / "command.json"
        command = _json.loads(record.read_text()) if record.is_file() else {}
        command.update(finalize_argv=sys.argv, finalize=summary)
        record.write_text(_json.dumps(command, indent=1))
        _emit({"out": out, "finalize": summary})
        return
    module, function = TRAINERS[args.engine]
    train = getattr(importlib.import_module(module), function)  # imported here: torch loads only to train
    best = train(cfg, out, max_minutes=args.max_minutes, resume=args.resume, limit=args.limit, seed=args.seed,
                 workers=args.workers)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "command.json").write_text(_json.dumps({"argv": sys.argv, "best": best}, indent=1))
    _emit({"out": out, "best": best})


def _finalize(engine: str, checkpoint: str, cfg, args) -> dict:
    """The step after training that fits what the weights do not hold (the VAE's latent vectors and map, the
    diffusion decoding's onset threshold)."""
    if engine == "vae":
        from engines.training.vae_finalize import finalize_vae

        return finalize_vae(checkpoint, cfg, limit=args.limit, seed=args.seed)
    from engines.training.diffusion_finalize import finalize_diffusion

    return finalize_diffusion(checkpoint, cfg, seed=args.seed, limit=args.limit)


def cmd_evaluate(args) -> None:
    cfg = _config(args)
    if args.real:
        from engines.evaluation.suite import evaluate_real

        _emit(evaluate_real(cfg, n_per_mode=args.n, seed=args.seed, use_cache=not args.no_cache), args.json)
        return
    if not args.engine:
        raise StudioError("evaluate needs --engine vae|diffusion|autoregressive|codec|judge, or --real for the baseline")
    checkpoint = args.checkpoint or str(Path(cfg.model.checkpoints_dir) / f"{args.engine}.pt")
    result = _engine_evaluation(args, cfg, checkpoint)
    if args.engine not in ("codec", "judge") and not args.no_suite:
        from engines.evaluation.suite import evaluate_suite

        suite = evaluate_suite(args.engine, checkpoint, cfg, n_per_mode=args.n, seed=args.seed,
                               use_cache=not args.no_cache)
        for key in set(result) & set(suite):
            if isinstance(result[key], dict) and result[key] != suite[key]:
                # the engine's own measure under the suite's name (diffusion's Fréchet in analyzer-feature
                # space) stays, renamed: "frechet_diffusion"
                result[f"{key}_{args.engine}"] = result.pop(key)
        result = {**result, **suite}
    _emit(result, args.json)


def cmd_compare(args) -> None:
    from engines.evaluation.report import comparison_markdown, comparison_row

    rows = []
    for path in args.reports:
        try:
            report = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StudioError(f"cannot read the evaluate JSON '{path}': {exc}") from None
        if "frechet" not in report or "diversity" not in report:
            raise StudioError(f"'{path}' holds no suite results; run `python -m engines evaluate` without --no-suite")
        rows.append(comparison_row(report.get("engine") or Path(path).stem, report))
    print(comparison_markdown(rows))


def _engine_evaluation(args, cfg, checkpoint: str) -> dict:
    """The engine's own bars (the keys its issue defined)."""
    if args.engine == "vae":
        from engines.evaluation.vae_eval import evaluate_vae

        return evaluate_vae(checkpoint, cfg, n_per_mode=args.n, test_limit=args.test_limit, seed=args.seed)
    if args.engine == "codec":
        from engines.evaluation.codec_eval import evaluate_codec

        return evaluate_codec(checkpoint, cfg, n=args.n)
    if args.engine == "judge":
        from engines.evaluation.judge_eval import evaluate_judge

        return evaluate_judge(checkpoint, cfg, test_limit=args.test_limit)
    if args.engine == "autoregressive":
        from engines.evaluation.autoregressive_eval import evaluate_autoregressive

        return evaluate_autoregressive(checkpoint, cfg, n_per_mode=args.n, seed=args.seed, test_limit=args.test_limit)
    from engines.evaluation.diffusion_eval import evaluate_diffusion

    if not Path(checkpoint).is_file():
        raise StudioError(f"no diffusion checkpoint at '{checkpoint}'; pass --checkpoint RUN/best.pt")
    classifier = args.classifier or str(Path(cfg.model.checkpoints_dir) / "guidance-classifier.pt")
    return evaluate_diffusion(checkpoint, cfg, n_per_mode=args.n, table_per_mode=args.table_n, seed=args.seed,
                              with_table=not args.no_table, classifier=classifier)


def cmd_generate(args) -> None:
    from engines.analysis import analyze_segments
    from engines.data.midi_io import write_segment_midi

    cfg = _config(args)
    checkpoint = args.checkpoint or str(Path(cfg.model.checkpoints_dir) / f"{args.engine}.pt")
    if args.engine == "vae":
        from engines.models.trained_vae import TrainedVAE

        temperature = 1.0 if args.temperature is None else args.temperature
        segments, _ = TrainedVAE.load(checkpoint).sample(args.mode, n=args.n, temperature=temperature,
                                                         seed=args.seed, tonic=args.tonic)
    elif args.engine == "autoregressive":
        segments = _autoregressive_segments(args, cfg, checkpoint)
    else:
        segments = _diffusion_segments(args, cfg, checkpoint)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for i, segment in enumerate(segments):
        stem = f"{args.engine}-{args.mode.lower()}-{args.seed}-{i}"
        entry = {"midi": str(write_segment_midi(segment, out / f"{stem}.mid"))}
        if args.render:
            from engines.data.midi_io import segment_to_score
            from engines.render.fluidsynth_renderer import render_score, write_audio

            audio = render_score(segment_to_score(segment), sample_rate=cfg.render.sample_rate,
                                 soundfont=cfg.render.soundfont, gain=cfg.render.gain)
            entry["audio"] = str(write_audio(audio, out / f"{stem}.wav", cfg.render.sample_rate))
        if len(segment.notes):
            (entry["analysis"],) = analyze_segments([segment], cfg)
        else:
            entry["analysis"] = None
        summary.append(entry)
    _emit({"engine": args.engine, "mode": args.mode, "n": args.n, "seed": args.seed, "files": summary})


def _diffusion_segments(args, cfg, checkpoint: str) -> list:
    """`generate --engine diffusion`: sample, or inpaint `--init` keeping `--keep-bars`; classifier guidance
    when `--classifier-guidance` > 0."""
    from engines.models.guidance_classifier import GuidanceTarget, TrainedGuidanceClassifier
    from engines.models.trained_diffusion import TrainedDiffusion

    if not Path(checkpoint).is_file():
        raise StudioError(f"no diffusion checkpoint at '{checkpoint}': train one with `python -m engines "
                          f"train --engine diffusion --out RUN` and pass --checkpoint RUN/best.pt")
    if bool(args.init) != bool(args.keep_bars):
        raise StudioError("inpainting needs both --init FILE.mid and --keep-bars (e.g. 1,2)")
    engine = TrainedDiffusion.load(checkpoint)
    target = GuidanceTarget.parse(args.target, args.classifier_space or cfg.generation.sampling.classifier_space)
    if args.classifier_guidance > 0:
        path = args.classifier or str(Path(cfg.model.checkpoints_dir) / "guidance-classifier.pt")
        if not Path(path).is_file():
            raise StudioError(f"no guidance classifier at '{path}': train one with `python -m engines train "
                              "--engine guidance-classifier` and pass --classifier RUN/best.pt")
        engine.classifier = TrainedGuidanceClassifier.load(path)
    settings = dict(mode=args.mode, n=args.n, steps=args.steps or cfg.generation.sampling.num_steps,
                    sampler=args.sampler, eta=args.eta, seed=args.seed, tonic=args.tonic,
                    guidance_scale=cfg.generation.sampling.guidance_scale if args.guidance is None else args.guidance,
                    classifier_scale=args.classifier_guidance, target=target)
    if args.init:
        from engines.analysis import midi_file_segments

        keep = _bar_list(args.keep_bars)
        _, init_segments = midi_file_segments(args.init, cfg)
        return engine.inpaint(init_segments[0], keep, **settings)
    return engine.sample(metre=args.metre, **settings)


def _autoregressive_segments(args, cfg, checkpoint: str) -> list:
    """`generate --engine autoregressive`: from `--prompt` (default: the mode's prompt), or continuing the first
    `--keep-bars` bars of `--init`."""
    from engines.models.trained_autoregressive import TrainedAutoregressive

    if not Path(checkpoint).is_file():
        raise StudioError(f"no autoregressive checkpoint at '{checkpoint}': train one with `python -m engines "
                          f"train --engine autoregressive --out RUN` and pass --checkpoint RUN/best.pt")
    engine = TrainedAutoregressive.load(checkpoint)
    sampling = cfg.generation.sampling
    continue_from, keep = None, 0
    if args.init:
        from engines.analysis import midi_file_segments

        _, init_segments = midi_file_segments(args.init, cfg)
        continue_from = init_segments[0]
        keep = _bar_count(args.keep_bars or "2")
    elif args.keep_bars:
        raise StudioError("--keep-bars continues a MIDI file: give it with --init FILE.mid")
    results = engine.generate(args.prompt, mode=args.mode, n=args.n, seed=args.seed,
                              temperature=args.temperature if args.temperature is not None else sampling.temperature,
                              top_k=sampling.top_k if args.top_k is None else args.top_k,
                              top_p=sampling.top_p if args.top_p is None else args.top_p,
                              beam_width=args.beam, max_bars=args.max_bars, continue_from=continue_from,
                              keep_bars=keep,
                              guidance_scale=sampling.prompt_guidance if args.guidance is None else args.guidance)
    return [r.segment for r in results]


def _bar_count(text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise StudioError(f"--keep-bars for a continuation is a number of bars, e.g. 2; got '{text}'") from None


def _bar_list(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise StudioError(f"--keep-bars takes bar numbers separated by commas, e.g. 1,2; got '{text}'") from None


def cmd_ship(args) -> None:
    from engines.training.model_card import ship

    cfg = _config(args)
    _emit(ship(args.engine, args.run, cfg.model.checkpoints_dir, args.evaluation))


def cmd_bench(args) -> None:
    from engines.bench import run_benchmarks

    _emit(run_benchmarks(_config(args), repeats=args.repeats), args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="YAML file of config overrides (see assets/configs/)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config key; repeatable")
        p.set_defaults(func=func)
        return p

    p = command("prepare", cmd_prepare, "build the segment cache from the music21 corpus or a MIDI folder")
    p.add_argument("--midi-dir", help="a folder of .mid/.midi files instead of the bundled corpus")
    p.add_argument("--manifest", help="CSV of labels (path,mode,...) that override the analyzer")
    p.add_argument("--out", help="cache directory (default: <data.cache_dir>/corpus or midi-<folder>)")
    p.add_argument("--workers", type=int, default=0, help="parallel processes (default: all cores)")
    p.add_argument("--pack", metavar="NPZ", help="also pack the cache into one archive (what assets/ ships)")

    p = command("stats", cmd_stats, "counts of segments, pieces, splits, modes and collections")
    p.add_argument("--json", nargs="?", const="", metavar="OUT", help="print JSON (and write it to OUT)")
    p.add_argument("--cache", help="a cache directory other than the corpus one")

    p = command("analyze", cmd_analyze, "chromatic analysis of each segment of a MIDI file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print a JSON list, one entry per segment")
    p.add_argument("--features", action="store_true", help="include the raw features")

    p = command("calibrate", cmd_calibrate, "measure the corpus constants of the chromatic analyzer")
    p.add_argument("--write", action="store_true", help="write engines/music/calibration.py")
    p.add_argument("--cache", help="cache directory to measure (default: the corpus cache)")

    p = command("render", cmd_render, "render a MIDI file to WAV or FLAC with FluidSynth")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="output .wav or .flac")
    p.add_argument("--soundfont", help="an .sf2/.sf3 file (default: soundfonts/, system, TimGM6mb)")

    p = command("train", cmd_train, "train an engine on the segment cache (best.pt, last.pt, metrics.jsonl)")
    p.add_argument("--engine", required=True, choices=list(TRAINERS))
    p.add_argument("--out", help="run directory (default data/runs/<engine>)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop after this much training time")
    p.add_argument("--resume", action="store_true", help="continue from <out>/last.pt")
    p.add_argument("--limit", type=int, default=0, help="use only the first N training segments (smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="data-loading processes")
    p.add_argument("--finalize-only", action="store_true",
                   help="only (re)fit what follows training (latent vectors, map, onset threshold) on <out>/best.pt")

    p = command("evaluate", cmd_evaluate, "measure an engine's quality bars on the held-out split, as JSON")
    p.add_argument("--engine", choices=["vae", "diffusion", "autoregressive", "codec", "judge"])
    p.add_argument("--real", action="store_true", help="the baseline: held-out real segments through the suite")
    p.add_argument("--no-suite", action="store_true", help="only the engine's own bars (no Fréchet, diversity, "
                                                           "judge, musical statistics)")
    p.add_argument("--no-cache", action="store_true", help="measure again even if these settings were measured")
    p.add_argument("--checkpoint", help="default: assets/checkpoints/<engine>.pt")
    p.add_argument("--n", type=int, default=50, help="samples per mode (codec: held-out renders, e.g. 100)")
    p.add_argument("--test-limit", type=int, default=2000, help="VAE: test segments for reconstruction; "
                                                               "autoregressive: for perplexity (0 = all)")
    p.add_argument("--table-n", type=int, default=4, help="diffusion: samples per mode in each steps-table row")
    p.add_argument("--no-table", action="store_true", help="diffusion: skip the quality-vs-speed table")
    p.add_argument("--classifier", help="diffusion: guidance classifier (default: <checkpoints>/guidance-classifier.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="also write the JSON to OUT")

    p = command("compare", cmd_compare, "evaluate JSONs side by side, as a markdown table")
    p.add_argument("reports", nargs="+", metavar="JSON", help="outputs of `evaluate --json` (engines or --real)")

    p = command("generate", cmd_generate, "generate segments as MIDI (and audio) with a JSON summary")
    p.add_argument("--engine", required=True, choices=["vae", "diffusion", "autoregressive"])
    p.add_argument("--mode", default="WHITE", help="BLACK RED ORANGE YELLOW GREEN BLUE INDIGO VIOLET or WHITE")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, help="VAE: prior temperature (default 1); autoregressive: "
                                                     "sampling temperature (default generation.sampling.temperature)")
    p.add_argument("--prompt", help='autoregressive: what to write, e.g. "a calm, intimate BLUE phrase" '
                                    "(default: the mode's prompt)")
    p.add_argument("--top-k", type=int, help="autoregressive: keep the k most probable tokens (0 = off)")
    p.add_argument("--top-p", type=float, help="autoregressive: nucleus sampling mass (1 = off)")
    p.add_argument("--beam", type=int, default=1, help="autoregressive: beam width (1 = sample)")
    p.add_argument("--max-bars", type=int, default=4, help="autoregressive: bars to write")
    p.add_argument("--steps", type=int, help="diffusion: sampling steps (default generation.sampling.num_steps)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpmsolver++"],
                   help="diffusion: sampler (dpmsolver++: DPM-Solver++ 2M, good in 10-20 steps)")
    p.add_argument("--eta", type=float, default=0.0, help="diffusion: DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="diffusion: classifier-free guidance scale (default generation."
                                                  "sampling.guidance_scale); autoregressive: guidance toward the "
                                                  "prompt (default generation.sampling.prompt_guidance, 1 = off)")
    p.add_argument("--metre", help="diffusion: time signature such as 3/4 (default: drawn for the mode)")
    p.add_argument("--classifier-guidance", type=float, default=0.0, metavar="S",
                   help="diffusion: classifier-guidance strength (0 = off)")
    p.add_argument("--target", help="diffusion: what classifier guidance steers toward: mode, rebracketing=high, "
                                    "rebracketing=low, comma-separated (default: mode)")
    p.add_argument("--classifier-space", choices=["x0", "x_t"],
                   help="diffusion: where the classifier's gradient is taken (default generation.sampling."
                        "classifier_space, x0)")
    p.add_argument("--classifier", help="diffusion: guidance classifier (default <checkpoints>/guidance-classifier.pt)")
    p.add_argument("--init", help="diffusion inpainting / autoregressive continuation: a MIDI file whose first "
                                  "segment is kept in part")
    p.add_argument("--keep-bars", help="diffusion inpainting: the bars of --init to keep, e.g. 1,2 (the others "
                                       "are regenerated); autoregressive: how many first bars to continue (default 2)")
    p.add_argument("--tonic", help="tonic of the key to write in, e.g. G or Bb (default C)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--render", action="store_true", help="also render WAV files with FluidSynth")
    p.add_argument("--checkpoint", help="default: assets/checkpoints/<engine>.pt")

    p = command("ship", cmd_ship, "copy a run's best.pt into the checkpoints folder with a model card")
    p.add_argument("--engine", required=True, choices=list(TRAINERS))
    p.add_argument("--run", required=True, help="the training run directory (holds best.pt, metrics.jsonl)")
    p.add_argument("--evaluation", help="evaluate JSON to include in the card")

    p = command("bench", cmd_bench, "speed benchmarks (medians over repeats), as JSON")
    p.add_argument("--json", metavar="OUT", help="also write the JSON to OUT")
    p.add_argument("--repeats", type=int, default=5)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; `prepare` resumes where it stopped", file=sys.stderr)
        return 130
    return 0
