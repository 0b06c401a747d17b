"""The shared evaluation suite (engines/evaluation/suite.py) on real segments and the shipped VAE, its cache,
and `evaluate --real` / the merged keys through the CLI."""
from __future__ import annotations

import json

import pytest

from engines.config import load_config
from engines.evaluation.suite import cache_key, cached, engine_samples, real_sample, suite_metrics
from engines.music.analyzer import MODES

SMALL = dict(bootstrap=20, baseline_pool=300, real_count=200)


@pytest.mark.slow
def test_real_segments_measured_by_the_suite_look_like_real_music():
    cfg = load_config()
    pool = real_sample(cfg, "validation", 400, seed=3, in_c=False)
    samples = {m: [s for s in pool if s.meta["mode"] == m][:4] for m in MODES}
    result = suite_metrics(samples, cfg, judge=None, seed=0, in_c=False, **SMALL)
    frechet = result["frechet"]
    assert frechet["distance"] >= 0 and frechet["real_baseline"] >= 0
    low, high = frechet["interval"]
    assert low <= frechet["distance"] <= high and frechet["embedding"].startswith("analyzer features")
    assert result["analyzer"]["consistency"]["overall"] == pytest.approx(1.0)  # the labels are the analyzer's
    assert set(result["diversity"]["per_mode"]) == set(MODES) | {"overall"}
    assert 0 <= result["diversity"]["copies"]["near_copy_rate"] <= 1
    stats = result["music_stats"]
    assert stats["pitch_range"]["overlap"] > 0.5  # real against real: the distributions overlap widely
    assert "error" in result["judge"] and result["empty_rate"] == 0


def test_vae_samples_through_the_suite():
    cfg = load_config()
    samples = engine_samples("vae", "assets/checkpoints/vae.pt", cfg, n_per_mode=3, seed=0)
    assert set(samples) == set(MODES) and all(len(v) == 3 for v in samples.values())
    result = suite_metrics(samples, cfg, judge=None, seed=0, in_c=True, **SMALL)
    assert 0 <= result["analyzer"]["consistency"]["overall"] <= 1
    assert result["frechet"]["distance"] > 0


@pytest.mark.slow
def test_sampling_stops_when_the_callback_says_so():
    from engines.evaluation.report import evaluation_report

    seen = []
    report = evaluation_report("vae", "assets/checkpoints/vae.pt", load_config(), n_per_mode=2,
                               on_mode=lambda i, mode: seen.append(mode) or i == 3, bootstrap=10)
    assert seen == ["BLACK", "RED", "ORANGE", "YELLOW"] and [r["mode"] for r in report["per_mode"]] == list(MODES[:3])


def test_results_are_cached_by_what_was_measured(tmp_path):
    cfg = load_config(overrides=[f"data.cache_dir={tmp_path}"])
    calls = []
    compute = lambda: calls.append(1) or {"x": len(calls)}  # noqa: E731
    key = cache_key("vae", None, {"n": 3})
    assert cached(cfg, key, compute) == {"x": 1, "cached": False}
    assert cached(cfg, key, compute) == {"x": 1, "cached": True} and len(calls) == 1
    assert cached(cfg, key, compute, use_cache=False)["x"] == 2
    assert cache_key("vae", None, {"n": 4}) != key
    checkpoint = tmp_path / "a.pt"
    checkpoint.write_bytes(b"one")
    first = cache_key("vae", str(checkpoint), {"n": 3})
    checkpoint.write_bytes(b"two")
    assert cache_key("vae", str(checkpoint), {"n": 3}) != first  # a retrained checkpoint is measured again
    diffusion, vae = cache_key("diffusion-axes", str(checkpoint), {"n": 3}), cache_key("vae", str(checkpoint), {"n": 3})
    (tmp_path / "guidance-classifier.pt").write_bytes(b"a classifier beside it steers the axes")
    assert cache_key("diffusion-axes", str(checkpoint), {"n": 3}) != diffusion   # the diffusion engine loads it
    assert cache_key("vae", str(checkpoint), {"n": 3}) == vae                     # the VAE does not


@pytest.mark.slow
def test_evaluate_real_through_the_cli(tmp_path, capsys):
    from engines.cli import main

    assert main(["evaluate", "--real", "--n", "3", "--no-cache", "--json", str(tmp_path / "real.json")]) == 0
    result = json.loads((tmp_path / "real.json").read_text())
    assert result["engine"] == "real" and result["n"] == 24
    assert {"frechet", "diversity", "judge", "analyzer", "music_stats"} <= set(result)
    assert main(["evaluate"]) == 2
    assert "or --real for the baseline" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "real.json"), str(tmp_path / "real.json")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "|  | real | real |"
    frechet = next(line for line in table if line.startswith("| Fréchet distance"))
    assert frechet.split(" | ")[1] == f"{result['frechet']['distance']:.3f}"
    assert next(line for line in table if line.startswith("| segments measured")).endswith("| 24 | 24 |")
    (tmp_path / "bad.json").write_text('{"engine": "vae"}')
    assert main(["compare", str(tmp_path / "bad.json")]) == 2
    assert "holds no suite results" in capsys.readouterr().err


