"""The listening workflow through the served studio, probed from a second client (gradio_client and plain HTTP
on 127.0.0.1): twenty raters voting at once lose no vote and store none twice; votes survive a kill -9 of the
server (on SQLite and on PostgreSQL); nothing private can be fetched (the database, its WAL, another session's
or an unpaired stimulus), nothing a rater receives names a system; the organiser's calls need the key; joining
stops at the cap and a closed session takes no vote."""
from __future__ import annotations

import json
import os
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile

from engines.sessions.store import SessionStore
from tests.helpers import start_studio, stop_studio

pytestmark = pytest.mark.slow   # studio servers in subprocesses: `make test` runs them, `make test-fast` does not

RATERS = 20
PAIRS_PER_RATER = 5
KEY = "organiser-secret-key"


def make_session(folder: Path, database: str, pairs: int = 8, per_rater: int = PAIRS_PER_RATER,
                 **options) -> str:
    """A session over short tones in `folder` (the workflow, not the engines, is under test here); the file
    names give the system away, as a leak would."""
    folder.mkdir(parents=True, exist_ok=True)
    store = SessionStore(database)
    stimuli, index = [], []
    for i in range(pairs):
        for system, pitch in (("low", 220.0), ("high", 440.0)):
            wav = folder / f"{system}-{i}.wav"
            soundfile.write(wav, 0.2 * np.sin(2 * np.pi * pitch * (1 + i / 50) * np.arange(8000) / 16000), 16000)
            stimuli.append({"system": system, "mode": "RED", "midi_path": str(wav), "audio_path": str(wav)})
        index.append((len(stimuli) - 2, len(stimuli) - 1))
    code = store.create_session("Tones", "Which one sounds more RED?", ["RED"], per_rater,
                                {"low": {"engine": "vae"}, "high": {"engine": "vae"}}, stimuli, index,
                                organiser_key=KEY, **options)
    store.close()
    return code


def serve(tmp_path: Path, database: str, *settings, env: dict | None = None) -> tuple:
    stimuli = tmp_path / "stimuli"
    return start_studio([f"sessions.database={database}", f"sessions.stimuli_dir={stimuli}", "studio.warm_up=false",
                         *settings],
                        tmp_path / "studio.log", env=env)


def sqlite_database(tmp_path: Path) -> str:
    return str(tmp_path / "private" / "sessions.sqlite")   # never inside the served folder


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_twenty_raters_at_once_through_the_gradio_api(tmp_path):
    from gradio_client import Client

    database = sqlite_database(tmp_path)
    code = make_session(tmp_path / "stimuli" / "S1", database)
    proc, url = serve(tmp_path, database)
    acknowledged, errors = [], []
    lock = threading.Lock()

    def rater(i):
        try:
            client = Client(url, verbose=False, download_files=False)
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


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_votes_survive_a_kill_9_of_the_server_and_the_rater_resumes(tmp_path, backend, request):
    from gradio_client import Client

    database = sqlite_database(tmp_path) if backend == "sqlite" else \
        request.getfixturevalue("postgres_server").new_database()
    code = make_session(tmp_path / "stimuli" / "S1", database)
    proc, url = serve(tmp_path, database)
    client = Client(url, verbose=False, download_files=False)
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
        again = Client(url, verbose=False, download_files=False)
        resumed = again.predict(token, api_name="/listen_resume")
        again.predict(token, answered[0], "A", "", api_name="/listen_vote")    # a retry after the crash
    finally:
        stop_studio(proc)
    assert resumed["answered"] == 3 and resumed["pair"] == view["pair"]      # back where the rater was
    store = SessionStore(database)
    assert len(store.votes(code)) == 3                                        # ... and nothing stored twice
    store.close()


def test_a_second_client_reaches_nothing_private_and_the_organiser_calls_need_the_key(tmp_path):
    """The issue-18 probes: what a rater's machine can fetch and call on a studio served for raters."""
    from gradio_client import Client

    database = sqlite_database(tmp_path)
    stimuli = tmp_path / "stimuli"
    code = make_session(stimuli / "S1", database, pairs=4, per_rater=2, max_raters=2)
    other = make_session(stimuli / "S2", database, pairs=2, per_rater=1)
    temp = tmp_path / "tmp"   # the studio's system temp folder: its renders folder, and Gradio's cache
    temp.mkdir()
    proc, url = serve(tmp_path, database, "sessions.open_creation=false", env={"TMPDIR": str(temp)})
    try:
        rater = Client(url, verbose=False, download_files=False)
        view = rater.predict(code, "Ada", api_name="/listen_join")
        # what a rater receives: the pair's audio as A.wav / B.wav from Gradio's cache, no system or settings
        text = json.dumps(view)
        assert not any(word in text for word in ("low", "high", "vae", str(stimuli)))
        assert Path(view["audio_a"]["path"]).name == "A.wav" and Path(view["audio_b"]["path"]).name == "B.wav"
        assert status_of(view["audio_a"]["url"]) == 200 and status_of(view["audio_b"]["url"]) == 200
        # what it may not fetch: the database and its WAL, its own session's unpaired stimuli, another session's
        private = [Path(database), Path(f"{database}-wal"), *sorted((stimuli / "S1").iterdir()),
                   *sorted((stimuli / "S2").iterdir())]
        assert Path(f"{database}-wal").exists()
        for path in private:
            assert status_of(f"{url}/gradio_api/file={path}") != 200, path
        assert status_of(f"{url}/gradio_api/file=data/private/sessions.sqlite") != 200
        # the organiser's calls without (or with a wrong) key are refused with the reason
        for api_name, args in (("/listen_results", (code, "")), ("/listen_results", (code, "guess")),
                               ("/listen_close", (code, "guess"))):
            with pytest.raises(Exception, match="organiser key"):
                rater.predict(*args, api_name=api_name)
        # joining past the cap, and bad answers, are refused with their reasons
        rater.predict(code, "Bea", api_name="/listen_join")
        with pytest.raises(Exception, match="is full; ask its organiser to add raters"):
            rater.predict(code, "Cy", api_name="/listen_join")
        with pytest.raises(Exception, match="answer must be one of A, B, tie"):
            rater.predict(view["token"], view["pair"], "C", "", api_name="/listen_vote")
        with pytest.raises(Exception, match="pair must be a pair's number"):
            rater.predict(view["token"], "first", "A", "", api_name="/listen_vote")
        with pytest.raises(Exception, match="is not one of this rater's pairs"):
            rater.predict(view["token"], 10_000, "A", "", api_name="/listen_vote")
        # with the key: results, then closing; a vote after closing is refused
        results = rater.predict(code, KEY, api_name="/listen_results")
        assert results["raters"] == 0 and results["joining"]["raters_joined"] == 2
        assert rater.predict(code, KEY, api_name="/listen_close") == {"code": code, "status": "closed"}
        with pytest.raises(Exception, match=f"listening session '{code}' is closed"):
            rater.predict(view["token"], view["pair"], "A", "", api_name="/listen_vote")
        assert rater.predict(other, "Dee", api_name="/listen_join")["total"] == 1   # the other session is open
        log = (tmp_path / "studio.log").read_text()
        assert len(list(temp.glob("chromatic-studio-*"))) == 1
    finally:
        stop_studio(proc)
    assert "creating one needs this organiser key" in log                   # said once, at start
    assert proc.returncode == 0 and not list(temp.glob("chromatic-studio-*"))   # its renders went with it
