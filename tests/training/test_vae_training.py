"""Training the VAE (engines/training/vae_trainer.py, vae_finalize.py): metrics, checkpoints, resume, DDP
under torchrun, and the finalize step's latent vectors, per-mode prior and latent map."""
import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.models.trained_vae import TrainedVAE
from engines.models.vae import model_from_checkpoint
from engines.music.analyzer import AXES, MODES
from engines.training.common import MetricsLog
from engines.training.vae_finalize import encode_split, latent_vectors
from engines.training.vae_trainer import _better, train_vae
from tests.helpers import TINY_VAE, VAE_LIMIT

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core

REPO = Path(__file__).resolve().parents[2]
LATENT = 16


# ---- training ------------------------------------------------------------------------------------------------
def test_training_writes_metrics_checkpoints_and_plot(vae_run):
    out, best = vae_run
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_loss", "val_loss", "val_f1", "val_kl", "beta", "lr"):
            assert math.isfinite(r[key]), key
        assert 0 <= r["val_f1"] <= 1
    # each epoch trains at its point of the cosine schedule, the first at the full rate (the loss on 64 segments
    # is too noisy to assert it falls)
    from engines.training.ema_loop import LR_FLOOR   # the VAE anneals on the shared schedule

    vc = load_config(overrides=TINY_VAE).model.vae
    for r in rows:
        share = LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * (r["epoch"] - 1) / vc.epochs))
        assert r["lr"] == pytest.approx(vc.learning_rate * share)
    assert rows[0]["lr"] == pytest.approx(vc.learning_rate)
    assert (out / "last.pt").is_file()
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best_row = max(rows, key=lambda r: r["val_f1"])  # select_by = "val_f1"; the first of equals wins
    assert best["epoch"] == best_row["epoch"] and best["val_f1"] == pytest.approx(best_row["val_f1"])


def test_best_epoch_selection():
    best = {"val_loss": 3.0, "val_f1": 0.8}
    assert _better({"val_loss": 3.5, "val_f1": 0.85}, best, "val_f1")
    assert not _better({"val_loss": 3.5, "val_f1": 0.85}, best, "val_loss")
    assert _better({"val_loss": 2.5, "val_f1": 0.7}, best, "val_loss")
    assert not _better({"val_loss": 2.5, "val_f1": 0.8}, best, "val_f1")  # a tie keeps the earlier epoch
    assert _better({"val_loss": 9.0, "val_f1": 0.0}, {"val_loss": float("inf")}, "val_f1")  # the first epoch
    assert _better({"val_loss": 9.0, "val_f1": 0.0}, best, "last")   # a fine-tune keeps its last epoch


def test_best_checkpoint_rebuilds_the_model(vae_run):
    out, best = vae_run
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["engine"] == "vae"
    assert payload["config"]["latent_dim"] == 16 and payload["config"]["hidden_dim"] == 32
    assert (payload["steps"], payload["pitches"]) == (64, 88)
    assert payload["metrics"]["epoch"] == best["epoch"]
    assert payload["data"] == {"segment_bars": 4, "steps_per_beat": 4, "pitch_low": 21, "pitch_high": 108}
    model = model_from_checkpoint(payload)
    assert not model.training
    state = model.state_dict()
    assert state.keys() == payload["state_dict"].keys()
    for key, value in payload["state_dict"].items():
        assert torch.equal(state[key], value), key
    # last.pt is a training state, not a model checkpoint.
    with pytest.raises(StudioError, match="is not a VAE checkpoint"):
        TrainedVAE.load(out / "last.pt")


