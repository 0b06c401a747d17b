"""The conditional β-VAE engine: dataset, network, loss, β schedules, training (single process and DDP),
latent vectors, the TrainedVAE wrapper, decoding to Segments and the generate / evaluate commands.

Everything runs on a tiny config over a few dozen cache segments; the one checkpoint the later tests use is
trained once per module."""
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
from torch.utils.data import DataLoader

from engines.cli import main
from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import ATTRIBUTES, METRES, WHITE_INDEX, RollDataset, metre_index
from engines.errors import StudioError
from engines.models.trained_vae import (DEFAULT_VELOCITY, TrainedVAE, logits_to_segments, pitch_peaks, segment_tonic,
                                       tonic_shift)
from engines.models.vae import (ChromaticVAE, beta_at, checkpoint_payload, gaussian_kl, model_from_checkpoint,
                                vae_loss)
from engines.models.vae_config import VAEConfig
from engines.music.analyzer import AXES, MODES
from engines.music.notes import NOTE_DTYPE, Segment, notes_to_roll, shift_to_c, transpose_notes
from engines.training.common import MetricsLog, save_checkpoint
from engines.training.vae_finalize import encode_split, finalize_vae, latent_vectors
from engines.training.vae_trainer import _better, train_vae

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.vae.latent_dim=16", "model.vae.hidden_dim=32", "model.vae.batch_size=16", "model.vae.epochs=2"]
LIMIT = 64
LATENT = 16


# ---- fixtures ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cache():
    return ensure_corpus_cache(load_config())


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config(overrides=TINY)


def _first(cache, ts) -> int:
    """Row of the first segment in time signature `ts`."""
    rows = np.nonzero((cache.segments["ts_num"] == ts[0]) & (cache.segments["ts_den"] == ts[1]))[0]
    if not len(rows):
        pytest.skip(f"the corpus cache holds no {ts[0]}/{ts[1]} segment")
    return int(rows[0])


@pytest.fixture(scope="module")
def rows(cache):
    """Cache rows of a 2/4, a 6/8 and a 4/4 segment."""
    return [_first(cache, ts) for ts in ((2, 4), (6, 8), (4, 4))]


@pytest.fixture(scope="module")
def batch(cache, rows):
    return next(iter(DataLoader(RollDataset(cache, rows), batch_size=len(rows))))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_cfg, cache):
    """A 2-epoch run on 64 training segments: (directory, what train_vae returned)."""
    out = tmp_path_factory.mktemp("vae-run")
    best = train_vae(tiny_cfg, out, limit=LIMIT, workers=0)
    return out, best


@pytest.fixture(scope="module")
def checkpoint(run_dir, tiny_cfg, tmp_path_factory):
    """The run's best.pt with latent vectors added (finalized on 64 training segments)."""
    path = tmp_path_factory.mktemp("vae-final") / "vae.pt"
    shutil.copy(run_dir[0] / "best.pt", path)
    norms = finalize_vae(str(path), tiny_cfg, limit=LIMIT)
    return path, norms


@pytest.fixture(scope="module")
def vae(checkpoint):
    return TrainedVAE.load(checkpoint[0])


# ---- dataset -------------------------------------------------------------------------------------------------
def test_metre_index_of_listed_metres():
    for i, (num, den) in enumerate(METRES):
        assert metre_index(num, den) == i
    assert metre_index(2, 4) == 0 and metre_index(6, 8) == 1 and metre_index(4, 4) == 2


@pytest.mark.parametrize("ts, same_as", [
    ((4, 8), (2, 4)),    # 24 ticks a bar, like 2/4
    ((12, 16), (6, 8)),  # 36 ticks: 6/8 comes before 3/4 in METRES
    ((8, 4), (4, 2)),    # 96 ticks
    ((6, 2), (4, 4)),    # 144 ticks: no listed metre that long -> 4/4
    ((7, 8), (4, 4)),
    ((1, 4), (4, 4)),
])
def test_metre_index_of_unlisted_metres(ts, same_as):
    assert metre_index(*ts) == METRES.index(same_as)


def test_roll_dataset_items_match_the_cache(cache, rows):
    ds = RollDataset(cache, rows)
    assert len(ds) == 3
    expected_valid = {(2, 4): 32, (6, 8): 48, (4, 4): 64}
    for i, row in enumerate(rows):
        item = ds[i]
        segment = cache.segment(row)
        meta = cache.segments[row]
        assert item["roll"].shape == (2, 64, 88) and item["roll"].dtype == torch.float32
        np.testing.assert_array_equal(item["roll"].numpy(), notes_to_roll(segment.notes, segment.bar_length,
                                                                          segment.num_bars))
        assert item["roll"][0].sum() > 0  # a real segment has onsets
        valid = item["valid"]
        assert valid.dtype == torch.bool and valid.shape == (64,)
        n = expected_valid[(segment.ts_num, segment.ts_den)]
        assert int(valid.sum()) == n and bool(valid[:n].all())
        # Nothing sounds in the padding of a short metre.
        assert item["roll"][:, n:].sum() == 0
        assert int(item["mode"]) == int(meta["mode"]) and item["mode"].dtype == torch.long
        assert int(item["metre"]) == metre_index(int(meta["ts_num"]), int(meta["ts_den"]))
        assert float(item["log_tempo"]) == pytest.approx(math.log(float(meta["tempo"])), rel=1e-6)
        np.testing.assert_allclose(item["attributes"].numpy(), [float(meta[a]) for a in ATTRIBUTES], rtol=1e-6)


# ---- network -------------------------------------------------------------------------------------------------
def test_forward_shapes(batch):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=16, hidden_dim=32, batch_size=8, epochs=2)
    model = ChromaticVAE(cfg)
    b = batch["roll"].shape[0]
    assert batch["roll"].shape == (b, 2, 64, 88)
    for train in (True, False):
        model.train(train)
        out = model(batch, condition_dropout=0.5)
        assert out["onset"].shape == (b, 64, 88) and out["sustain"].shape == (b, 64, 88)
        assert out["metre"].shape == (b, len(METRES))
        assert out["log_tempo"].shape == (b,)
        assert out["mean"].shape == (b, 16) and out["logvar"].shape == (b, 16)
        assert all(torch.isfinite(v).all() for v in out.values())
    # In eval mode the latent is the posterior mean: the pass is deterministic.
    model.eval()
    torch.testing.assert_close(model(batch)["onset"], model(batch)["onset"])
    # Decoding without attributes (the "not given" flag) works and differs from decoding with them.
    z = torch.zeros(b, 16)
    with_attr = model.decode(z, batch["mode"], model.batch_attributes(batch))["onset"]
    without = model.decode(z, batch["mode"])["onset"]
    assert with_attr.shape == without.shape and not torch.equal(with_attr, without)
    white = model.decode(z, torch.full((b,), WHITE_INDEX))["onset"]
    assert white.shape == (b, 64, 88)


