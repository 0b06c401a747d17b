"""`python -m engines <command>`: prepare | stats | analyze | calibrate | render | train | evaluate | compare | generate | ship | bench | listen.

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
    from engines.data.prepare import prepare, relabel

    if args.relabel:
        if args.midi_dir or args.manifest:
            raise StudioError("--relabel re-analyses a built cache; it takes no --midi-dir or --manifest")
        report = relabel(_config(args), args.out, workers=args.workers)
        if args.pack:
            from engines.data.cache import pack

            pack(Path(report["out"]), Path(args.pack))
        _emit(report)
        return
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
    results = analyze_midi_file(args.file, cfg, with_features=args.features,
                                on_excerpt=lambda note: print(note, file=sys.stderr))
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

# engine -> (module, function) of the step after its training (finalize-only); each takes (checkpoint, cfg, limit, seed)
FINALIZERS = {"vae": ("engines.training.vae_finalize", "finalize_vae"),
              "diffusion": ("engines.training.diffusion_finalize", "finalize_diffusion"),
              "autoregressive": ("engines.training.autoregressive_trainer", "finalize_autoregressive")}
# the engines whose trainer runs that step itself at the end (train(..., finalize=False) skips it); the GPT's does not
FINALIZED_WHEN_TRAINED = ("vae", "diffusion")


def _record_command(record: Path, resume: bool, best) -> None:
    """A run's command.json: this command and its best row. A resumed run keeps what the file held besides
    (the steps before it, `preceded_by`; a finalize record); a new run starts the file afresh."""
    import json as _json

    kept = _json.loads(record.read_text()) if resume and record.is_file() else {}
    from engines.training.common import device_name

    # the machine that trains: the card is often rendered on another, the one that ships
    kept.update(argv=sys.argv, best=best, device=device_name())
    record.write_text(_json.dumps(kept, indent=1))


def cmd_train(args) -> None:
    import json as _json

    cfg = _config(args)
    out = args.out or f"data/runs/{args.engine}"
    if args.finalize_only:
        if args.engine not in FINALIZERS:
            raise StudioError(f"--finalize-only applies to {' and '.join(FINALIZERS)}")
        if not (Path(out) / "best.pt").is_file():
            raise StudioError(f"--finalize-only needs a run directory with best.pt; '{out}' has none")
        summary = _finalize(args.engine, str(Path(out) / "best.pt"), cfg, args)
        record = Path(out) / "command.json"
        command = _json.loads(record.read_text()) if record.is_file() else {}
        if args.finalize_step:   # a step run after the whole finalize: both are on record, in order
            command.setdefault("finalize_steps", []).append({"argv": sys.argv, "summary": summary})
        else:
            command.update(finalize_argv=sys.argv, finalize=summary, finalize_steps=[])
        record.write_text(_json.dumps(command, indent=1))
        _emit({"out": out, "finalize": summary})
        return
    module, function = TRAINERS[args.engine]
    train = getattr(importlib.import_module(module), function)  # imported here: torch loads only to train
    record = Path(out) / "command.json"
    if int(os.environ.get("RANK", "0")) == 0:   # the command is on record from the start: a run stopped early
        Path(out).mkdir(parents=True, exist_ok=True)    # (or killed) still has its card's Reproduce line
        _record_command(record, args.resume, best=None)
    finalize = {"finalize": False} if args.skip_finalize and args.engine in FINALIZED_WHEN_TRAINED else {}
    best = train(cfg, out, max_minutes=args.max_minutes, resume=args.resume, limit=args.limit, seed=args.seed,
                 workers=args.workers, **finalize)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    _record_command(record, args.resume, best=best)
    if args.ship:   # what `ship --engine E --run OUT` does, in the same process
        from engines.training.model_card import ship

        _emit({"out": out, "best": best, "shipped": ship(args.engine, out, cfg.model.checkpoints_dir)})
        return
    _emit({"out": out, "best": best})


def _finalize(engine: str, checkpoint: str, cfg, args) -> dict:
    """The step after training that fits what the weights do not hold (the VAE's latent vectors and map, the
    diffusion decoding's onset threshold, the GPT's mode targets when its run predates them)."""
    module, function = FINALIZERS[engine]
    finalize = getattr(importlib.import_module(module), function)
    steps = getattr(args, "finalize_step", None)
    if steps and engine not in ("diffusion", "autoregressive"):
        raise StudioError("--finalize-step applies to the diffusion's and the GPT's finalize; the VAE's runs whole")
    return finalize(checkpoint, cfg, limit=args.limit, seed=args.seed, **({"steps": tuple(steps)} if steps else {}))


def cmd_evaluate(args) -> None:
    cfg = _config(args)
    if args.real:
        from engines.evaluation.suite import evaluate_real

        _emit(evaluate_real(cfg, n_per_mode=args.n, seed=args.seed, use_cache=not args.no_cache), args.json)
        return
    if not args.engine:
        raise StudioError(f"evaluate needs --engine {'|'.join(EVALUATIONS)}, or --real for the baseline")
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
    from engines.generation import GENERATORS

    if args.engine in GENERATORS and not args.no_suite:
        from engines.evaluation.targets import axes_report

        # asked against heard on the five axes, raw: held-out targets, one candidate each
        result["axes"] = axes_report(args.engine, checkpoint, cfg, n=8 * args.n, seed=args.seed,
                                     use_cache=not args.no_cache)
    if args.engine in GENERATORS and not args.no_suite and args.candidates != 1:
        from engines.evaluation.verified import merge_verification, verification_report

        result = merge_verification(result, verification_report(
            args.engine, checkpoint, cfg, n_per_mode=args.n, seed=args.seed, candidates=args.candidates,
            use_cache=not args.no_cache))
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


def _evaluate_diffusion(checkpoint: str, cfg, args) -> dict:
    from engines.evaluation.diffusion_eval import evaluate_diffusion

    if not Path(checkpoint).is_file():
        raise StudioError(f"no diffusion checkpoint at '{checkpoint}'; pass --checkpoint RUN/best.pt")
    classifier = args.classifier or str(Path(cfg.model.checkpoints_dir) / "guidance-classifier.pt")
    return evaluate_diffusion(checkpoint, cfg, n_per_mode=args.n, table_per_mode=args.table_n, seed=args.seed,
                              with_table=not args.no_table, classifier=classifier)


# engine -> its own evaluation (the keys its issue defined): (module, function) called as (checkpoint, cfg,
# **keyword arguments taken from the command line), or a function of (checkpoint, cfg, args)
EVALUATIONS = {
    "vae": ("engines.evaluation.vae_eval", "evaluate_vae", lambda a: dict(n_per_mode=a.n, test_limit=a.test_limit,
                                                                          seed=a.seed)),
    "diffusion": _evaluate_diffusion,
    "autoregressive": ("engines.evaluation.autoregressive_eval", "evaluate_autoregressive",
                       lambda a: dict(n_per_mode=a.n, seed=a.seed, test_limit=a.test_limit)),
    "codec": ("engines.evaluation.codec_eval", "evaluate_codec", lambda a: dict(n=a.n)),
    "judge": ("engines.evaluation.judge_eval", "evaluate_judge", lambda a: dict(test_limit=a.test_limit)),
}


def _engine_evaluation(args, cfg, checkpoint: str) -> dict:
    """The engine's own bars (EVALUATIONS)."""
    entry = EVALUATIONS[args.engine]
    if callable(entry):
        return entry(checkpoint, cfg, args)
    module, function, keywords = entry
    return getattr(importlib.import_module(module), function)(checkpoint, cfg, **keywords(args))


