"""The VAE through the command line and the studio's engine API: generate, evaluate, ship, and the errors a
missing checkpoint gives."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.cli import main
from engines.errors import StudioError
from engines.models.trained_vae import TrainedVAE
from engines.music.analyzer import MODES
from engines.training.common import MetricsLog

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core


# ---- command line --------------------------------------------------------------------------------------------
def test_cli_generate(vae_checkpoint, tmp_path, capsys):
    out = tmp_path / "gen"
    code = main(["generate", "--engine", "vae", "--mode", "RED", "--n", "2", "--seed", "1", "--out", str(out),
                 "--checkpoint", str(vae_checkpoint[0])])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["engine"], summary["mode"], summary["n"], summary["seed"]) == ("vae", "RED", 2, 1)
    assert len(summary["files"]) == 2
    assert sorted(p.name for p in out.glob("*.mid")) == ["vae-red-1-0.mid", "vae-red-1-1.mid"]
    segments, _ = TrainedVAE.load(vae_checkpoint[0]).sample("RED", n=2, seed=1)
    for entry, segment in zip(summary["files"], segments):
        assert Path(entry["midi"]).is_file()
        assert "analysis" in entry
        if len(segment.notes):
            assert entry["analysis"]["mode"] in MODES
            assert 0 <= entry["analysis"]["rebracketing"] <= 1
        else:
            assert entry["analysis"] is None


def test_cli_generate_errors(vae_checkpoint, tmp_path, capsys):
    code = main(["generate", "--engine", "vae", "--mode", "PINK", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(vae_checkpoint[0])])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: unknown mode 'PINK'; choose one of")
    code = main(["generate", "--engine", "vae", "--n", "0", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(vae_checkpoint[0])])
    assert code == 2 and capsys.readouterr().err == "error: the number of results must lie in 1..256, got 0\n"
    code = main(["generate", "--engine", "vae", "--tonic", "H", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(vae_checkpoint[0])])
    assert code == 2 and capsys.readouterr().err.startswith("error: unknown tonic 'H'; choose one of C, C#, D")
    code = main(["generate", "--engine", "vae", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and "no vae checkpoint at '" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_evaluate(vae_checkpoint, tmp_path, capsys):
    report = tmp_path / "eval.json"
    code = main(["evaluate", "--engine", "vae", "--checkpoint", str(vae_checkpoint[0]), "--n", "2",
                 "--test-limit", "32", "--json", str(report)])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    result = json.loads(stdout)
    assert report.read_text() == stdout  # --json writes what is printed
    assert result["engine"] == "vae" and result["n"] == 2 * len(MODES)
    consistency = result["consistency"]
    assert set(consistency["per_mode"]) == set(MODES)
    assert all(v in (0.0, 0.5, 1.0) for v in consistency["per_mode"].values())  # 2 samples per mode
    assert consistency["overall"] == pytest.approx(np.mean(list(consistency["per_mode"].values())), abs=1e-4)
    recon = result["reconstruction"]
    for key in ("f1", "precision", "recall"):
        assert 0 <= recon[key] <= 1
    assert 0 <= recon["roll_mse"] <= 1 and recon["segments"] == 32
    # per onset cell: mostly empty, so even a barely trained decoder is right on most and beats a coin's
    # perplexity of 2; a decoder with its onsets inverted would fail both
    assert 0.5 < recon["cell_accuracy"] <= 1 and 1 <= recon["cell_perplexity"] < 2
    assert 0 <= result["active_units"] <= 1 and result["kl"] >= 0
    assert set(result["attributes"]) == {"rebracketing", "temporal_complexity"}
    for name, response in result["attributes"].items():
        assert "spearman" in response and len(response["means"]) == len(response["shifts"]) == 9
        assert response["shifts"][0] == -2 and response["shifts"][-1] == 2
    interpolation = result["interpolation"]
    assert interpolation["pairs"] == 16
    assert 0 <= interpolation["paths_with_every_step_smaller"] <= 1
    # beside the raw model, verified generation measured the same way (evaluate's default: the VAE's K = 16)
    assert result["verification"]["candidates"] == 16 and result["latency_ms"]["raw"] > 0
    assert result["latency_ms"]["verified"] > 0 and result["latency_ms"]["engine"] > 0
    for kind in ("raw", "verified"):
        assert 0 <= consistency[kind]["overall"] <= 1 and set(consistency[kind]["per_mode"]) == set(MODES)
        assert result["copies"][kind]["n"] > 0 and 0 <= result["copies"][kind]["near_copy_rate"] <= 1
        assert set(result["judge"]["consistency"][kind]["per_mode"]) == set(MODES)
    assert result["copies"]["verified"]["near_copy_rate"] == 0.0   # never a copy


def test_studio_engine_generates_playable_analysed_segments(vae_checkpoint, corpus_cache, tmp_path):
    from engines.api import Request, StudioEngine
    from engines.config import load_config

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(vae_checkpoint[0], models / "vae.pt")
    cfg = load_config(overrides=[f"model.checkpoints_dir={models}"])
    engine = StudioEngine(cfg, cache=corpus_cache, out_dir=tmp_path / "out")
    assert engine.engines_available() == ["vae"]
    views = engine.generate(Request(mode="GREEN", n=3, seed=5))
    assert len(views) == 3 and all(v.requested_mode == "GREEN" for v in views)
    for view in views:
        assert Path(view.midi_path).read_bytes()[:4] == b"MThd"
        if view.analysis is not None:
            assert view.analysis["mode"] in MODES and Path(view.wav_path).stat().st_size > 44
            assert len(view.notes.pitch) > 0
    again = engine.generate(Request(mode="GREEN", n=3, seed=5))
    assert [v.notes.pitch for v in again] == [v.notes.pitch for v in views]   # seeded: the same music
    with pytest.raises(StudioError, match="unknown mode 'PINK'"):
        engine.generate(Request(mode="PINK"))


def test_missing_checkpoint_is_a_clear_error(corpus_cache, tmp_path):
    from engines.api import Request, StudioEngine
    from engines.config import load_config

    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), cache=corpus_cache,
                          out_dir=tmp_path / "out")
    assert engine.engines_available() == []
    with pytest.raises(StudioError, match="no VAE checkpoint at .*train one with `python -m engines train"):
        engine.generate(Request(mode="RED"))


def test_ship_copies_the_best_checkpoint_and_writes_its_card(vae_run, tmp_path):
    from engines.training.model_card import ship

    (vae_run[0] / "command.json").write_text('{"argv": ["engines", "train", "--engine", "vae", "--limit", "64"]}')
    result = ship("vae", vae_run[0], tmp_path / "checkpoints")
    shipped = torch.load(result["checkpoint"], weights_only=True)
    assert shipped["engine"] == "vae" and result["size_mb"] < 30
    card = Path(result["card"]).read_text()
    assert "`python -m engines train --engine vae --limit 64`" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(MetricsLog(vae_run[0] / "metrics.jsonl").rows())
    with pytest.raises(StudioError, match="is a vae checkpoint, not diffusion"):
        ship("diffusion", vae_run[0], tmp_path / "other")
