"""Evaluating the diffusion engine: Fréchet distance's known answers, the evaluate keys, the bench row, the
model card, and generation through the studio's engine API."""
import math

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.music.analyzer import MODES as MODES_ALL
from tests.helpers import TINY_DIFFUSION

torch.set_num_threads(1)


# ---- evaluation, bench and model card -----------------------------------------------------------------------
def test_frechet_distance_known_answers():
    from engines.evaluation.frechet import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(20000, 3))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # shifted mean: |mu|^2; scaled by 2: Tr(I + 4I - 2 * 2I) = 3 per unit variance
    assert frechet_distance(a, rng.normal(size=(20000, 3)) + [1.0, 0, 0]) == pytest.approx(1.0, abs=0.06)
    assert frechet_distance(a, 2 * rng.normal(size=(20000, 3))) == pytest.approx(3.0, abs=0.15)
    singular = np.zeros((50, 3))
    singular[:, 0] = rng.normal(size=50)  # rank-one covariance: still finite
    assert math.isfinite(frechet_distance(singular, a[:50]))
    with pytest.raises(ValueError, match="need two"):
        frechet_distance(a[:, :2], a)


@pytest.mark.slow
def test_evaluate_reports_the_issue_keys(diffusion_run, diffusion_cfg):
    from engines.evaluation.diffusion_eval import evaluate_diffusion

    report = evaluate_diffusion(str(diffusion_run / "best.pt"), diffusion_cfg, n_per_mode=2, table_per_mode=1, real_count=40)
    assert report["engine"] == "diffusion" and report["n"] == 16
    assert set(report["consistency"]["per_mode"]) == set(MODES_ALL) and 0 <= report["consistency"]["overall"] <= 1
    distance = report["frechet"]["distance"]  # None where a barely trained model writes < 2 non-empty segments
    assert (distance is None or distance >= 0) and report["frechet"]["real_baseline"] > 0
    rows = report["steps_table"]
    assert [(r["sampler"], r["steps"]) for r in rows] == [("ddim", 10), ("ddim", 25), ("ddim", 50), ("ddim", 100),
                                                          ("dpmsolver++", 10), ("dpmsolver++", 20)]
    assert all(r["seconds_per_segment"] > 0 and 0 <= r["consistency"] <= 1 and "frechet" in r for r in rows)
    assert report["latency_ms"] > 0


def test_bench_row_and_model_card(diffusion_run, tmp_path):

    from engines.bench import bench_diffusion
    from engines.training.model_card import ship

    cfg = load_config(overrides=TINY_DIFFUSION + [f"model.checkpoints_dir={tmp_path}"])
    assert bench_diffusion(cfg, repeats=1) is None
    shipped = ship("diffusion", diffusion_run, tmp_path)
    assert (tmp_path / "diffusion.pt").is_file() and shipped["size_mb"] < 30
    card = (tmp_path / "diffusion.md").read_text()
    # the card holds what the run measured and the shipped weights' own config, not prose to match
    import json

    from engines.training.common import MetricsLog

    payload = torch.load(tmp_path / "diffusion.pt", weights_only=True)
    config_line = next(line for line in card.splitlines() if line.startswith("- **Config:**"))
    assert json.loads(config_line.split("`")[1]) == payload["config"]
    for row in MetricsLog(diffusion_run / "metrics.jsonl").rows():
        assert f"| {row['epoch']} | {row['minutes']} | {row['train_loss']:.4f} | {row['val_loss']:.4f} |" in card
    calibration = payload.get("onset_calibration")
    assert calibration is None or f"threshold {calibration['onset_threshold']} on the x0 scale" in card
    row = bench_diffusion(cfg, repeats=1)
    assert row["steps"] == 50 and row["seconds_one_segment"] > 0 and row["seconds_batch8"] > 0


def test_studio_engine_generates_with_diffusion(diffusion_run, tmp_path):
    import shutil
    from pathlib import Path

    from engines.api import Request, StudioEngine

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(diffusion_run / "best.pt", models / "diffusion.pt")
    cfg = load_config(overrides=TINY_DIFFUSION + [f"model.checkpoints_dir={models}"])
    engine = StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=tmp_path / "out")
    assert engine.engines_available() == ["diffusion"]
    params = Request(engine="diffusion", mode="BLUE", n=2, seed=3, settings={"steps": 4, "guidance_scale": 2.0})
    views = engine.generate(params)
    assert len(views) == 2 and all(Path(v.midi_path).read_bytes()[:4] == b"MThd" for v in views)
    assert [v.notes.pitch for v in engine.generate(params)] == [v.notes.pitch for v in views]
    with pytest.raises(StudioError, match="generation.sampling.diffusion.steps' = 5000 is not allowed"):
        engine.generate(Request(engine="diffusion", mode="BLUE", settings={"steps": 5000}))
    with pytest.raises(StudioError, match=r"steps must lie in 1..100 \(the model's training steps\)"):
        engine.generate(Request(engine="diffusion", mode="BLUE", settings={"steps": 200}))
    with pytest.raises(StudioError, match="no VAE checkpoint"):
        engine.generate(Request(engine="vae", mode="BLUE"))