# generate's sampling flags -> the engine setting each sets (the first of the names the engine has)
FLAG_SETTINGS = {"temperature": ("temperature",), "prompt": ("prompt",), "top_k": ("top_k",), "top_p": ("top_p",),
                 "beam": ("beam_width",), "max_bars": ("max_bars",), "steps": ("steps",), "sampler": ("sampler",),
                 "eta": ("eta",), "guidance": ("guidance_scale", "prompt_guidance"),
                 "classifier_guidance": ("classifier_scale",), "target": ("classifier_target",),
                 "classifier_space": ("classifier_space",), "axis_guidance": ("axis_guidance",)}


def cmd_generate(args) -> None:
    from engines.analysis import analyze_segments
    from engines.data.midi_io import write_segment_midi
    from engines.generation import GENERATORS, Request
    from engines.generation.verify import Verifier, draw

    cfg = _config(args)
    kind = GENERATORS[args.engine]
    checkpoint = args.checkpoint or str(Path(cfg.model.checkpoints_dir) / f"{args.engine}.pt")
    if not Path(checkpoint).is_file():
        raise StudioError(f"no {args.engine} checkpoint at '{checkpoint}': train one with `python -m engines train "
                          f"--engine {args.engine} --out RUN` and pass --checkpoint RUN/best.pt")
    settings = kind.settings_for(cfg, _flag_settings(args, kind))
    request = Request(engine=args.engine, mode=args.mode, n=args.n, seed=args.seed, tonic=args.tonic,
                      tempo=args.tempo, metre=args.metre, scale=args.scale, instrument=args.instrument,
                      dynamics=args.dynamics,
                      attributes=_attributes(args), init_midi=args.init, candidates=args.candidates,
                      keep_bars=_keep_bars(args.keep_bars, kind.init_verb) if args.keep_bars else None)
    if args.init and not args.keep_bars and kind.init_verb == "continued":
        request.keep_bars = [1, 2]
    if not kind.init_verb and (args.init or args.keep_bars):
        raise StudioError(f"the {args.engine} engine cannot keep bars of a segment: --init and --keep-bars are for "
                          "the diffusion engine (inpainting) and the GPT (continuation)")
    if args.keep_bars and not args.init:
        raise StudioError("--keep-bars keeps bars of a MIDI file: give it with --init FILE.mid")
    if args.init and not request.keep_bars:
        raise StudioError("inpainting needs both --init FILE.mid and --keep-bars (e.g. 1,2)")
    extra = {}
    if args.classifier:
        import inspect

        if "classifier_path" not in inspect.signature(kind.load).parameters:
            raise StudioError(f"--classifier does not apply to the {args.engine} engine")
        extra["classifier_path"] = args.classifier
    generator = kind.load(checkpoint, **extra)
    codec = _model_audio_codec(cfg, generator) if args.audio else None
    result = draw(generator, request, settings, Verifier.for_config(cfg), cfg=cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for i, (segment, check) in enumerate(zip(result.segments, result.verifications)):
        stem = f"{args.engine}-{result.asked_mode.lower()}-{args.seed}-{i}"
        entry = {"midi": str(write_segment_midi(segment, out / f"{stem}.mid"))}
        if args.render or args.audio:
            from engines.data.midi_io import segment_to_score
            from engines.render.fluidsynth_renderer import render_score, write_audio

            r = cfg.render
            audio = render_score(segment_to_score(segment), sample_rate=r.sample_rate, soundfont=r.soundfont,
                                 gain=r.gain, tail_seconds=r.tail_seconds)
            entry["audio"] = str(write_audio(audio, out / f"{stem}.wav", r.sample_rate))
        if codec is not None and len(segment.notes):
            import numpy as np

            from engines.models.trained_autoregressive import model_audio
            from engines.render.fluidsynth_renderer import write_audio

            try:
                own = model_audio(generator.model, codec, segment, args.seed + i, cfg.render.soundfont,
                                  cfg.render.gain).clip(-1, 1)
            except StudioError as exc:   # this segment only (its opening bars fill the context): the rest go on
                entry["model_audio_error"] = str(exc)
            else:
                entry["model_audio"] = str(write_audio(np.repeat(own[:, None], 2, axis=1),
                                                       out / f"{stem}-model-audio.wav", codec.config.sample_rate))
        entry["analysis"] = analyze_segments([segment], cfg)[0] if len(segment.notes) else None
        entry["verification"] = check.to_dict()
        summary.append(entry)
    _emit({"engine": args.engine, "mode": result.asked_mode, "n": args.n, "seed": args.seed,
           "candidates": result.candidates, "verification": result.summary(), "files": summary})


def _model_audio_codec(cfg, generator):
    """The codec the GPT's audio tokens decode with (--audio); StudioError when it cannot write audio."""
    from engines.models.codec import installed_codec
    from engines.models.trained_autoregressive import audio_codec_problem

    if generator.name != "autoregressive":
        raise StudioError("--audio writes the GPT's own audio tokens: use it with --engine autoregressive")
    codec = installed_codec(cfg)
    problem = audio_codec_problem(generator.model, codec)
    if problem:
        raise StudioError(problem)
    return codec


def cmd_arrange(args) -> None:
    from engines.arrange.arranger import Arranger
    from engines.arrange.plan import load_plan
    from engines.generation.verify import Verifier
    from engines.registry import ModelRegistry

    cfg = _config(args)
    plan = load_plan(args.plan)
    verifier = Verifier.for_config(cfg)
    arranger = Arranger(ModelRegistry(cfg.model.checkpoints_dir), cfg, verifier, candidates=args.candidates)

    def progress(index, section):
        print(f"section {index + 1} of {len(plan.sections)}: {section.plan.mode} by {section.plan.engine}, heard "
              f"{section.heard}, {section.segment.num_bars} bars in {section.seconds:.1f} s", file=sys.stderr)

    piece = arranger.arrange(plan, seed=args.seed, on_section=progress)
    files = piece.write(args.out, render=args.render, cfg=cfg)
    report = {"plan": str(args.plan), "seed": args.seed, **piece.report(verifier.analyzer), "files": files}
    Path(args.out, "report.json").write_text(json.dumps(report, indent=1))
    if args.json:
        _emit(report)
        return
    for number, (section, join) in enumerate(zip(report["sections"], [None] + report["joins"]), start=1):
        jump = f"; join: axes {join['axis_jump']:.3f}, density {join['density_jump']:.2f}" if join else ""
        print(f"{number}. {section['bars']} bars {section['asked']} by {section['engine']}: heard "
              f"{section['heard']} ({section['seconds']:.1f} s{jump})")
    print(f"{report['bars']} bars in {report['seconds']:.1f} s: {files['midi']}" +
          (f", {files['audio']}" if files["audio"] else ""))


def _flag_settings(args, kind) -> dict:
    """The engine settings the sampling flags given on the command line set; a flag the engine lacks is an error."""
    names = set(kind.Settings.__dataclass_fields__)
    settings = {}
    for flag, targets in FLAG_SETTINGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        target = next((t for t in targets if t in names), None)
        if target is None:
            raise StudioError(f"--{flag.replace('_', '-')} does not apply to the {kind.name} engine")
        settings[target] = value
    return settings


def _attributes(args) -> dict | None:
    """What --energy ... --temporal-complexity ask for (the analyzer's scale), checked; None when nothing is."""
    from engines.music.analyzer import ANALYZER_ATTRIBUTES

    attributes = {}
    for name in ANALYZER_ATTRIBUTES:
        value = getattr(args, name)
        if value is None:
            continue
        low = -1.0 if name == "valence" else 0.0
        if not low <= value <= 1.0:
            raise StudioError(f"--{name.replace('_', '-')} must lie in {low:g}..1, got {value:g}")
        attributes[name] = value
    return attributes or None


def _keep_bars(text: str, verb: str) -> list[int]:
    """--keep-bars: bar numbers (1,2); a GPT continuation also takes a count (2: bars 1 and 2)."""
    try:
        bars = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise StudioError(f"--keep-bars takes bar numbers separated by commas, e.g. 1,2; got '{text}'") from None
    if verb == "continued" and len(bars) == 1:
        return list(range(1, bars[0] + 1))
    return bars


def cmd_ship(args) -> None:
    from engines.training.model_card import ship

    cfg = _config(args)
    if args.run is None:   # the shipped checkpoint stays; its card's evaluation is measured again
        from engines.training.model_card import refresh_card

        if not args.evaluation:
            raise StudioError("ship needs --run DIR (a training run to ship) or --evaluation JSON (to refresh the "
                              "shipped card's evaluation)")
        _emit(refresh_card(args.engine, cfg.model.checkpoints_dir, args.evaluation))
        return
    _emit(ship(args.engine, args.run, cfg.model.checkpoints_dir, args.evaluation))


def cmd_bench(args) -> None:
    from engines.bench import run_benchmarks

    _emit(run_benchmarks(_config(args), repeats=args.repeats), args.json)


def cmd_loadtest(args) -> None:
    from engines.loadtest import LoadTest, parse_mix

    test = LoadTest(args.url, clients=args.clients, seconds=args.seconds, mix=parse_mix(args.mix),
                    grace=args.grace, settle=args.settle, pid=args.pid)
    _emit(test.run(), args.json)


# ---- listen: blinded A/B listening studies, for the organiser on the studio's machine -------------------------
def _listening(args, generate: bool = False):
    """The listening service on the config's database. Whoever runs this holds the database, so creating
    needs no creator key here; a session's own organiser key is still asked for its results and closing."""
    from engines.sessions.listening import ListeningService
    from engines.sessions.locations import check_private_database, check_session_folders
    from engines.sessions.store import SessionStore

    cfg = _config(args)
    s = cfg.sessions
    check_private_database(s.database, s.stimuli_dir)
    check_session_folders(s.database, s.stimuli_dir)
    if generate:   # stimuli are generated through the same StudioEngine as the studio's
        from engines.api import StudioEngine

        return StudioEngine(cfg).listening
    return ListeningService(None, SessionStore(s.database), s.stimuli_dir, allowed_folders=s.allowed_folders)


def _base_url(args) -> str:
    if args.base_url:
        return args.base_url
    import socket

    cfg = _config(args)
    host = cfg.studio.host if cfg.studio.host not in ("0.0.0.0", "::") else socket.gethostname()
    return f"http://{host}:{cfg.studio.port}/"


def cmd_listen_create(args) -> None:
    import yaml

    from engines.sessions.listening import plan_from_spec

    path = Path(args.spec)
    if not path.is_file():
        raise StudioError(f"spec file '{path}' does not exist (an example: assets/configs/studies/mode_test.yaml)")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise StudioError(f"spec file '{path}' is not valid YAML: {exc}") from None
    plan = plan_from_spec(spec, source=f"spec file '{path}'")
    service = _listening(args, generate=True)
    service.open_creation = True   # the database's holder may create (see _listening)
    progress = None if args.json else (lambda done, total, what: print(f"[{done}/{total}] {what}", flush=True))
    made = service.create(plan, progress=progress)
    out = {"code": made.code, "organiser_key": made.organiser_key, "pairs": made.pairs,
           "rater_links": made.rater_links(_base_url(args))}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"session {made.code}: {made.pairs} pairs\norganiser key (shown once): {made.organiser_key}\n"
              "rater links:\n" + "\n".join(out["rater_links"]))