@pytest.fixture(scope="module")
def resumed(vae_run, tmp_path_factory):
    """The 2-epoch run copied and resumed with epochs=3: (directory, rows before, what it printed)."""
    out = tmp_path_factory.mktemp("vae-resumed") / "run"
    shutil.copytree(vae_run[0], out)
    before = MetricsLog(out / "metrics.jsonl").rows()
    cfg = load_config(overrides=TINY_VAE[:-1] + ["model.vae.epochs=3"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_vae(cfg, out, resume=True, limit=VAE_LIMIT, workers=0)
    return out, before, printed.getvalue()


def test_resume_adds_one_epoch(resumed):
    out, before, printed = resumed
    assert "resuming after epoch 2" in printed
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert len(rows) == 3 and rows[:2] == before and rows[2]["epoch"] == 3
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3


def test_resume_anneals_over_the_new_epoch_count(resumed):
    rows = MetricsLog(resumed[0] / "metrics.jsonl").rows()
    # epoch 3 of 3 trains at 2/3 of the new schedule (0.2875 of the rate); over the old 2 epochs it would be at
    # the floor (0.05)
    assert rows[2]["lr"] <= rows[1]["lr"]
    assert rows[2]["lr"] == pytest.approx(1e-3 * (0.05 + 0.95 * 0.5 * (1 + math.cos(2 * math.pi / 3))))


def _torchrun(args, out_dir, env_extra=None) -> subprocess.CompletedProcess:
    """Two CPU processes (gloo) under torchrun, in the repository root."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


DDP_SET = ["--set", "model.vae.latent_dim=8", "--set", "model.vae.hidden_dim=16", "--set", "model.vae.batch_size=8",
           "--set", "model.vae.epochs=1"]


@pytest.mark.slow
def test_ddp_train_command_under_torchrun(tmp_path):
    """The train command under DDP: gloo joins, both ranks train, rank 0 alone writes the run and reports."""
    out = tmp_path / "run"
    proc = _torchrun(["-m", "engines", "train", "--engine", "vae", "--limit", "32", "--workers", "0",
                      "--out", str(out), *DDP_SET], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert [r["epoch"] for r in rows] == [1]  # one row: rank 0 alone writes
    assert proc.stdout.count("epoch 1: train") == 1
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["config"]["latent_dim"] == 8 and payload["metrics"]["epoch"] == 1 and "vectors" in payload
    assert not any(k.startswith("module.") for k in payload["state_dict"])  # the bare model, not the DDP wrapper
    model_from_checkpoint(payload)
    assert proc.stdout.count('"best"') == 1 and "Infinity" not in proc.stdout  # one summary, from rank 0
    assert json.loads((out / "command.json").read_text())["best"]["epoch"] == 1


# ---- latent vectors ------------------------------------------------------------------------------------------
def test_finalize_adds_latent_vectors(vae_checkpoint, vae_run, vae_cfg, corpus_cache):
    path, norms = vae_checkpoint
    payload = torch.load(path, weights_only=True)
    vectors = payload["vectors"]
    # The rows finalize_vae encoded: a fixed random subset of the training split.
    vae = TrainedVAE.load(vae_run[0] / "best.pt")
    latents, indices = encode_split(vae, vae_cfg, "train", VAE_LIMIT)
    assert latents.shape == (VAE_LIMIT, LATENT) and len(set(indices.tolist())) == VAE_LIMIT
    present = {MODES[m] for m in corpus_cache.segments["mode"][indices]}
    assert set(vectors) == {"rebracketing", "temporal_complexity", *AXES} | {f"mode:{m}" for m in present}
    assert set(norms["vector_norms"]) == set(vectors)
    assert 0.5 <= norms["onset_threshold"] <= 0.95 and 0 <= norms["validation_f1"] <= 1
    for name, vector in vectors.items():
        assert vector.shape == (LATENT,) and torch.isfinite(vector).all(), name
        assert norms["vector_norms"][name] == pytest.approx(float(vector.norm()), abs=1e-3)
    expected = latent_vectors(latents, corpus_cache.segments[indices])
    for name in vectors:
        torch.testing.assert_close(vectors[name], expected[name], atol=1e-5, rtol=1e-5)
    # Mode vectors are offsets from the overall mean: weighted by mode counts they cancel.
    counts = np.bincount(corpus_cache.segments["mode"][indices], minlength=len(MODES))
    total = sum(int(counts[MODES.index(m)]) * vectors[f"mode:{m}"] for m in present)
    assert total.abs().max().item() < 1e-3
    # The weights are untouched.
    best = torch.load(vae_run[0] / "best.pt", weights_only=True)
    for key, value in best["state_dict"].items():
        assert torch.equal(payload["state_dict"][key], value), key


def test_finalize_fits_a_prior_per_mode_and_a_threshold_for_its_samples(vae_checkpoint, vae_run, vae_cfg, corpus_cache):
    from engines.training.vae_finalize import THRESHOLDS, fitted_prior

    path, summary = vae_checkpoint
    payload = torch.load(path, weights_only=True)
    latents, variances, indices = encode_split(TrainedVAE.load(vae_run[0] / "best.pt"), vae_cfg, "train", VAE_LIMIT,
                                               variances=True)
    rows = corpus_cache.segments[indices]
    prior = payload["fitted_prior"]
    assert prior["mean"].shape == (len(MODES) + 1, LATENT) and prior["scale_tril"].shape == (len(MODES) + 1,
                                                                                             LATENT, LATENT)
    expected = fitted_prior(latents, variances, rows)
    torch.testing.assert_close(prior["mean"], expected["mean"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(prior["mean"][-1], latents.mean(0), atol=1e-4, rtol=1e-4)   # WHITE: every latent
    assert torch.equal(prior["scale_tril"][0], torch.tril(prior["scale_tril"][0]))
    # a mode's mean is that of its clearest half only
    mode = int(np.bincount(rows["mode"]).argmax())
    mine = rows["mode"] == mode
    top = rows["scores"].max(axis=1)
    clear = torch.as_tensor(mine & (top >= np.quantile(top[mine], 0.5)))
    torch.testing.assert_close(prior["mean"][mode], latents[clear].mean(0), atol=1e-4, rtol=1e-4)
    # its covariance is that of the means (shrunk toward the diagonal) plus the mean posterior variance
    covariance = prior["scale_tril"][mode] @ prior["scale_tril"][mode].T
    spread = torch.cov(latents[clear].T).diagonal() + variances[clear].mean(0)
    torch.testing.assert_close(covariance.diagonal(), spread, atol=1e-3, rtol=1e-3)
    # the sample threshold is the candidate whose samples come nearest the training notes per segment
    calibration = payload["sample_calibration"]
    counts = {float(k): v for k, v in calibration["notes_by_threshold"].items()}
    assert payload["sample_onset_threshold"] in THRESHOLDS and set(counts) == set(THRESHOLDS)
    target = float(np.mean(rows["note_count"]))
    assert calibration["corpus_notes_per_segment"] == pytest.approx(target, abs=0.01)
    assert abs(counts[payload["sample_onset_threshold"]] - target) == min(abs(c - target) for c in counts.values())
    assert summary["sample_onset_threshold"] == payload["sample_onset_threshold"]
    # each mode's samples are decoded once and read at every threshold: the counts are what sampling gives
    vae = TrainedVAE.load(path)
    for threshold in (THRESHOLDS[0], THRESHOLDS[10]):
        vae.sample_onset_threshold = threshold
        notes = np.mean([len(s.notes) for i, m in enumerate(MODES) for s in vae.sample(m, 16, seed=i)[0]])
        assert counts[threshold] == pytest.approx(notes, abs=0.006)


def test_samples_come_from_the_fitted_prior_unless_the_network_prior_is_asked(vae_checkpoint):
    path, _ = vae_checkpoint
    vae = TrainedVAE.load(path)
    mode = MODES.index("RED")
    z = vae.sample_latents("RED", 256, seed=3)
    prior = vae.fitted_prior
    # draws of N(mean, L L^T): their mean is near the mode's, and whitened by L they are unit Gaussians
    white = torch.linalg.solve_triangular(prior["scale_tril"][mode], (z - prior["mean"][mode]).T, upper=False).T
    assert white.mean().abs() < 0.05 and abs(white.std().item() - 1) < 0.05
    network = vae.sample_latents("RED", 256, seed=3, prior="network")
    noise = torch.randn(256, LATENT, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(network, vae.model.prior_mean(torch.tensor([mode])) + noise)   # as before
    with pytest.raises(StudioError, match="prior must be one of fitted, network"):
        vae.sample("RED", prior="learned")
    vae.onset_threshold, vae.sample_onset_threshold = 0.95, 0.5
    fitted_notes = sum(len(s.notes) for s in vae.sample("RED", 8, seed=1)[0])
    vae.sample_onset_threshold = 0.95
    assert sum(len(s.notes) for s in vae.sample("RED", 8, seed=1)[0]) < fitted_notes   # its own threshold


def test_finalize_calibrates_each_modes_temperature_and_requests_that_set_none_sample_at_it(vae_checkpoint):
    from engines.generation import GENERATORS, Request
    from engines.training.vae_finalize import TEMPERATURE_COPY_LIMIT, TEMPERATURE_MARGIN, TEMPERATURES

    path, summary = vae_checkpoint
    payload = torch.load(path, weights_only=True)
    calibration = payload["temperature_calibration"]
    assert set(calibration["modes"]) == set(MODES) and calibration["margin"] == TEMPERATURE_MARGIN
    # measured on the prior as refined before it (refine_prior, one round on a tiny run)
    refinement = payload["prior_refinement"]
    assert refinement["rounds"] == 1 and summary["prior_refinement"] == {
        mode: measured["heard"] for mode, measured in refinement["modes"].items()}
    assert set(refinement["modes"]) == set(MODES)
    assert all(len(m["heard"]) == 1 and 0 <= m["heard"][0] <= 1 for m in refinement["modes"].values())
    assert calibration["copy_limit"] == TEMPERATURE_COPY_LIMIT
    for mode, measured in calibration["modes"].items():
        heard = {float(t): share for t, share in measured["heard"].items()}
        copied = {float(t): share for t, share in measured["copies"].items()}
        assert set(heard) == set(copied) == set(TEMPERATURES)
        assert all(0 <= share <= 1 for share in [*heard.values(), *copied.values()])
        # of those that copy at most the limit (else the one that copies least), the warmest heard as asked
        # within the margin of the best
        allowed = [t for t in TEMPERATURES if copied[t] <= TEMPERATURE_COPY_LIMIT] or [
            min(TEMPERATURES, key=lambda t: (copied[t], -t))]
        good = [t for t in allowed if heard[t] >= max(heard[t] for t in allowed) - TEMPERATURE_MARGIN - 1e-9]
        assert measured["temperature"] == good[0] == summary["temperatures"][mode]
    generator = GENERATORS["vae"].load(path)
    generator.model.temperature_calibration = {"modes": {"RED": {"temperature": 0.55}}}
    assert generator.model.temperature_for("RED") == 0.55
    assert generator.model.temperature_for("BLUE") == generator.model.temperature_for("WHITE") == 1.0
    notes = [s.notes for s in generator.run(Request("vae", mode="RED", n=3, seed=4))]
    cool, _ = generator.model.sample("RED", 3, 0.55, seed=4)
    assert all(np.array_equal(a, b.notes) for a, b in zip(notes, cool))
    # a temperature the request sets is kept
    hot = generator.run(Request("vae", mode="RED", n=3, seed=4, settings={"temperature": 1.5}))
    assert all(np.array_equal(a.notes, b.notes) for a, b in zip(hot, generator.model.sample("RED", 3, 1.5, seed=4)[0]))
    assert not all(np.array_equal(a, b.notes) for a, b in zip(notes, hot))


def test_finalize_fits_a_latent_map_that_inverts_exactly_like_umap(vae_checkpoint, vae_run, vae_cfg, corpus_cache):
    from engines.models.latent_map import LatentMap, fit_latent_map, restore_umap

    payload = torch.load(vae_checkpoint[0], weights_only=True)["latent_map"]
    latents, indices = encode_split(TrainedVAE.load(vae_run[0] / "best.pt"), vae_cfg, "train", VAE_LIMIT)
    assert payload["embedding"].shape == (VAE_LIMIT, 2) and payload["latents"].shape == (VAE_LIMIT, LATENT)
    assert sorted(payload["rows"].tolist()) == sorted(indices.tolist())
    # The fit is reproducible (fixed random_state): fitting the same latents again gives the same map.
    again, fitted = fit_latent_map(payload["latents"].numpy(), payload["rows"].numpy(), seed=payload["seed"])
    np.testing.assert_allclose(again["embedding"].numpy(), payload["embedding"].numpy(), atol=1e-4)
    # umap's numba code is cached on disk (cached_umap), so that the next process loads it instead of compiling
    from numba.core.caching import NullCache
    from umap.layouts import clip
    from umap.umap_ import smooth_knn_dist

    assert not isinstance(smooth_knn_dist._cache, NullCache)
    assert not isinstance(clip._cache, NullCache)
    # Rebuilt from tensors, the map inverts like the UMAP object that was fitted, and like umap's own method.
    latent_map = LatentMap(payload)
    emb = payload["embedding"].numpy()
    points = np.stack([emb.mean(0), 0.7 * emb[0] + 0.3 * emb[1]]).astype(np.float32)
    ours = latent_map.inverse(points).numpy()
    np.testing.assert_allclose(ours, fitted.inverse_transform(points), atol=1e-4)
    np.testing.assert_allclose(ours, restore_umap(payload).inverse_transform(points), atol=1e-4)
    assert ours.shape == (2, LATENT) and np.isfinite(ours).all()
    # A place far outside the map decodes as its nearest map point does, instead of failing.
    far = latent_map.inverse(np.array([[emb[:, 0].max() + 100, emb[:, 1].max() + 100]]))
    assert far.shape == (1, LATENT) and torch.isfinite(far).all()


def test_finalize_fits_an_attribute_prior_of_rare_map_segments_encoded_without_a_mode(vae_checkpoint, corpus_cache,
                                                                                      vae_cfg):
    from engines.data.torch_dataset import WHITE_INDEX, RollDataset
    from engines.generation.copies import CopyIndex
    from engines.models.conditioning import CONDITION_ATTRIBUTES, cache_attributes
    from engines.training.vae_finalize import ATTRIBUTE_PRIOR_MIXED, ATTRIBUTE_PRIOR_NEIGHBOURS, TWIN_SHORTLIST

    path, summary = vae_checkpoint
    payload = torch.load(path, weights_only=True)
    prior = payload["attribute_prior"]
    rows = prior["rows"].numpy()
    assert summary["attribute_prior_latents"] == len(rows) > 0
    assert prior["names"] == list(CONDITION_ATTRIBUTES)
    assert (prior["neighbours"], prior["mixed"]) == (ATTRIBUTE_PRIOR_NEIGHBOURS, ATTRIBUTE_PRIOR_MIXED)
    # drawn from the latent map's rows, less those whose pattern recurs in the training split
    mapped = payload["latent_map"]["rows"].numpy()
    assert set(rows) <= set(mapped.tolist())
    index = CopyIndex.build(corpus_cache)
    twinned = [int(r) for r in mapped if index.near_twins(int(r), TWIN_SHORTLIST) > 0]
    assert sorted(rows.tolist()) == sorted(set(mapped.tolist()) - set(twinned))
    np.testing.assert_allclose(prior["attributes"].numpy(), cache_attributes(corpus_cache.segments[rows]))
    # the posterior means under no mode (WHITE), as a request that asks no mode decodes them
    vae = TrainedVAE.load(path)
    batch = next(iter(torch.utils.data.DataLoader(
        RollDataset.for_config(corpus_cache, rows, vae_cfg.data, vae.model.config.key_to_c), batch_size=len(rows))))
    with torch.no_grad():
        white, _ = vae.model.encode(batch["roll"], torch.full_like(batch["mode"], WHITE_INDEX))
        own, _ = vae.model.encode(batch["roll"], batch["mode"])
    torch.testing.assert_close(prior["latents"], white)
    assert not torch.allclose(prior["latents"], own)


class HeardByNotes:
    """A stand-in analyzer for the refit's arithmetic: it hears RED in a segment of more than `notes` notes and
    BLUE in any other (what the real analyzer hears in the tiny VAE's samples is not the point here), so no
    other mode is ever heard as asked."""

    def __init__(self, notes: int):
        self.notes = notes

    def analyze(self, segment):
        from types import SimpleNamespace

        return SimpleNamespace(mode="RED" if len(segment.notes) > self.notes else "BLUE")


def test_refine_prior_refits_each_mode_to_the_latents_its_samples_are_heard_as_asked_from(tiny_vae, monkeypatch):
    from engines.training import vae_finalize

    monkeypatch.setattr(vae_finalize, "REFINE_MIN_HEARD", 4)
    vae = TrainedVAE(tiny_vae.model, dict(tiny_vae.payload, fitted_prior={
        k: v.clone() for k, v in tiny_vae.payload["fitted_prior"].items()}))
    before = {k: v.clone() for k, v in vae.fitted_prior.items()}
    red = MODES.index("RED")
    # round 0 draws each mode's samples at temperature 1 from these seeds (REFINE_SEED + 100 * mode index)
    segments, z = vae.sample("RED", 16, 1.0, seed=vae_finalize.REFINE_SEED + 100 * red)
    counts = np.array([len(s.notes) for s in segments])
    notes = int(np.median(counts))
    heard_red = torch.from_numpy(counts > notes)
    assert 4 <= int(heard_red.sum()) < 16, "a split of the RED samples to refit to"
    summary = vae_finalize.refine_prior(vae, HeardByNotes(notes), rounds=1, samples=16)
    assert summary["modes"]["RED"]["heard"] == [round(float(heard_red.float().mean()), 3)]
    assert not summary["copies_checked"] and summary["modes"]["RED"]["copies"] == [0.0]
    kept = z[heard_red].double()
    torch.testing.assert_close(vae.fitted_prior["mean"][red], kept.mean(0).float())
    clear = before["scale_tril"][red].double() @ before["scale_tril"][red].double().T
    expected = (1 - vae_finalize.REFINE_SHRINK) * torch.cov(kept.T) + vae_finalize.REFINE_SHRINK * clear
    refitted = vae.fitted_prior["scale_tril"][red].double()
    torch.testing.assert_close(refitted @ refitted.T, expected, atol=1e-5, rtol=1e-4)
    # a mode heard in none of its samples keeps its Gaussian, and so does WHITE (the last row)
    assert summary["modes"]["GREEN"]["heard"] == [0.0]
    for index in (MODES.index("GREEN"), len(MODES)):
        torch.testing.assert_close(vae.fitted_prior["mean"][index], before["mean"][index])
        torch.testing.assert_close(vae.fitted_prior["scale_tril"][index], before["scale_tril"][index])
    # the next request for RED draws from the refitted Gaussian
    again = vae.sample_latents("RED", 4, 1.0, seed=3)
    noise = torch.randn(4, vae.latent_dim, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, vae.fitted_prior["mean"][red] + noise @ vae.fitted_prior["scale_tril"][red].T)
    # samples whose note count lies outside the mode's range are not refitted to, heard as asked or not
    monkeypatch.setattr(vae_finalize, "REFINE_MIN_HEARD", 1)
    ranged = TrainedVAE(tiny_vae.model, dict(tiny_vae.payload, fitted_prior={
        k: v.clone() for k, v in before.items()}))
    high = int(np.max(counts))
    inside = torch.from_numpy(counts < high)
    assert (heard_red & inside).any() and (heard_red & ~inside).any()
    summary = vae_finalize.refine_prior(ranged, HeardByNotes(notes), rounds=1, samples=16,
                                        note_ranges={"RED": (0, high - 1)})
    assert summary["modes"]["RED"]["note_range"] == [0.0, high - 1.0]
    assert summary["modes"]["RED"]["outside_notes"] == [round(float((~inside).float().mean()), 3)]
    assert summary["modes"]["GREEN"]["outside_notes"] == [0.0] and "note_range" not in summary["modes"]["GREEN"]
    torch.testing.assert_close(ranged.fitted_prior["mean"][red], z[heard_red & inside].double().mean(0).float())
    # samples that nearly copy a training segment are not refitted to, heard as asked or not
    refitted = {k: v.clone() for k, v in vae.fitted_prior.items()}
    copies = CopiesAtTemperatures(16, set(vae_finalize.TEMPERATURES))   # every sample a copy
    summary = vae_finalize.refine_prior(vae, HeardByNotes(notes), rounds=1, samples=16, copies=copies)
    assert summary["modes"]["RED"]["copies"] == [1.0] and copies.calls == 16 * len(MODES)
    assert summary["copies_checked"]
    torch.testing.assert_close(vae.fitted_prior["mean"], refitted["mean"])
    torch.testing.assert_close(vae.fitted_prior["scale_tril"], refitted["scale_tril"])


class CopiesAtTemperatures:
    """A stand-in copy index for the temperature rule: calibrate_temperatures checks each mode's samples
    temperature by temperature (TEMPERATURES order, `samples` each), and this one calls every sample of the
    temperatures in `copying` a copy."""

    def __init__(self, samples: int, copying: set):
        self.samples, self.copying, self.calls = samples, copying, 0

    def is_copy(self, segment) -> bool:
        from engines.training.vae_finalize import TEMPERATURES

        temperature = TEMPERATURES[(self.calls // self.samples) % len(TEMPERATURES)]
        self.calls += 1
        return temperature in self.copying


def test_a_temperature_whose_samples_copy_training_segments_is_not_kept(tiny_vae):
    from engines.training.vae_finalize import TEMPERATURES, calibrate_temperatures

    vae = TrainedVAE(tiny_vae.model, dict(tiny_vae.payload))
    free = calibrate_temperatures(vae, samples=8, copies=CopiesAtTemperatures(8, set()))
    assert all(m["copies"] == {str(t): 0.0 for t in TEMPERATURES} for m in free["modes"].values())
    warm = calibrate_temperatures(vae, samples=8, copies=CopiesAtTemperatures(8, {1.0, 0.85}))
    for mode, measured in warm["modes"].items():
        assert measured["copies"] == {"1.0": 1.0, "0.85": 1.0, "0.7": 0.0, "0.55": 0.0}
        assert measured["heard"] == free["modes"][mode]["heard"]   # the same samples
        heard = {float(t): share for t, share in measured["heard"].items()}
        expected = 0.7 if heard[0.7] >= max(heard[0.7], heard[0.55]) - 0.05 - 1e-9 else 0.55
        assert measured["temperature"] == expected
    # when every temperature copies, the mode keeps the one that copies least (the warmest of equals)
    everywhere = calibrate_temperatures(vae, samples=8, copies=CopiesAtTemperatures(8, set(TEMPERATURES)))
    assert {m["temperature"] for m in everywhere["modes"].values()} == {1.0}


def test_mode_note_ranges_are_the_quantiles_of_each_modes_training_segments(corpus_cache):
    from engines.training.vae_finalize import mode_note_ranges

    rows = corpus_cache.segments
    ranges = mode_note_ranges(rows, (0.1, 0.9))
    present = sorted(set(rows["mode"].tolist()))
    assert list(ranges) == [MODES[i] for i in present]
    for index in present:
        counts = rows["note_count"][rows["mode"] == index]
        low, high = ranges[MODES[index]]
        assert low == float(np.quantile(counts, 0.1)) and high == float(np.quantile(counts, 0.9)) and low <= high
