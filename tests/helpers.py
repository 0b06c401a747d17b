"""Small builders shared by tests: MIDI files and segments with known content."""
from __future__ import annotations

from pathlib import Path

# Settings small enough for each engine to train in seconds on a few dozen segments (`limit`). conftest.py trains
# each once per test run (the session fixtures vae_run, diffusion_run, gpt_run); a test that needs another run
# starts from these.
TINY_VAE = ["model.vae.latent_dim=16", "model.vae.hidden_dim=32", "model.vae.batch_size=16", "model.vae.epochs=2"]
VAE_LIMIT = 64
# the denoiser at T = 100 steps (evaluation sweeps steps up to T), and the classifier that steers it
TINY_DIFFUSION = ["model.diffusion.base_channels=16", "model.diffusion.channel_mults=[1,2]",
                  "model.diffusion.embedding_dim=32", "model.diffusion.attention_heads=2",
                  "model.diffusion.batch_size=16", "model.diffusion.epochs=2", "model.diffusion.num_steps=100",
                  "model.guidance_classifier.base_channels=16", "model.guidance_classifier.channel_mults=[1,2]",
                  "model.guidance_classifier.embedding_dim=32", "model.guidance_classifier.batch_size=16",
                  "model.guidance_classifier.epochs=2"]
DIFFUSION_LIMIT = 48
TINY_GPT = ["model.autoregressive.n_layer=1", "model.autoregressive.n_head=2", "model.autoregressive.n_embd=32",
            "model.autoregressive.batch_size=16", "model.autoregressive.epochs=1",
            "model.autoregressive.captions_per_segment=2", "model.autoregressive.copy_check_samples=4"]
GPT_LIMIT = 64


def first_rolls(cfg, n: int = 8) -> dict:
    """A batch of the first `n` training segments as the diffusion networks see them (rolls in C)."""
    from torch.utils.data import DataLoader

    from engines.data.prepare import ensure_corpus_cache
    from engines.data.torch_dataset import RollDataset

    cache = ensure_corpus_cache(cfg)
    data = RollDataset.for_config(cache, cache.split_indices("train")[:n], cfg.data, True)
    return next(iter(DataLoader(data, batch_size=n)))


def write_test_midi(path: Path, bars: int = 8, tempo: float = 110.0) -> Path:
    """A two-voice 4/4 piece: a C-major melody in eighths over a half-note bass, `bars` bars long."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    score = Score(480)
    score.time_signatures.append(TimeSignature(0, 4, 4))
    score.tempos.append(Tempo(0, tempo))
    melody, bass = Track(name="melody", program=0), Track(name="bass", program=32)
    scale = [60, 62, 64, 65, 67, 69, 71, 72]
    for bar in range(bars):
        for step in range(8):
            pitch = scale[(bar + step) % 8] + (12 if bar % 2 else 0)
            melody.notes.append(Note(bar * 1920 + step * 240, 220, pitch, 90))
        for half in range(2):
            bass.notes.append(Note(bar * 1920 + half * 960, 900, 36 + (bar * 5) % 12, 70))
    score.tracks.extend([melody, bass])
    score.dump_midi(str(path))
    return Path(path)


def start_studio(settings: list[str], log_path, env: dict | None = None) -> tuple:
    """`python app.py --set ...` on a free port of 127.0.0.1, waited for until it serves: (process, url).
    Fails the test when it exits first or does not answer within 240 s."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import pytest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(env or {}))
    log = open(log_path, "w") if log_path else subprocess.DEVNULL
    args = [a for setting in settings for a in ("--set", setting)]
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the studio exited with status {proc.returncode} before serving (log: {log_path})")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    pytest.fail("the studio did not answer within 240 s")


def stop_studio(proc) -> None:
    import subprocess

    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def arpeggio_segment():
    """Four bars of 3/4 in G: a G major arpeggio per bar, one note per beat (inpainting's starting point)."""
    import numpy as np

    from engines.music.notes import NOTE_DTYPE, TICKS_PER_QUARTER, Segment

    q = TICKS_PER_QUARTER
    rows = [(bar * 3 * q + beat * q, q, pitch, 80, 0)
            for bar in range(4) for beat, pitch in enumerate((67, 71, 74))]
    return Segment(notes=np.array(rows, dtype=NOTE_DTYPE), ts_num=3, ts_den=4, num_bars=4, tempo_qpm=88.0)