def test_latent_512_builds_trains_a_step_and_samples(batch, tmp_path):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=512, hidden_dim=32, batch_size=8, epochs=1)
    model = ChromaticVAE(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    out = model(batch)
    assert out["mean"].shape == (batch["roll"].shape[0], 512)
    loss = vae_loss(out, batch, cfg, beta=0.2)["loss"]
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    for name in ("to_posterior.weight", "from_latent.weight", "metre_head.weight", "tempo_head.bias"):
        assert not torch.equal(before[name], after[name]), name
    # Sampling through the wrapper, and the same after a save/load round trip.
    path = save_checkpoint(checkpoint_payload(model, {"step": 1}), tmp_path / "big.pt")
    loaded = TrainedVAE.load(path)
    assert loaded.latent_dim == 512
    segments, z = loaded.sample("RED", n=2, seed=3)
    assert z.shape == (2, 512) and len(segments) == 2 and all(isinstance(s, Segment) for s in segments)
    again, _ = TrainedVAE(model, checkpoint_payload(model, {})).sample("RED", n=2, seed=3)
    for a, b in zip(segments, again):
        np.testing.assert_array_equal(a.notes, b.notes)


# ---- loss and β ----------------------------------------------------------------------------------------------
def _toy_out(b=2, t=64, p=88, latent=16, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"onset": torch.randn(b, t, p, generator=g), "sustain": torch.randn(b, t, p, generator=g),
            "metre": torch.randn(b, len(METRES), generator=g), "log_tempo": torch.randn(b, generator=g) + 4.8,
            "mean": torch.zeros(b, latent), "logvar": torch.zeros(b, latent)}


def _toy_batch(b=2, t=64, p=88, valid_steps=32, seed=1) -> dict:
    g = torch.Generator().manual_seed(seed)
    roll = torch.zeros(b, 2, t, p)
    roll[:, 0] = (torch.rand(b, t, p, generator=g) < 0.02).float()
    roll[:, 1] = (torch.rand(b, t, p, generator=g) < 0.05).float() * 0.6
    valid = torch.zeros(b, t, dtype=torch.bool)
    valid[:, :valid_steps] = True
    return {"roll": roll, "valid": valid, "mode": torch.zeros(b, dtype=torch.long),
            "attributes": torch.zeros(b, 2), "conditions": torch.zeros(b, 7), "metre": torch.zeros(b, dtype=torch.long),
            "log_tempo": torch.full((b,), 4.6)}


def test_vae_loss_parts_are_present_and_finite(batch):
    cfg = VAEConfig(latent_dim=16, hidden_dim=32)
    torch.manual_seed(0)
    model = ChromaticVAE(cfg).train()
    parts = vae_loss(model(batch), batch, cfg, beta=0.2)
    assert set(parts) == {"loss", "onset", "sustain", "metre", "tempo", "kl"}
    for name, value in parts.items():
        assert value.dim() == 0 and torch.isfinite(value), name
    assert parts["onset"] > 0 and parts["sustain"] > 0 and parts["kl"] >= 0
    parts["loss"].backward()  # the total is differentiable end to end
    assert model.encoder[0].weight.grad is not None


def test_vae_loss_free_bits():
    cfg = VAEConfig(latent_dim=16, free_bits=0.05)
    out, batch = _toy_out(), _toy_batch()
    zero, one = vae_loss(out, batch, cfg, beta=0.0), vae_loss(out, batch, cfg, beta=1.0)
    # The posterior equals the prior: no KL, but each dimension is charged its free bits.
    assert zero["kl"].item() == 0.0 and one["kl"].item() == 0.0
    # (float32 sums near 100 leave ~1e-5 of rounding in a difference of two losses)
    assert (one["loss"] - zero["loss"]).item() == pytest.approx(0.05 * 16 / 64, abs=5e-5)
    assert (vae_loss(out, batch, cfg, beta=2.0)["loss"] - zero["loss"]).item() == pytest.approx(2 * 0.05 * 16 / 64,
                                                                                                 abs=5e-5)
    # Above the free bits the real KL counts: mean 1 everywhere is 0.5 nats per dimension.
    out["mean"] = torch.ones(2, 16)
    shifted = vae_loss(out, batch, cfg, beta=1.0)
    assert shifted["kl"].item() == pytest.approx(0.5 * 16)
    assert (shifted["loss"] - vae_loss(out, batch, cfg, beta=0.0)["loss"]).item() == pytest.approx(0.5 * 16 / 64,
                                                                                                    abs=5e-5)


def test_vae_loss_ignores_invalid_steps():
    cfg = VAEConfig(latent_dim=16)
    out, batch = _toy_out(), _toy_batch(valid_steps=32)
    base = vae_loss(out, batch, cfg, beta=0.5)
    changed = {k: v.clone() for k, v in out.items()}
    changed["onset"][:, 32:] = 25.0
    changed["sustain"][:, 32:] = -25.0
    for k in ("loss", "onset", "sustain"):
        assert vae_loss(changed, batch, cfg, beta=0.5)[k].item() == pytest.approx(base[k].item(), rel=1e-6)
    # The same change inside the segment does move the loss.
    inside = {k: v.clone() for k, v in out.items()}
    inside["onset"][:, :32] = 25.0
    assert vae_loss(inside, batch, cfg, beta=0.5)["loss"].item() > base["loss"].item() + 1


def test_beta_constant():
    cfg = VAEConfig(beta=0.3, beta_schedule="constant", beta_warmup_epochs=10)
    assert [beta_at(cfg, e) for e in (0, 0.5, 7, 100)] == [0.3] * 4
    # No warm-up length means no schedule.
    assert beta_at(VAEConfig(beta=0.3, beta_schedule="linear", beta_warmup_epochs=0), 0) == 0.3


def test_beta_linear():
    cfg = VAEConfig(beta=0.2, beta_schedule="linear", beta_warmup_epochs=10)
    assert beta_at(cfg, 0) == 0.0
    assert beta_at(cfg, 2.5) == pytest.approx(0.05)
    assert beta_at(cfg, 5) == pytest.approx(0.1)
    assert beta_at(cfg, 10) == pytest.approx(0.2)
    assert beta_at(cfg, 37) == pytest.approx(0.2)


def test_beta_cyclical():
    cfg = VAEConfig(beta=0.2, beta_schedule="cyclical", beta_warmup_epochs=10)
    first = [beta_at(cfg, e) for e in (0, 2.5, 5, 7.5, 9.9)]
    assert first == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.2])
    second = [beta_at(cfg, e) for e in (10, 12.5, 15, 17.5, 19.9)]
    assert second == pytest.approx(first)  # each cycle repeats the first
    assert beta_at(cfg, 21) == pytest.approx(0.04)


