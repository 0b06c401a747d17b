"""Small builders shared by tests: MIDI files and segments with known content."""
from __future__ import annotations

from pathlib import Path

# A diffusion denoiser small enough to train in seconds on a few dozen segments (T = 100 steps).
TINY_DIFFUSION = ["model.diffusion.base_channels=16", "model.diffusion.channel_mults=[1,2]",
                  "model.diffusion.embedding_dim=32", "model.diffusion.attention_heads=2",
                  "model.diffusion.batch_size=16", "model.diffusion.epochs=2", "model.diffusion.num_steps=100"]


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
