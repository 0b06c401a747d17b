"""scripts/train_gpu.sh, the one-GPU retraining of every shipped checkpoint, run end to end on CPU with tiny
models (TINY=1): every engine trains in order and is shipped, with its model card, into the folder given."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engines.training.common import MetricsLog, load_checkpoint

pytestmark = pytest.mark.slow   # every engine trained and shipped in a subprocess: `make test` runs it, `make test-fast` does not

ROOT = Path(__file__).resolve().parents[2]
ENGINES = ("judge", "vae", "diffusion", "guidance-classifier", "codec", "autoregressive")


def test_the_gpu_script_retrains_and_ships_every_checkpoint_into_its_own_folder(tmp_path):
    env = dict(os.environ, TINY="1", PYTHON=sys.executable)
    run = subprocess.run(["bash", "scripts/train_gpu.sh", str(tmp_path / "gpu")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    assert [line.split()[1] for line in run.stdout.splitlines() if line.startswith("== ") and "done" not in line] \
        == list(ENGINES)
    for engine in ENGINES:
        payload = load_checkpoint(tmp_path / "gpu" / "checkpoints" / f"{engine}.pt")   # weights_only=True
        assert payload["engine"] == engine
        card = (tmp_path / "gpu" / "checkpoints" / f"{engine}.md").read_text()
        assert f"--engine {engine}" in card
    # the VAE's decoder is trained by the shipped critic, as the shipped VAE's was (docs/vae.md)
    [vae_row] = MetricsLog(tmp_path / "gpu" / "runs" / "vae" / "metrics.jsonl").rows()
    assert 0 <= vae_row["train_critic"] <= 1 and "model.vae.critic_weight=10" in \
        (tmp_path / "gpu" / "checkpoints" / "vae.md").read_text()


def test_a_short_gpu_lease_trains_engines_together_and_leaves_finalize_to_the_cpu(tmp_path):
    """PARALLEL=1 FINALIZE=0, as a GPU lease runs it: the engines train at the same time, each into its run
    folder with its own log; nothing is finalized or shipped (the VAE's latent vectors and map are CPU work)."""
    env = dict(os.environ, TINY="1", PARALLEL="1", FINALIZE="0", ENGINES="vae diffusion", PYTHON=sys.executable)
    run = subprocess.run(["bash", "scripts/train_gpu.sh", str(tmp_path / "gpu")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    runs = tmp_path / "gpu" / "runs"
    for engine in ("vae", "diffusion"):
        assert "epoch 1: train" in (runs / engine / "train.log").read_text()
        assert "--skip-finalize" in (runs / engine / "command.json").read_text()
    assert "vectors" not in load_checkpoint(runs / "vae" / "best.pt")             # finalize_vae did not run
    assert "onset_calibration" not in load_checkpoint(runs / "diffusion" / "best.pt")
    assert not list((tmp_path / "gpu" / "checkpoints").iterdir())