# ---- training ------------------------------------------------------------------------------------------------
def test_training_writes_metrics_checkpoints_and_plot(run_dir):
    out, best = run_dir
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("train_loss", "val_loss", "val_f1", "val_kl", "beta", "lr"):
            assert math.isfinite(r[key]), key
        assert 0 <= r["val_f1"] <= 1
    # the learning rate after each epoch follows the cosine schedule down to its floor (the loss on 64 segments
    # is too noisy to assert it falls)
    from engines.training.vae_trainer import LR_FLOOR

    vc = load_config(overrides=TINY).model.vae
    for r in rows:
        share = LR_FLOOR + (1 - LR_FLOOR) * 0.5 * (1 + math.cos(math.pi * r["epoch"] / vc.epochs))
        assert r["lr"] == pytest.approx(vc.learning_rate * share)
    assert rows[-1]["lr"] == pytest.approx(vc.learning_rate * LR_FLOOR)
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


def test_best_checkpoint_rebuilds_the_model(run_dir):
    out, best = run_dir
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
def resumed(run_dir, tmp_path_factory):
    """The 2-epoch run copied and resumed with epochs=3: (directory, rows before, what it printed)."""
    out = tmp_path_factory.mktemp("vae-resumed") / "run"
    shutil.copytree(run_dir[0], out)
    before = MetricsLog(out / "metrics.jsonl").rows()
    cfg = load_config(overrides=TINY[:-1] + ["model.vae.epochs=3"])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train_vae(cfg, out, resume=True, limit=LIMIT, workers=0)
    return out, before, printed.getvalue()


def test_resume_adds_one_epoch(resumed):
    out, before, printed = resumed
    assert "resuming after epoch 2" in printed
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert len(rows) == 3 and rows[:2] == before and rows[2]["epoch"] == 3
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3


def test_resume_anneals_over_the_new_epoch_count(resumed):
    rows = MetricsLog(resumed[0] / "metrics.jsonl").rows()
    assert rows[2]["lr"] <= rows[1]["lr"]
    assert rows[2]["lr"] == pytest.approx(1e-3 / 20)