@pytest.mark.slow
def test_the_studio_evaluates_an_engine_with_progress_and_stops_on_request(tmp_path):
    from pathlib import Path

    from engines.api import StudioEngine
    from engines.data.prepare import ensure_corpus_cache
    from engines.errors import StudioError

    cfg = load_config()
    studio = StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=tmp_path)
    updates = list(studio.evaluate_stream("vae", 2))
    assert [u[1] for u in updates[:-1]] == list(range(8)) and updates[-1][0] == "done"
    report = updates[-1][1]
    assert report["n"] >= 8 and len(report["per_mode"]) == 8 and sum(map(sum, report["confusion"])) == report["n"]
    assert set(report["statistics"]) >= {"pitch_range", "polyphony"}
    best, worst = report["examples"]["best"], report["examples"]["worst"]
    assert best[0]["score"] >= worst[0]["score"] and Path(best[0]["wav"]).is_file()
    assert all(Path(f).is_file() for f in report["files"])
    assert report["stopped"] is False
    headers, lines = studio.evaluation_comparison([report, report])
    assert headers == ["", "vae", "vae"] and lines[0] == ["segments measured", str(report["n"]), str(report["n"])]
    assert lines[1][1] == f"{report['suite']['frechet']['distance']:.3f}"
    stopped = []
    for update in studio.evaluate_stream("vae", 2, run_id="r1"):
        stopped.append(update)
        if update[0] == "progress" and update[1] == 1:
            studio.request_stop("r1")
    assert 2 <= len(stopped[-1][1]["per_mode"]) < 8   # it stops at the next mode after the request
    assert stopped[-1][1]["stopped"] is True
    with pytest.raises(StudioError, match="samples per mode must lie in 2..64"):
        list(studio.evaluate_stream("vae", 1))
    with pytest.raises(StudioError, match="unknown config key 'generation.sampling.temprature'"):
        list(studio.evaluate_stream("vae", 2, settings={"temprature": 1}))
    with pytest.raises(StudioError, match="'generation.sampling.num_steps' has moved"):
        list(studio.evaluate_stream("vae", 2, settings={"num_steps": 20}))
    with pytest.raises(StudioError, match="expected a number in"):
        list(studio.evaluate_stream("autoregressive", 2, settings={"temperature": 9}))


def test_asked_against_heard_axes_error_is_measured_in_unit_scale():
    from engines.evaluation.targets import axes_error

    targets = [{"energy": 0.2, "valence": -1.0, "tension": 0.5, "intimacy": 0.5, "motion": 0.0}] * 2
    heard = [{"energy": 0.4, "valence": 1.0, "tension": 0.5, "intimacy": 0.5, "motion": 0.0}, None]
    mae, per_axis = axes_error(targets, heard)                  # the empty result is left out
    assert per_axis == {"energy": 0.2, "valence": 1.0, "tension": 0.0, "intimacy": 0.0, "motion": 0.0}
    assert mae == pytest.approx(0.24)
    assert axes_error(targets, [None, None]) == (None, {})


def test_the_axes_report_asks_the_vae_for_held_out_targets_beside_its_unconditioned_floor():
    from engines.evaluation.targets import axes_report, held_out_targets

    cfg = load_config()
    targets = held_out_targets(cfg, 6, seed=1)
    assert len(targets) == 6 and held_out_targets(cfg, 6, seed=1) == targets and -1 <= targets[0]["valence"] <= 1
    report = axes_report("vae", "assets/checkpoints/vae.pt", cfg, n=6, seed=1, use_cache=False)
    assert report["n"] == 6 and 0 <= report["mae"] <= 1 and 0 <= report["mae_unconditioned"] <= 1
    assert set(report["per_axis"]) == {"energy", "valence", "tension", "intimacy", "motion"}
    # the copy rates are those of the asked results (an engine could meet the axes by writing out a training
    # segment that has them)
    from engines.evaluation.diversity import copy_rates
    from engines.evaluation.suite import copy_index
    from engines.evaluation.verified import HELD_OUT_SEED
    from engines.generation import GENERATORS, Request

    vae = GENERATORS["vae"].load("assets/checkpoints/vae.pt")
    asked = [vae.run(Request("vae", mode="WHITE", n=1, seed=HELD_OUT_SEED + 1 + i, attributes=target))[0]
             for i, target in enumerate(targets)]
    assert report["copies"] == copy_rates(asked, copy_index(cfg))
    assert report["copies"]["n"] == 6 - report["empty"]