def cmd_listen_results(args) -> None:
    result = _listening(args).results(args.code, args.key)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    session = result["session"]
    print(f"{session['code']} · {session['title']} · {session['status']} · {result['votes']} votes from "
          f"{result['raters']} raters")
    for row in result["head_to_head"]:
        print(f"  {row['system_a']} vs {row['system_b']}: {row['a_wins']}-{row['b_wins']} ({row['ties']} ties), "
              f"p = {row['p_value']:.3f}")


def cmd_listen_close(args) -> None:
    info = _listening(args).close(args.code, args.key)
    print(f"session {info['code']} is closed: no more joining or votes")


def cmd_listen_reopen(args) -> None:
    info = _listening(args).reopen(args.code, args.key)
    print(f"session {info['code']} is open again")


def cmd_listen_invite(args) -> None:
    from engines.sessions.listening import rater_link

    service = _listening(args)
    tokens = service.add_raters(args.code, args.key, args.n)
    info = service.store.session(args.code)
    if tokens:
        print("\n".join(rater_link(_base_url(args), info["code"], t) for t in tokens))
    else:
        print(f"session {info['code']}: room for {info['max_raters'] or 'any number of'} raters")


def cmd_listen_rekey(args) -> None:
    print(_listening(args).store.rekey(args.code))