def _torchrun(args, out_dir, env_extra=None) -> subprocess.CompletedProcess:
    """Two CPU processes (gloo) under torchrun, in the repository root."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


DDP_SET = ["--set", "model.vae.latent_dim=8", "--set", "model.vae.hidden_dim=16", "--set", "model.vae.batch_size=8",
           "--set", "model.vae.epochs=1"]


@pytest.mark.slow
def test_ddp_train_vae_under_torchrun(tmp_path):
    """train_vae itself under DDP: gloo joins, both ranks train, rank 0 alone writes the run."""
    script = tmp_path / "ddp_train.py"
    script.write_text(
        "import os, sys, pathlib\n"
        "from engines.config import load_config\n"
        "from engines.training.vae_trainer import _better, train_vae\n"
        "cfg = load_config(overrides=[s for s in sys.argv[2:] if s != '--set'])\n"
        "best = train_vae(cfg, sys.argv[1], limit=32, workers=0)\n"
        "# each rank records what train_vae returned (a file: torchrun may drop a worker's last stdout)\n"
        "pathlib.Path(sys.argv[1], 'rank' + os.environ['RANK']).write_text(str(best.get('epoch')))\n")
    out = tmp_path / "run"
    proc = _torchrun([str(script), str(out), *DDP_SET], out, {"PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert [r["epoch"] for r in rows] == [1]  # one row: rank 0 alone writes
    assert proc.stdout.count("epoch 1: train") == 1
    # Rank 0 returns its best row, rank 1 (which never validates) its empty start.
    assert [(out / f"rank{r}").read_text() for r in (0, 1)] == ["1", "None"]
    payload = torch.load(out / "best.pt", weights_only=True)
    assert payload["config"]["latent_dim"] == 8 and payload["metrics"]["epoch"] == 1
    assert not any(k.startswith("module.") for k in payload["state_dict"])  # the bare model, not the DDP wrapper
    model_from_checkpoint(payload)


@pytest.mark.slow
def test_ddp_train_command_under_torchrun(tmp_path):
    out = tmp_path / "run"
    proc = _torchrun(["-m", "engines", "train", "--engine", "vae", "--limit", "32", "--workers", "0",
                      "--out", str(out), *DDP_SET], out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "best.pt").is_file()
    rows = MetricsLog(out / "metrics.jsonl").rows()
    assert [r["epoch"] for r in rows] == [1]  # rank 0 alone writes
    assert "vectors" in torch.load(out / "best.pt", weights_only=True)
    assert proc.stdout.count('"best"') == 1 and "Infinity" not in proc.stdout  # one summary, from rank 0
    assert json.loads((out / "command.json").read_text())["best"]["epoch"] == 1


# ---- latent vectors ------------------------------------------------------------------------------------------
def test_finalize_adds_latent_vectors(checkpoint, run_dir, tiny_cfg, cache):
    path, norms = checkpoint
    payload = torch.load(path, weights_only=True)
    vectors = payload["vectors"]
    # The rows finalize_vae encoded: a fixed random subset of the training split.
    vae = TrainedVAE.load(run_dir[0] / "best.pt")
    latents, indices = encode_split(vae, tiny_cfg, "train", LIMIT)
    assert latents.shape == (LIMIT, LATENT) and len(set(indices.tolist())) == LIMIT
    present = {MODES[m] for m in cache.segments["mode"][indices]}
    assert set(vectors) == {"rebracketing", "temporal_complexity", *AXES} | {f"mode:{m}" for m in present}
    assert set(norms["vector_norms"]) == set(vectors)
    assert 0.5 <= norms["onset_threshold"] <= 0.95 and 0 <= norms["validation_f1"] <= 1
    for name, vector in vectors.items():
        assert vector.shape == (LATENT,) and torch.isfinite(vector).all(), name
        assert norms["vector_norms"][name] == pytest.approx(float(vector.norm()), abs=1e-3)
    expected = latent_vectors(latents, cache.segments[indices])
    for name in vectors:
        torch.testing.assert_close(vectors[name], expected[name], atol=1e-5, rtol=1e-5)
    # Mode vectors are offsets from the overall mean: weighted by mode counts they cancel.
    counts = np.bincount(cache.segments["mode"][indices], minlength=len(MODES))
    total = sum(int(counts[MODES.index(m)]) * vectors[f"mode:{m}"] for m in present)
    assert total.abs().max().item() < 1e-3
    # The weights are untouched.
    best = torch.load(run_dir[0] / "best.pt", weights_only=True)
    for key, value in best["state_dict"].items():
        assert torch.equal(payload["state_dict"][key], value), key


def test_finalize_fits_a_prior_per_mode_and_a_threshold_for_its_samples(checkpoint, run_dir, tiny_cfg, cache):
    from engines.training.vae_finalize import THRESHOLDS, fitted_prior

    path, summary = checkpoint
    payload = torch.load(path, weights_only=True)
    latents, variances, indices = encode_split(TrainedVAE.load(run_dir[0] / "best.pt"), tiny_cfg, "train", LIMIT,
                                               variances=True)
    rows = cache.segments[indices]
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


def test_samples_come_from_the_fitted_prior_unless_the_network_prior_is_asked(checkpoint):
    path, _ = checkpoint
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


# ---- TrainedVAE ----------------------------------------------------------------------------------------------
def _key(segments) -> list:
    return [(s.ts_num, s.ts_den, s.tempo_qpm, s.notes.tobytes()) for s in segments]


def test_sample_is_seeded(vae):
    a, za = vae.sample("RED", n=3, seed=7)
    b, zb = vae.sample("RED", n=3, seed=7)
    assert za.shape == (3, LATENT) and torch.equal(za, zb)
    assert _key(a) == _key(b)
    c, zc = vae.sample("RED", n=3, seed=8)
    assert not torch.equal(za, zc)
    # Different latents decode to different logits, hence (practically always) different segments.
    assert not torch.equal(vae.model.decode(za, torch.ones(3, dtype=torch.long))["onset"],
                           vae.model.decode(zc, torch.ones(3, dtype=torch.long))["onset"])
    # The draw is centred on RED's prior mean (the fitted one when finalize fitted one, else the network's);
    # temperature scales the spread around it.
    centre = vae.fitted_prior["mean"][MODES.index("RED")] if vae.fitted_prior else \
        vae.model.prior_mean(torch.tensor([MODES.index("RED")]))
    _, hot = vae.sample("RED", n=3, seed=7, temperature=2.0)
    torch.testing.assert_close(hot - centre, 2 * (za - centre))
    network = vae.model.prior_mean(torch.tensor([MODES.index("RED")]))
    _, cold = vae.sample("RED", n=3, seed=7, temperature=0.5, prior="network")
    torch.testing.assert_close(cold - network, 0.5 * (vae.sample("RED", n=3, seed=7, prior="network")[1] - network))


def test_conditional_prior_is_learned_per_mode(vae, run_dir):
    # Training moved the prior means of the modes it saw (64 segments hold most of them) away from zero.
    means = vae.model.prior.weight.detach()
    assert means.shape == (len(MODES) + 1, LATENT)
    assert (means[:len(MODES)].norm(dim=1) > 0).sum() >= 4
    assert not torch.allclose(means[MODES.index("RED")], means[MODES.index("BLUE")])
    # A "standard" model keeps the prior at N(0, I): the means are frozen zeros.
    standard = ChromaticVAE(VAEConfig(latent_dim=8, hidden_dim=16, prior="standard"))
    assert not standard.prior.weight.requires_grad and standard.prior.weight.abs().sum() == 0


def test_gaussian_kl_against_a_shifted_prior():
    mean, logvar = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    torch.testing.assert_close(gaussian_kl(mean, logvar), torch.tensor([[0.5, 2.0]]))
    # Against a prior centred on the posterior mean, equal variances: no KL at all.
    torch.testing.assert_close(gaussian_kl(mean, logvar, mean.clone()), torch.zeros(1, 2))
    torch.testing.assert_close(gaussian_kl(mean, torch.full((1, 2), math.log(4.0)), torch.zeros(1, 2)),
                               0.5 * (mean ** 2 + 4 - 1 - math.log(4.0)))


def test_key_to_c_moves_every_segment_to_the_tonic_c(cache):
    rows = [int(r) for r in np.nonzero(cache.segments["key"] % 12 != 0)[0][:6]]
    plain, in_c = RollDataset(cache, rows), RollDataset(cache, rows, key_to_c=True)
    for i, row in enumerate(rows):
        tonic = int(cache.segments[row]["key"]) % 12
        shift = in_c.shifts[i]
        assert shift == shift_to_c(tonic) and -6 <= shift <= 5 and (tonic + shift) % 12 == 0
        assert plain.shifts[i] == 0
        moved = transpose_notes(cache.segment(row).notes, shift)
        assert segment_tonic(Segment(moved)) == 0
        # Onsets move by `shift` pitches in the roll; the rhythm is untouched.
        a, b = plain[i]["roll"][0], in_c[i]["roll"][0]
        assert torch.equal(a.sum(1), b.sum(1))


def test_transposition_helpers():
    assert [shift_to_c(t) for t in range(12)] == [0, -1, -2, -3, -4, -5, -6, 5, 4, 3, 2, 1]
    notes = np.array([(0, 12, 60, 80, 0), (0, 12, 107, 80, 0)], dtype=NOTE_DTYPE)
    moved = transpose_notes(notes, 3)
    assert moved["pitch"].tolist() == [63, 98]           # 110 is past the piano: folded an octave down
    assert notes["pitch"].tolist() == [60, 107]          # the input is untouched
    assert tonic_shift(None) == 0 and tonic_shift("C") == 0
    assert tonic_shift("G") == -5 and tonic_shift("f#") == 6 and tonic_shift("Bb") == -2 and tonic_shift("Db") == 1
    with pytest.raises(StudioError, match="unknown tonic 'H'; choose one of C, C#, D"):
        tonic_shift("H")


def test_decode_to_another_tonic_transposes_the_notes(vae):
    z = vae.sample_latents("YELLOW", 4, seed=3)
    in_c, in_g = vae.decode(z, "YELLOW"), vae.decode(z, "YELLOW", tonic="G")
    for a, b in zip(in_c, in_g):
        np.testing.assert_array_equal(b.notes["start"], a.notes["start"])
        np.testing.assert_array_equal(b.notes["pitch"], transpose_notes(a.notes, -5)["pitch"])


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must lie in 1..256, got 0"),
    ({"n": 257}, "n must lie in 1..256, got 257"),
    ({"temperature": 0.0}, r"temperature must lie in \(0, 5\], got 0.0"),
    ({"temperature": 5.5}, r"temperature must lie in \(0, 5\], got 5.5"),
    ({"temperature": -1.0}, r"temperature must lie in \(0, 5\], got -1.0"),
])
def test_sample_rejects_bad_arguments(vae, kwargs, message):
    with pytest.raises(StudioError, match=message):
        vae.sample("RED", **kwargs)


def test_unknown_mode(vae):
    with pytest.raises(StudioError, match="unknown mode 'PINK'; choose one of BLACK, RED, .*VIOLET, WHITE"):
        vae.sample("PINK")
    with pytest.raises(StudioError, match="unknown mode 'PINK'"):
        vae.decode(torch.zeros(LATENT), "pink")
    # Lower case and the WHITE / empty "no mode" are accepted.
    z = torch.randn(2, LATENT, generator=torch.Generator().manual_seed(0))
    assert _key(vae.decode(z, "red")) == _key(vae.decode(z, "RED"))
    assert _key(vae.decode(z, "")) == _key(vae.decode(z, "WHITE"))


def test_decode_gives_well_formed_segments(vae):
    z = 2 * torch.randn(12, LATENT, generator=torch.Generator().manual_seed(1))
    segments = vae.decode(z, "BLUE")
    assert len(segments) == 12
    for s in segments:
        assert isinstance(s, Segment) and s.num_bars == 4
        assert (s.ts_num, s.ts_den) in METRES
        assert 30 <= s.tempo_qpm <= 300
        if len(s.notes):
            assert s.notes["pitch"].min() >= 21 and s.notes["pitch"].max() <= 108
            assert (s.notes["start"] >= 0).all() and (s.notes["start"] < s.length).all()
            assert (s.notes["duration"] > 0).all()
            assert (s.notes["start"] + s.notes["duration"] <= s.length).all()
            assert (s.notes["velocity"] == DEFAULT_VELOCITY).all()
    # One latent (D,) decodes too, with attributes given.
    (one,) = vae.decode(z[0], "BLUE", {"rebracketing": 0.9, "temporal_complexity": 0.1})
    assert isinstance(one, Segment)


def test_encode_and_interpolate(vae, cache, rows):
    segments = [cache.segment(r) for r in rows]
    z = vae.encode(segments, "RED")
    assert z.shape == (3, LATENT) and torch.isfinite(z).all()
    # encode is the posterior mean of the dataset's rolls.
    ds_batch = next(iter(DataLoader(RollDataset(cache, rows, key_to_c=True), batch_size=3)))
    torch.testing.assert_close(z, vae.encode_rolls(ds_batch["roll"], torch.full((3,), MODES.index("RED"))))
    path = vae.interpolate(z[0], z[1], steps=6)
    assert path.shape == (6, LATENT)
    torch.testing.assert_close(path[0], z[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(path[-1], z[1], atol=1e-4, rtol=1e-4)
    assert len(vae.decode(path, "RED")) == 6
    with pytest.raises(StudioError, match="at least 2 steps"):
        vae.interpolate(z[0], z[1], steps=1)


def test_shift_along_named_vectors(vae):
    z = torch.randn(2, LATENT, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(vae.shift(z, "rebracketing", 1.5), z + 1.5 * vae.vectors["rebracketing"])
    with pytest.raises(StudioError) as err:
        vae.shift(z, "sparkle", 1.0)
    message = str(err.value)
    assert message.startswith("no attribute vector 'sparkle'; this checkpoint has: ")
    for name in ("rebracketing", "temporal_complexity", *AXES):
        assert name in message


def test_load_errors(tmp_path):
    with pytest.raises(StudioError, match="checkpoint '.*nope.pt' does not exist"):
        TrainedVAE.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(StudioError, match="checkpoint 'bad.pt' could not be read"):
        TrainedVAE.load(bad)


# ---- decoding hand-made logits -------------------------------------------------------------------------------
def _logits(metre, tempo=90.0, t=64, p=88) -> dict:
    metre_logits = torch.full((1, len(METRES)), -5.0)
    metre_logits[0, METRES.index(metre)] = 5.0
    return {"onset": torch.full((1, t, p), -10.0), "sustain": torch.full((1, t, p), -10.0), "metre": metre_logits,
            "log_tempo": torch.tensor([math.log(tempo)])}


def test_logits_to_segments_one_note():
    out = _logits((4, 4))
    out["onset"][0, 4, 39] = 10.0
    out["sustain"][0, 4:8, 39] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den, segment.num_bars) == (4, 4, 4)
    assert segment.tempo_qpm == pytest.approx(90.0)
    assert len(segment.notes) == 1
    note = segment.notes[0]
    # Step 4 of sixteenths (3 ticks), four steps long, pitch index 39 above A0 (21) = middle C.
    assert (int(note["start"]), int(note["duration"]), int(note["pitch"]), int(note["velocity"])) == (12, 12, 60, 80)


def test_pitch_window_keeps_the_peak_of_neighbouring_onsets_and_ends_overlaps():
    out = _logits((4, 4))
    out["onset"][0, 0, 39] = 3.0                   # C4 and a less likely C#4 and D4 at once: a blurred pitch
    out["onset"][0, 0, 40] = 2.0
    out["onset"][0, 0, 41] = 2.5
    out["onset"][0, 0, 46] = 2.0                   # G4 is a fifth away: a chord tone, kept
    out["sustain"][0, 0:8, 39] = 10.0              # C4 is held for two beats ...
    out["onset"][0, 4, 41] = 10.0                  # ... but D4 starts on beat 2: the line moved on
    out["sustain"][0, 4:8, 41] = 10.0
    plain, = logits_to_segments(out, onset_threshold=0.5)
    assert sorted((int(n["start"]), int(n["pitch"])) for n in plain.notes) == [
        (0, 60), (0, 61), (0, 62), (0, 67), (12, 62)]
    assert {int(n["pitch"]): int(n["duration"]) for n in plain.notes if n["start"] == 0}[60] == 24
    peaked, = logits_to_segments(out, onset_threshold=0.5, pitch_window=2)
    assert sorted((int(n["start"]), int(n["pitch"]), int(n["duration"])) for n in peaked.notes) == [
        (0, 60, 12), (0, 67, 3), (12, 62, 12)]
    # pitch_peaks alone: only local maxima on the pitch axis survive; window 0 changes nothing.
    probs = torch.tensor([[[0.2, 0.9, 0.8, 0.1, 0.1, 0.7]]])
    torch.testing.assert_close(pitch_peaks(probs, 2), torch.tensor([[[0.0, 0.9, 0.0, 0.0, 0.0, 0.7]]]))
    assert torch.equal(pitch_peaks(probs, 0), probs)


def test_logits_to_segments_repeated_onsets_and_chords():
    out = _logits((3, 4))
    out["onset"][0, [0, 2], 39] = 10.0          # two onsets of one pitch: the second ends the first
    out["sustain"][0, 0:6, 39] = 10.0
    out["onset"][0, 0, [43, 46]] = 10.0          # a chord
    out["sustain"][0, 0:1, [43, 46]] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den) == (3, 4)
    notes = sorted((int(n["start"]), int(n["duration"]), int(n["pitch"])) for n in segment.notes)
    assert notes == [(0, 3, 64), (0, 3, 67), (0, 6, 60), (6, 12, 60)]


def test_logits_to_segments_drops_padding_and_clamps_tempo():
    out = _logits((2, 4), tempo=1000.0)
    out["onset"][0, 2, 50] = 10.0
    out["sustain"][0, 2:4, 50] = 10.0
    out["onset"][0, 40, 39] = 10.0               # past the 32 steps of four 2/4 bars
    out["sustain"][0, 40:44, 39] = 10.0
    out["onset"][0, 30, 60] = 10.0               # sounds into the padding: cut at the end of bar 4
    out["sustain"][0, 30:40, 60] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den) == (2, 4)
    assert segment.tempo_qpm == 300.0
    notes = sorted((int(n["start"]), int(n["duration"]), int(n["pitch"])) for n in segment.notes)
    assert notes == [(6, 6, 71), (90, 6, 81)]
    slow = _logits((4, 4), tempo=5.0)
    assert logits_to_segments(slow)[0].tempo_qpm == 30.0
    assert len(logits_to_segments(slow)[0].notes) == 0


def test_logits_to_segments_long_bars_use_eighth_steps():
    out = _logits((4, 2))                         # 96 ticks a bar: 16 steps of 6 ticks
    out["onset"][0, 63, 39] = 10.0
    out["sustain"][0, 63, 39] = 10.0
    (segment,) = logits_to_segments(out)
    assert [(int(n["start"]), int(n["duration"])) for n in segment.notes] == [(378, 6)]
    assert segment.length == 384


# ---- command line --------------------------------------------------------------------------------------------
def test_cli_generate(checkpoint, tmp_path, capsys):
    out = tmp_path / "gen"
    code = main(["generate", "--engine", "vae", "--mode", "RED", "--n", "2", "--seed", "1", "--out", str(out),
                 "--checkpoint", str(checkpoint[0])])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    summary = json.loads(stdout)
    assert (summary["engine"], summary["mode"], summary["n"], summary["seed"]) == ("vae", "RED", 2, 1)
    assert len(summary["files"]) == 2
    assert sorted(p.name for p in out.glob("*.mid")) == ["vae-red-1-0.mid", "vae-red-1-1.mid"]
    segments, _ = TrainedVAE.load(checkpoint[0]).sample("RED", n=2, seed=1)
    for entry, segment in zip(summary["files"], segments):
        assert Path(entry["midi"]).is_file()
        assert "analysis" in entry
        if len(segment.notes):
            assert entry["analysis"]["mode"] in MODES
            assert 0 <= entry["analysis"]["rebracketing"] <= 1
        else:
            assert entry["analysis"] is None


def test_cli_generate_errors(checkpoint, tmp_path, capsys):
    code = main(["generate", "--engine", "vae", "--mode", "PINK", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(checkpoint[0])])
    stdout, stderr = capsys.readouterr()
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: unknown mode 'PINK'; choose one of")
    code = main(["generate", "--engine", "vae", "--n", "0", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(checkpoint[0])])
    assert code == 2 and capsys.readouterr().err == "error: the number of results must lie in 1..256, got 0\n"
    code = main(["generate", "--engine", "vae", "--tonic", "H", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(checkpoint[0])])
    assert code == 2 and capsys.readouterr().err.startswith("error: unknown tonic 'H'; choose one of C, C#, D")
    code = main(["generate", "--engine", "vae", "--out", str(tmp_path / "gen"),
                 "--checkpoint", str(tmp_path / "missing.pt")])
    assert code == 2 and "no vae checkpoint at '" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_evaluate(checkpoint, tmp_path, capsys):
    report = tmp_path / "eval.json"
    code = main(["evaluate", "--engine", "vae", "--checkpoint", str(checkpoint[0]), "--n", "2",
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
    # beside the raw model, verified generation measured the same way (evaluate's default: the VAE's K = 32)
    assert result["verification"]["candidates"] == 32 and result["latency_ms"]["raw"] > 0
    assert result["latency_ms"]["verified"] > 0 and result["latency_ms"]["engine"] > 0
    for kind in ("raw", "verified"):
        assert 0 <= consistency[kind]["overall"] <= 1 and set(consistency[kind]["per_mode"]) == set(MODES)
        assert result["copies"][kind]["n"] > 0 and 0 <= result["copies"][kind]["near_copy_rate"] <= 1
        assert set(result["judge"]["consistency"][kind]["per_mode"]) == set(MODES)
    assert result["copies"]["verified"]["near_copy_rate"] == 0.0   # never a copy


def test_studio_engine_generates_playable_analysed_segments(checkpoint, cache, tmp_path):
    from engines.api import Request, StudioEngine
    from engines.config import load_config

    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(checkpoint[0], models / "vae.pt")
    cfg = load_config(overrides=[f"model.checkpoints_dir={models}"])
    engine = StudioEngine(cfg, cache=cache, out_dir=tmp_path / "out")
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


def test_missing_checkpoint_is_a_clear_error(cache, tmp_path):
    from engines.api import Request, StudioEngine
    from engines.config import load_config

    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), cache=cache,
                          out_dir=tmp_path / "out")
    assert engine.engines_available() == []
    with pytest.raises(StudioError, match="no VAE checkpoint at .*train one with `python -m engines train"):
        engine.generate(Request(mode="RED"))


def test_ship_copies_the_best_checkpoint_and_writes_its_card(run_dir, tmp_path):
    from engines.training.model_card import ship

    (run_dir[0] / "command.json").write_text('{"argv": ["engines", "train", "--engine", "vae", "--limit", "64"]}')
    result = ship("vae", run_dir[0], tmp_path / "checkpoints")
    shipped = torch.load(result["checkpoint"], weights_only=True)
    assert shipped["engine"] == "vae" and result["size_mb"] < 30
    card = Path(result["card"]).read_text()
    assert "`python -m engines train --engine vae --limit 64`" in card
    rows = [line for line in card.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == len(MetricsLog(run_dir[0] / "metrics.jsonl").rows())
    with pytest.raises(StudioError, match="is a vae checkpoint, not diffusion"):
        ship("diffusion", run_dir[0], tmp_path / "other")


# ---- latent map and explorer -----------------------------------------------------------------------------------
def test_finalize_fits_a_latent_map_that_inverts_exactly_like_umap(checkpoint, run_dir, tiny_cfg, cache):
    from engines.models.latent_map import LatentMap, fit_latent_map, restore_umap

    payload = torch.load(checkpoint[0], weights_only=True)["latent_map"]
    latents, indices = encode_split(TrainedVAE.load(run_dir[0] / "best.pt"), tiny_cfg, "train", LIMIT)
    assert payload["embedding"].shape == (LIMIT, 2) and payload["latents"].shape == (LIMIT, LATENT)
    assert sorted(payload["rows"].tolist()) == sorted(indices.tolist())
    # The fit is reproducible (fixed random_state): fitting the same latents again gives the same map.
    again, fitted = fit_latent_map(payload["latents"].numpy(), payload["rows"].numpy(), seed=payload["seed"])
    np.testing.assert_allclose(again["embedding"].numpy(), payload["embedding"].numpy(), atol=1e-4)
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


@pytest.fixture(scope="module")
def explorer(checkpoint, tiny_cfg, cache, tmp_path_factory):
    from engines.api import StudioEngine

    folder = checkpoint[0].parent
    cfg = load_config(overrides=TINY + [f"model.checkpoints_dir={folder}"])
    return StudioEngine(cfg, cache=cache, out_dir=tmp_path_factory.mktemp("explorer")).explorer


def test_explorer_map_points_name_their_segments(explorer, cache):
    points = explorer.map_points()
    assert len(points["x"]) == len(points["y"]) == len(points["index"]) == LIMIT
    for i, mode, label in zip(points["index"][:5], points["mode"], points["label"]):
        assert mode == MODES[cache.segments["mode"][i]]
        assert label.startswith(cache.piece_of(i)["id"]) and "bars" in label


def test_explorer_decodes_places_and_segments(explorer, vae, cache):
    points = explorer.map_points()
    z = explorer.latent_at(points["x"][0], points["y"][0])
    assert len(z) == LATENT and all(math.isfinite(v) for v in z)
    i = points["index"][0]
    z_segment = explorer.latent_of_segment(i)
    expected = vae.encode([cache.segment(i)], MODES[cache.segments["mode"][i]])[0]
    np.testing.assert_allclose(z_segment, expected.numpy(), atol=1e-5)
    view = explorer.decode(z_segment, "RED", title="segment")
    assert Path(view.midi_path).is_file() and view.latent == z_segment
    assert (view.analysis is None) == (view.wav_path is None)
    # Files are named by what they hold: the same latent under another mode never gets the RED file back.
    other = explorer.decode(z_segment, "BLUE", title="segment")
    same_notes = view.notes.pitch == other.notes.pitch and view.notes.start == other.notes.start
    assert (other.midi_path == view.midi_path) == same_notes


def test_explorer_interpolation_strip_stitches_the_steps(explorer, vae):
    a, b = (explorer.sample("BLUE", seed=s) for s in (1, 2))
    strip = explorer.interpolate(a, b, steps=4, method="lerp")
    assert len(strip.steps) == 4 and len(strip.notes.regions) == 4
    np.testing.assert_allclose(strip.steps[0].latent, a, atol=1e-6)
    np.testing.assert_allclose(strip.steps[-1].latent, b, atol=1e-6)
    assert Path(strip.midi_path).is_file() and Path(strip.wav_path).stat().st_size > 1000
    # The stitched MIDI holds every step's notes, one after another.
    segments = vae.decode(vae.interpolate(torch.tensor(a), torch.tensor(b), 4, "lerp"))
    assert len(strip.notes.pitch) == sum(len(s.notes) for s in segments)
    assert strip.notes.bar_lines[-1] == pytest.approx(sum(s.length for s in segments) / 12)


def test_explorer_shift_is_latent_arithmetic_and_names_bad_input(explorer, vae):
    z = explorer.sample("WHITE", seed=3)
    mode = next(name.split(":")[1] for name in vae.vectors if name.startswith("mode:"))  # one the 64 segments hold
    moved = explorer.shift(z, {"rebracketing": 1.5, "energy": -0.5}, mode, 1.0)
    expected = (torch.tensor(z) + 1.5 * vae.vectors["rebracketing"] - 0.5 * vae.vectors["energy"]
                + vae.vectors[f"mode:{mode}"])
    np.testing.assert_allclose(moved, expected.numpy(), atol=1e-5)
    with pytest.raises(StudioError, match="unknown attribute 'loudness'"):
        explorer.shift(z, {"loudness": 1.0})
    with pytest.raises(StudioError, match="2..32 steps"):
        explorer.interpolate(z, z, steps=1)
    with pytest.raises(StudioError, match=f"{LATENT} finite numbers"):
        explorer.decode(z[:3])
    with pytest.raises(StudioError, match="does not exist"):
        explorer.latent_of_segment(10 ** 9)


# ---- the condition: every attribute on its own, a mode's interior, an adversary on z ------------------------
def test_a_first_checkpoint_with_one_shared_attribute_flag_still_loads_and_decodes(batch):
    old = ChromaticVAE(VAEConfig(latent_dim=16, hidden_dim=32, attributes=["rebracketing", "temporal_complexity"],
                                 attribute_mask="shared"))
    payload = checkpoint_payload(old, {})
    for key in ("attribute_mask", "attribute_dropout", "adversary_weight"):   # as the first checkpoints were
        payload["config"].pop(key)
    loaded = model_from_checkpoint(payload)
    assert loaded.config.attribute_mask == "shared" and loaded.from_latent.in_features == 16 + 16 + 3
    z = torch.zeros(2, 16)
    values = torch.tensor([[0.5, 0.2], [0.5, 0.2]])
    assert torch.equal(loaded.decode(z, torch.zeros(2, dtype=torch.long), values)["onset"],
                       old.eval().decode(z, torch.zeros(2, dtype=torch.long), values)["onset"])


def test_each_attribute_can_be_given_alone_and_a_mode_aims_inside_its_region():
    from engines.models.conditioning import (attribute_dropout, attribute_inputs, attribute_tensors, mode_targets,
                                             request_attributes)

    names = ["rebracketing", "energy", "valence"]
    values, given = attribute_tensors({"energy": 0.8, "valence": -0.5, "pitch": 3}, names, 2)
    assert values[0].tolist() == pytest.approx([0.0, 0.8, 0.25]) and given[0].tolist() == [0.0, 1.0, 1.0]
    each = attribute_inputs(values, given, "each", 3)
    assert each.shape == (2, 6) and each[0].tolist() == pytest.approx([0.0, 0.8, 0.25, 0.0, 1.0, 1.0])
    assert attribute_inputs(None, None, "each", 3, batch=2).abs().sum() == 0          # nothing given
    assert attribute_inputs(values, given, "shared", 3).shape == (2, 4)
    torch.manual_seed(0)
    kept = attribute_dropout(20000, 7, 0.1, 0.3, "cpu")
    assert kept.mean().item() == pytest.approx(0.9 * 0.7, abs=0.01)
    assert (kept.sum(1) == 0).float().mean().item() == pytest.approx(0.1 + 0.9 * 0.3 ** 7, abs=0.01)
    # a mode fills the axes not asked for with its interior target; rhythm stays free; WHITE adds nothing
    targets = {"RED": {"rebracketing": 0.1, "temporal_complexity": 0.4, "energy": 0.9, "valence": 0.25,
                       "tension": 0.7, "intimacy": 0.2, "motion": 0.8}}
    all_names = ["rebracketing", "temporal_complexity", "energy", "valence", "tension", "intimacy", "motion"]
    asked = request_attributes("RED", {"energy": 0.3, "rebracketing": 0.6}, targets, all_names)
    assert asked == {"energy": 0.3, "rebracketing": 0.6, "valence": -0.5, "tension": 0.7, "intimacy": 0.2,
                     "motion": 0.8}
    assert request_attributes("WHITE", {"energy": 0.3}, targets, all_names) == {"energy": 0.3}
    # the targets: medians of each mode's clearest segments
    rows = np.zeros(4, dtype=[("rebracketing", "f4"), ("temporal_complexity", "f4"), ("axes", "f4", (5,)),
                              ("scores", "f4", (8,)), ("mode", "u1")])
    rows["axes"][:, 0] = [0.2, 0.4, 0.6, 0.8]
    rows["axes"][:, 1] = [-1.0, -1.0, 1.0, 1.0]
    rows["scores"][:, 0] = [0.3, 0.4, 0.9, 0.8]                                    # all BLACK; the last two clearest
    found = mode_targets(rows)
    assert list(found) == ["BLACK"] and found["BLACK"]["energy"] == pytest.approx(0.7)
    assert found["BLACK"]["valence"] == pytest.approx(1.0)                        # unit scale


def test_the_adversary_learns_to_read_z_while_the_encoder_learns_to_hide_the_mode(batch):
    torch.manual_seed(0)
    cfg = VAEConfig(latent_dim=16, hidden_dim=32, adversary_weight=1.0)
    model = ChromaticVAE(cfg).eval()                      # z = the posterior mean: both passes see the same z
    parts = vae_loss(model(batch), batch, cfg, beta=0.2)
    assert "adversary" in parts and torch.isfinite(parts["adversary"])
    parts["adversary"].backward()
    through_reversal = (model.adversary[0].weight.grad.clone(), model.to_posterior.weight.grad.clone())
    model.zero_grad()
    mean, _ = model.encode(batch["roll"], batch["mode"])
    guess = model.adversary(mean)
    direct = torch.nn.functional.cross_entropy(guess[:, :8], batch["mode"]) + torch.nn.functional.mse_loss(
        torch.sigmoid(guess[:, 8:]), batch["conditions"][:, model.attribute_columns])
    direct.backward()
    # the adversary learns to read z as it would without the reversal; the encoder gets the opposite push
    assert torch.allclose(model.adversary[0].weight.grad, through_reversal[0], atol=1e-6)
    assert torch.allclose(model.to_posterior.weight.grad, -through_reversal[1], atol=1e-6)
    assert through_reversal[1].abs().sum() > 0


def test_a_shifted_latent_is_placed_on_the_map_near_its_neighbours(explorer):
    latent_map = explorer._map()
    data, places = latent_map.payload["latents"].numpy(), latent_map.embedding
    # a fitted latent lands on its own place; a point between two lands between their places

    for i, place in enumerate(latent_map.project(data[:5])):   # (a repeated segment has twins: any of theirs)
        twins = np.nonzero(np.abs(data - data[i]).max(axis=1) < 1e-6)[0]
        assert np.abs(places[twins] - place).max(axis=1).min() < 1e-3
    assert explorer.place_of(data[0].tolist()) == pytest.approx(tuple(latent_map.project(data[:1])[0]))
    # a latent nudged off a fitted one (far less than to any other) lands next to that one's place: its
    # neighbours weigh by inverse distance (equal weights would put it at the mean of its 8 neighbours)
    others = np.abs(data - data[5]).max(axis=1) > 1e-6
    nearest_other = np.sqrt(((data[others] - data[5]) ** 2).sum(1)).min()
    nudged = data[5] + 1e-3 * nearest_other / np.sqrt(data.shape[1])
    span = np.ptp(places, axis=0).max()
    twins = np.nonzero(~others)[0]
    assert np.abs(places[twins] - latent_map.project(nudged[None])[0]).max(axis=1).min() < 0.01 * span
    with pytest.raises(StudioError, match="a latent here is"):
        explorer.place_of([1.0, 2.0])
