"""The listening-session store: schema migrations, WAL, blinded assignments, votes stored once, concurrent
raters and a killed writer (engines/sessions/store.py)."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

import pytest

from engines.errors import StudioError
from engines.sessions.store import SCHEMA_VERSION, SessionStore

SYSTEMS = {"vae": {"engine": "vae"}, "gpt": {"engine": "autoregressive", "temperature": 0.8}}


def make_session(store: SessionStore, pairs: int = 6, per_rater: int = 4) -> str:
    stimuli, index = [], []
    for i in range(pairs):
        mode = ["RED", "BLUE"][i % 2]
        for system in SYSTEMS:
            stimuli.append({"system": system, "mode": mode, "midi_path": f"{system}-{i}.mid",
                            "audio_path": f"{system}-{i}.wav"})
        index.append((len(stimuli) - 2, len(stimuli) - 1))
    return store.create_session("Which sounds more like its mode?", "Which one sounds more RED?", ["RED", "BLUE"],
                                per_rater, SYSTEMS, stimuli, index)


@pytest.fixture
def store(tmp_path):
    s = SessionStore(tmp_path / "listening.sqlite")
    yield s
    s.close()


def test_schema_is_migrated_once_and_sqlite_runs_in_wal_mode(tmp_path):
    store = SessionStore(tmp_path / "db" / "listening.sqlite")
    assert store.migrate() == SCHEMA_VERSION == 1 and store.journal_mode() == "wal"
    code = make_session(store)
    store.close()
    again = SessionStore(str(tmp_path / "db" / "listening.sqlite"))  # reopening keeps the data, applies nothing
    assert again.session(code)["pairs"] == 6 and again.session(code.lower())["systems"] == SYSTEMS
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM schema_migrations").scalar() == 1
    again.close()


def test_session_creation_refuses_what_cannot_be_a_blind_comparison(store):
    one = [{"system": "vae", "mode": "RED", "midi_path": "a", "audio_path": "a"}] * 2
    with pytest.raises(StudioError, match="at least two systems"):
        store.create_session("t", "q", ["RED"], 2, {"vae": {}}, one, [(0, 1)])
    with pytest.raises(StudioError, match="two different systems' stimuli of the same mode"):
        store.create_session("t", "q", ["RED"], 2, SYSTEMS, one, [(0, 1)])
    with pytest.raises(StudioError, match="no listening session with code 'NOPE'"):
        store.session("nope")


def test_a_rater_hears_each_assigned_pair_once_in_their_own_blinded_order(store):
    code = make_session(store, pairs=6, per_rater=4)
    token = store.join(code, "Ada")
    seen, placements = [], Counter()
    while (shown := store.next_pair(token)) is not None:
        assert shown["position"] == len(seen) + 1 and shown["total"] == 4
        seen.append(shown["pair"])
        placements[shown["a"]["midi_path"].split("-")[0]] += 1
        assert store.vote(token, shown["pair"], ["A", "B", "tie", "A"][len(seen) - 1], "nice") is True
    assert len(seen) == len(set(seen)) == 4 and store.progress(token) == (4, 4)
    assert store.vote(token, seen[0], "B") is False                       # stored once, whatever is sent again
    votes = store.votes(code)
    assert [v["choice"] for v in votes] == ["A", "B", "tie", "A"] and votes[0]["rater_name"] == "Ada"
    for v in votes:  # what was heard as A / B maps back to the systems, whichever side each played on
        assert {v["shown_a"], v["shown_b"]} == {"vae", "gpt"}
        assert v["preferred"] == {"A": v["shown_a"], "B": v["shown_b"], "tie": None}[v["choice"]]
    orders = {tuple(p["pair"] for p in _all_pairs(store, store.join(code))) for _ in range(8)}
    assert len(orders) > 1                                               # raters get their own orders
    with pytest.raises(StudioError, match="not one of this rater's pairs"):
        store.vote(token, 10_000, "A")
    with pytest.raises(StudioError, match="answer must be one of A, B, tie"):
        store.vote(token, seen[0], "C")
    with pytest.raises(StudioError, match="unknown rater key"):
        store.next_pair("forged")


def _all_pairs(store, token):
    pairs = []
    while (shown := store.next_pair(token)) is not None:
        pairs.append(shown)
        store.vote(token, shown["pair"], "tie")
    return pairs


def test_pausing_resumes_where_the_rater_left_and_a_closed_session_takes_no_votes(store):
    code = make_session(store)
    token = store.join(code)
    first = store.next_pair(token)
    store.vote(token, first["pair"], "A")
    second = store.next_pair(token)
    assert store.next_pair(token) == second and second["pair"] != first["pair"]   # a reload shows the same pair
    store.set_status(code, "closed")
    with pytest.raises(StudioError, match="is closed"):
        store.vote(token, second["pair"], "B")
    with pytest.raises(StudioError, match="is closed"):
        store.join(code)
    assert len(store.votes(code)) == 1


def test_twenty_concurrent_raters_lose_no_vote_and_store_none_twice(store):
    code = make_session(store, pairs=6, per_rater=6)
    tokens = [store.join(code, f"r{i}") for i in range(20)]
    errors = []

    def rate(token):
        try:
            while (shown := store.next_pair(token)) is not None:
                store.vote(token, shown["pair"], "A")
                store.vote(token, shown["pair"], "A")   # a double click
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(t,)) for t in tokens]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    votes = store.votes(code)
    assert len(votes) == 120 and len({(v["rater"], v["pair"]) for v in votes}) == 120


KILLED_WRITER = """
import os, signal, sys
from engines.sessions.store import SessionStore
store = SessionStore(sys.argv[1])
token = sys.argv[3]
for _ in range(3):
    shown = store.next_pair(token)
    store.vote(token, shown["pair"], "B")
    print(shown["pair"], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_votes_committed_before_a_kill_9_are_all_there(tmp_path):
    path = tmp_path / "listening.sqlite"
    store = SessionStore(path)
    code = make_session(store)
    token = store.join(code)
    store.close()
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), code, token], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == -9, run.stderr
    reported = [int(line) for line in run.stdout.split()]
    reopened = SessionStore(path)
    assert len(reported) == 3 and [v["pair"] for v in reopened.votes(code)] == reported
    reopened.close()