def cmd_listen_key(args) -> None:
    print(_listening(args).store.add_creator_key())


def build_parser() -> argparse.ArgumentParser:
    from engines.generation import GENERATORS  # the engine names (no torch is imported)
    from engines.music.performance import DYNAMICS, SCALES

    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, func, help_text, under=sub):
        p = under.add_parser(name, help=help_text, description=help_text)
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
    p.add_argument("--relabel", action="store_true",
                   help="only re-analyse the built cache (--out, default the corpus one) with the analyzer as it is "
                        "now: after a change of its version or calibration, minutes instead of a full parse")

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
    p.add_argument("--ship", action="store_true", help="then copy best.pt into model.checkpoints_dir with its model "
                                                       "card, as the ship command does")
    p.add_argument("--finalize-only", action="store_true",
                   help="only (re)fit what follows training (latent vectors, map, onset threshold) on <out>/best.pt")
    p.add_argument("--finalize-step", action="append", metavar="STEP",
                   help="with --finalize-only (diffusion, autoregressive): run only this step of it (diffusion: "
                        "statistics, targets, attribute-metres, onset-threshold; autoregressive: targets, "
                        "attribute-metres, sampling; repeatable), keeping what the others wrote")
    p.add_argument("--skip-finalize", action="store_true",
                   help="train only (VAE, diffusion): leave the step after training to a later --finalize-only, "
                        "e.g. on the CPU machine that ships the run (the GPT never finalizes while training)")

    p = command("evaluate", cmd_evaluate, "measure an engine's quality bars on the held-out split, as JSON")
    p.add_argument("--engine", choices=list(EVALUATIONS))
    p.add_argument("--real", action="store_true", help="the baseline: held-out real segments through the suite")
    p.add_argument("--no-suite", action="store_true", help="only the engine's own bars (no Fréchet, diversity, "
                                                           "judge, musical statistics)")
    p.add_argument("--no-cache", action="store_true", help="measure again even if these settings were measured")
    p.add_argument("--checkpoint", help="default: assets/checkpoints/<engine>.pt")
    p.add_argument("--n", type=int, default=50, help="samples per mode (codec: held-out renders, e.g. 100)")
    p.add_argument("--test-limit", type=int, default=2000, help="VAE: test segments for reconstruction; "
                                                               "autoregressive: for perplexity (0 = all)")
    p.add_argument("--candidates", type=int, metavar="K",
                   help="generative engines: also measure verified generation with K candidates per result "
                        "(default: the engine's own K) beside the raw model: consistency.raw/.verified, "
                        "judge.consistency.raw/.verified, copies.raw/.verified, latency_ms.raw/.verified; "
                        "1 skips it")
    p.add_argument("--table-n", type=int, default=4, help="diffusion: samples per mode in each steps-table row")
    p.add_argument("--no-table", action="store_true", help="diffusion: skip the quality-vs-speed table")
    p.add_argument("--classifier", help="diffusion: guidance classifier (default: <checkpoints>/guidance-classifier.pt)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="also write the JSON to OUT")

    p = command("compare", cmd_compare, "evaluate JSONs side by side, as a markdown table")
    p.add_argument("reports", nargs="+", metavar="JSON", help="outputs of `evaluate --json` (engines or --real)")

    p = command("arrange", cmd_arrange, "write a piece from a plan of sections (assets/plans/): piece.mid, "
                                        "report.json and, with --render, piece.wav")
    p.add_argument("--plan", required=True, help="a plan JSON: sections of 4, 8 or 16 bars, each a mode or axis "
                                                 "targets and an engine (docs/arrange.md)")
    p.add_argument("--out", required=True, help="folder for piece.mid, piece.wav and report.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--render", action="store_true", help="also render piece.wav through FluidSynth")
    p.add_argument("--candidates", type=int, metavar="K", help="candidates per 4-bar window, ranked by the judge "
                                                              "(default: each engine's; 1 = the raw model)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (it is also in report.json)")

    p = command("generate", cmd_generate, "generate segments as MIDI (and audio) with a JSON summary")
    p.add_argument("--engine", required=True, choices=list(GENERATORS))
    p.add_argument("--mode", default="WHITE", help="BLACK RED ORANGE YELLOW GREEN BLUE INDIGO VIOLET or WHITE")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--candidates", type=int, metavar="K",
                   help="verified generation: draw K candidates per result, return the best by the judge, never a "
                        "copy of a training segment (default: the engine's, generation.sampling.<engine>."
                        "candidates: VAE 16, diffusion and GPT 8; 1 = the raw model, unchecked). K candidates "
                        "cost about K times one draw")
    p.add_argument("--rebracketing", type=float, help="target rebracketing 0..1 (VAE and diffusion condition on it; "
                                                      "verification ranks by it)")
    p.add_argument("--temporal-complexity", type=float, help="target temporal complexity 0..1 (as --rebracketing)")
    for axis, meaning in (("energy", "0..1"), ("valence", "-1 (dark) .. 1 (bright)"), ("tension", "0..1"),
                          ("intimacy", "0..1"), ("motion", "0..1")):
        p.add_argument(f"--{axis}", type=float, help=f"target {axis} {meaning}: where the result should land on "
                                                      "that axis (VAE and diffusion condition on it; verification "
                                                      "ranks by it; a mode fills the axes not given)")
    p.add_argument("--temperature", type=float, help="VAE: prior temperature; autoregressive: sampling temperature "
                                                     "(default generation.sampling.<engine>.temperature)")
    p.add_argument("--prompt", help='autoregressive: what to write, e.g. "a calm, intimate BLUE phrase" '
                                    "(default: the mode's prompt)")
    p.add_argument("--top-k", type=int, help="autoregressive: keep the k most probable tokens (0 = off)")
    p.add_argument("--top-p", type=float, help="autoregressive: nucleus sampling mass (1 = off)")
    p.add_argument("--beam", type=int, help="autoregressive: beam width (1 = sample; > 1: one unchecked result)")
    p.add_argument("--max-bars", type=int, help="autoregressive: bars to write (default 4)")
    p.add_argument("--steps", type=int, help="diffusion: sampling steps (default generation.sampling.diffusion.steps)")
    p.add_argument("--sampler", choices=["ddim", "ddpm", "dpmsolver++"],
                   help="diffusion: sampler (dpmsolver++: DPM-Solver++ 2M, good in 10-20 steps; default ddim)")
    p.add_argument("--eta", type=float, help="diffusion: DDIM eta (0 = deterministic)")
    p.add_argument("--guidance", type=float, help="diffusion: classifier-free guidance scale (default generation."
                                                  "sampling.diffusion.guidance_scale); autoregressive: guidance "
                                                  "toward the prompt (default generation.sampling.autoregressive."
                                                  "prompt_guidance, 1 = off)")
    p.add_argument("--metre", help="time signature such as 3/4, one the corpus has (default: the engine's)")
    p.add_argument("--tempo", type=float, help="quarter notes per minute, 30-300 (default: the mode's)")
    p.add_argument("--scale", choices=SCALES, help="the parallel key when heard in the other")
    p.add_argument("--instrument", type=int, metavar="1-128", help="General MIDI program (1 = piano, 41 = violin)")
    p.add_argument("--dynamics", choices=list(DYNAMICS), help="loudness (default mf)")
    p.add_argument("--classifier-guidance", type=float, metavar="S",
                   help="diffusion: classifier-guidance strength (0 = off)")
    p.add_argument("--target", help="diffusion: what classifier guidance steers toward: mode, rebracketing=high, "
                                    "rebracketing=low, comma-separated (default: mode)")
    p.add_argument("--axis-guidance", type=float, metavar="S",
                   help="diffusion: how hard the guidance classifier pulls a result toward the asked axes "
                        "(--energy ... --motion; default 1, 0 = off)")
    p.add_argument("--classifier-space", choices=["x0", "x_t"],
                   help="diffusion: where the classifier's gradient is taken (default x0)")
    p.add_argument("--classifier", help="diffusion: guidance classifier (default: guidance-classifier.pt beside "
                                        "the checkpoint)")
    p.add_argument("--init", help="diffusion inpainting / autoregressive continuation: a MIDI file whose first "
                                  "segment is kept in part")
    p.add_argument("--keep-bars", help="diffusion inpainting: the bars of --init to keep, e.g. 1,2 (the others "
                                       "are regenerated); autoregressive: how many first bars to continue (default 2)")
    p.add_argument("--tonic", help="tonic of the key to write in, e.g. G or Bb (default C)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--render", action="store_true", help="also render WAV files with FluidSynth")
    p.add_argument("--audio", action="store_true", help="autoregressive: also the GPT's own audio (its audio "
                                                        "tokens of the opening seconds, decoded by the codec) beside "
                                                        "the MIDI and the FluidSynth render")
    p.add_argument("--checkpoint", help="default: assets/checkpoints/<engine>.pt")

    p = command("ship", cmd_ship, "copy a run's best.pt into the checkpoints folder with a model card")
    p.add_argument("--engine", required=True, choices=list(TRAINERS))
    p.add_argument("--run", help="the training run directory (holds best.pt, metrics.jsonl); without it, "
                                 "--evaluation refreshes the shipped card's evaluation sections")
    p.add_argument("--evaluation", help="evaluate JSON to include in the card")

    p = command("bench", cmd_bench, "speed benchmarks (medians over repeats), as JSON")
    p.add_argument("--json", metavar="OUT", help="also write the JSON to OUT")
    p.add_argument("--repeats", type=int, default=5)

    p = command("loadtest", cmd_loadtest, "many musicians at once: clients calling a running studio's generation "
                                           "API on this machine, as JSON")
    p.add_argument("--url", default="http://127.0.0.1:7860", help="the studio (loopback addresses only)")
    p.add_argument("--clients", type=int, default=30, help="clients, each sending one request at a time")
    p.add_argument("--seconds", type=float, default=120, help="how long requests are sent")
    p.add_argument("--mix", default="vae=1,diffusion=1,autoregressive=1", help="engines and their weights")
    p.add_argument("--grace", type=float, default=120, help="seconds to wait for requests still running at the end")
    p.add_argument("--settle", type=float, default=5, help="idle seconds before the memory after the run is read")
    p.add_argument("--pid", type=int, help="the studio's process (default: the one listening on the URL's port)")
    p.add_argument("--json", metavar="OUT", help="also write the JSON to OUT")

    listen = sub.add_parser("listen", help="blinded A/B listening studies: create, results, close, ...",
                            description="Blinded A/B listening studies on the studio's database (use the studio's "
                                        "--config / --set). Example spec: assets/configs/studies/mode_test.yaml")
    actions = listen.add_subparsers(dest="action", required=True)

    def action(name, func, help_text):   # each action takes the studio's --config / --set
        return command(name, func, help_text, under=actions)

    p = action("create", cmd_listen_create, "generate the stimuli of a study spec and open its session")
    p.add_argument("--spec", required=True, help="YAML: title, question, systems, modes, stimuli_per_mode, "
                                                 "pairs_per_rater, joining")
    p.add_argument("--json", action="store_true", help='print {"code", "organiser_key", "pairs", "rater_links"}')
    p.add_argument("--base-url", help="the studio's address for the rater links (default http://<studio.host>:"
                                      "<studio.port>/)")
    for name, func, help_text in (("results", cmd_listen_results, "a session's results (as the Results tab)"),
                                  ("close", cmd_listen_close, "close a session: no more joining or votes"),
                                  ("reopen", cmd_listen_reopen, "reopen a closed session"),
                                  ("invite", cmd_listen_invite, "add raters: invitation links, or a higher cap")):
        p = action(name, func, help_text)
        p.add_argument("code")
        p.add_argument("--key", required=True, help="the session's organiser key")
        if name == "results":
            p.add_argument("--json", action="store_true")
        if name == "invite":
            p.add_argument("--n", type=int, default=1, help="how many raters to add")
            p.add_argument("--base-url", help="the studio's address for the links")
    p = action("rekey", cmd_listen_rekey, "a new organiser key for a session (the old one stops working)")
    p.add_argument("code")
    action("key", cmd_listen_key, "a new organiser key for creating sessions in the studio (printed once)")
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
