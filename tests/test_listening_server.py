"""The listening workflow through the served studio: twenty raters voting at once over the Gradio API
(gradio_client on 127.0.0.1) lose no vote and store none twice; votes survive a kill -9 of the server."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import soundfile

from engines.sessions.store import SessionStore
from tests.helpers import start_studio, stop_studio

ROOT = Path(__file__).resolve().parents[1]
RATERS = 20
PAIRS_PER_RATER = 5


def make_session(folder: Path) -> tuple[Path, str]:
    """A session over short tones (the workflow, not the engines, is under test here)."""
    folder.mkdir(parents=True, exist_ok=True)
    database = folder.with_name(f"{folder.name}-private") / "sessions.sqlite"   # never inside the served folder
    database.parent.mkdir(exist_ok=True)
    store = SessionStore(database)
    stimuli, pairs = [], []
    for i in range(8):
        for system, pitch in (("low", 220.0), ("high", 440.0)):
            wav = folder / f"{system}-{i}.wav"
            soundfile.write(wav, 0.2 * np.sin(2 * np.pi * pitch * np.arange(8000) / 16000), 16000)
            stimuli.append({"system": system, "mode": "RED", "midi_path": str(wav), "audio_path": str(wav)})
        pairs.append((len(stimuli) - 2, len(stimuli) - 1))
    code = store.create_session("Tones", "Which one sounds more RED?", ["RED"], PAIRS_PER_RATER,
                                {"low": {}, "high": {}}, stimuli, pairs)
    store.close()
    return database, code


def serve(folder: Path, database: Path) -> tuple[subprocess.Popen, str]:
    return start_studio([f"sessions.database={database}", f"sessions.stimuli_dir={folder}"], folder / "studio.log")


def test_twenty_raters_at_once_through_the_gradio_api(tmp_path):
    from gradio_client import Client

    database, code = make_session(tmp_path)
    proc, url = serve(tmp_path, database)
    acknowledged, errors = [], []
    lock = threading.Lock()

    def rater(i):
        try:
            client = Client(url, verbose=False)
            view = client.predict(code, f"rater {i}", api_name="/listen_join")
            while view["pair"] is not None:
                pair = view["pair"]
                view = client.predict(view["token"], pair, ["A", "B", "tie"][i % 3], f"from {i}",
                                      api_name="/listen_vote")
                client.predict(view["token"], pair, "A", "again", api_name="/listen_vote")  # a double submit
                with lock:
                    acknowledged.append((view["token"], pair))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    try:
        threads = [threading.Thread(target=rater, args=(i,)) for i in range(RATERS)]
        [t.start() for t in threads]
        [t.join(timeout=300) for t in threads]
    finally:
        stop_studio(proc)
    assert not errors, errors[:3]
    store = SessionStore(database)
    votes = store.votes(code)
    store.close()
    assert len(acknowledged) == RATERS * PAIRS_PER_RATER
    assert len(votes) == RATERS * PAIRS_PER_RATER                              # none lost ...
    assert {(v["rater"], v["pair"]) for v in votes} == set(acknowledged)       # ... none twice
    assert all(v["comment"].startswith("from ") for v in votes)               # the first answer is the one kept


def test_votes_survive_a_kill_9_of_the_server_and_the_rater_resumes(tmp_path):
    from gradio_client import Client

    database, code = make_session(tmp_path)
    proc, url = serve(tmp_path, database)
    client = Client(url, verbose=False)
    view = client.predict(code, "Ada", api_name="/listen_join")
    token, answered = view["token"], []
    for _ in range(3):
        answered.append(view["pair"])
        view = client.predict(token, view["pair"], "B", "", api_name="/listen_vote")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    store = SessionStore(database)
    assert [v["pair"] for v in store.votes(code)] == answered                 # every acknowledged vote is there
    store.close()
    proc, url = serve(tmp_path, database)
    try:
        resumed = Client(url, verbose=False).predict(token, api_name="/listen_resume")
    finally:
        stop_studio(proc)
    assert resumed["answered"] == 3 and resumed["pair"] == view["pair"]      # back where the rater was
