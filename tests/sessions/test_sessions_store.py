"""The listening-session store: schema migrations, WAL, blinded assignments, votes stored once, organiser
keys and joining policies, concurrent raters, a killed writer and two processes on one database
(engines/sessions/store.py). Tests taking `database_url` run on SQLite and on a real PostgreSQL server."""
from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from engines.errors import StudioError
from engines.sessions import store as store_module
from engines.sessions.store import SCHEMA_VERSION, SessionStore, key_hash

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = {"vae": {"engine": "vae"}, "gpt": {"engine": "autoregressive", "temperature": 0.8}}


def make_session(store: SessionStore, pairs: int = 6, per_rater: int = 4, **options) -> str:
    stimuli, index = [], []
    for i in range(pairs):
        mode = ["RED", "BLUE"][i % 2]
        for system in SYSTEMS:
            stimuli.append({"system": system, "mode": mode, "midi_path": f"{system}-{i}.mid",
                            "audio_path": f"{system}-{i}.wav"})
        index.append((len(stimuli) - 2, len(stimuli) - 1))
    return store.create_session("Which sounds more like its mode?", "Which one sounds more RED?", ["RED", "BLUE"],
                                per_rater, SYSTEMS, stimuli, index, **options)


@pytest.fixture
def store(database_url):
    s = SessionStore(database_url)
    yield s
    s.close()


def test_schema_is_migrated_once_and_sqlite_runs_in_wal_mode(tmp_path):
    store = SessionStore(tmp_path / "db" / "listening.sqlite")
    assert store.migrate() == SCHEMA_VERSION == 2 and store.journal_mode() == "wal"
    code = make_session(store)
    store.close()
    again = SessionStore(str(tmp_path / "db" / "listening.sqlite"))  # reopening keeps the data, applies nothing
    assert again.session(code)["pairs"] == 6 and again.session(code.lower())["systems"] == SYSTEMS
    with again.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM schema_migrations").scalar() == 2
    again.close()


def test_a_version_1_database_is_migrated_and_keeps_its_sessions_raters_and_votes(database_url, monkeypatch):
    with monkeypatch.context() as m:   # a database as the first release left it
        m.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
        m.setattr(store_module, "SCHEMA_VERSION", 1)
        old = SessionStore(database_url)
        with old.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO sessions (code, title, question, modes, pairs_per_rater, status, "
                                 "created) VALUES ('OLD1', 't', 'q', '[\"RED\"]', 2, 'open', 'x')")
            conn.exec_driver_sql("INSERT INTO raters (token, session, name, created) VALUES ('tok', 'OLD1', 'Ada', 'x')")
        old.close()
    store = SessionStore(database_url)
    info = store.session("OLD1")
    assert store.migrate() == 2 and info["joining"] == "open" and info["raters_joined"] == 1
    assert store.rater("tok")["name"] == "Ada"
    with pytest.raises(StudioError, match="made before organiser keys.*listen rekey OLD1"):
        store.check_organiser("OLD1", "anything")
    key = store.rekey("OLD1")                             # the server's holder gives it one
    assert store.check_organiser("old1", key) == "OLD1"
    store.close()


def test_the_organiser_key_is_stored_hashed_and_checked(store):
    code = make_session(store, organiser_key="s3cret-key")
    assert store.check_organiser(code, " s3cret-key ") == code
    with store.engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT organiser_key_hash FROM sessions").scalar()
    assert stored == key_hash("s3cret-key") and "s3cret" not in stored and "organiser_key_hash" not in store.session(code)
    with pytest.raises(StudioError, match=f"not the organiser key of session '{code}'"):
        store.check_organiser(code, "guess")
    with pytest.raises(StudioError, match="give its organiser key"):
        store.check_organiser(code, "")
    assert not store.has_creator_keys() and not store.is_creator_key("x")
    creator = store.add_creator_key()
    assert store.has_creator_keys() and store.is_creator_key(creator) and not store.is_creator_key(creator + "x")


def test_open_joining_stops_at_the_cap_even_when_raters_join_at_once(store):
    code = make_session(store, max_raters=3)
    joined, refused = [], []

    def join(i):
        try:
            joined.append(store.join(code, f"r{i}"))
        except StudioError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=join, args=(i,)) for i in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(joined) == 3 and len(refused) == 5 and all("is full" in r for r in refused)
    assert store.session(code)["raters_joined"] == 3
    store.add_raters(code, 2)                              # the organiser makes room for two more
    store.join(code), store.join(code)
    with pytest.raises(StudioError, match="is full; ask its organiser to add raters"):
        store.join(code)


def test_invitations_join_one_rater_each_once(store):
    code = make_session(store, joining="invite")
    links = store.add_raters(code, 2)
    assert len(links) == 2 and store.invitations(code) == {"made": 2, "used": 0}
    with pytest.raises(StudioError, match="is by invitation"):
        store.join(code, "no link")
    first = store.join(code, "Ada", invitation=links[0])
    with pytest.raises(StudioError, match="used already or is not for this session"):
        store.join(code, "Ada again", invitation=links[0])
    with pytest.raises(StudioError, match="used already or is not for this session"):
        store.join(code, "forger", invitation="made-up")
    store.join(code, "Bea", invitation=links[1])
    assert store.invitations(code) == {"made": 2, "used": 2} and store.session(code)["raters_joined"] == 2
    assert store.rater(first)["name"] == "Ada"              # the refused joins left no rater behind
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM raters").scalar() == 2


def test_a_database_that_fails_tells_raters_nothing_of_its_url_and_the_organiser_which_key(tmp_path, caplog):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(StudioError, match=r"sessions.database '.*a-file/x.sqlite': its folder cannot be made"):
        SessionStore(tmp_path / "a-file" / "x.sqlite")
    with pytest.raises(StudioError, match=r"sessions.database 'sqlite:///.*' cannot be opened: unable to open"):
        SessionStore(tmp_path)                               # a folder, not a database file
    with pytest.raises(StudioError, match="sessions.database 'postgresql\\+psycopg://ada:\\*\\*\\*@127.0.0.1:1/x' cannot be opened"):
        SessionStore("postgresql+psycopg://ada:hunter2@127.0.0.1:1/x")
    store = SessionStore(tmp_path / "ok.sqlite")
    code = make_session(store)
    store.engine.dispose()
    (tmp_path / "ok.sqlite").unlink()
    (tmp_path / "ok.sqlite").mkdir()   # the database file is gone, a folder in its place: every query fails
    with pytest.raises(StudioError) as failure:
        store.join(code)
    assert str(failure.value) == store_module.UNAVAILABLE and str(tmp_path) not in str(failure.value)
    assert "ok.sqlite" in caplog.text                       # the organiser's log has the detail


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


def test_votes_committed_before_a_kill_9_are_all_there(database_url):
    path = database_url
    store = SessionStore(path)
    code = make_session(store)
    token = store.join(code)
    store.close()
    run = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(path), code, token], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode == -9, run.stderr
    reported = [int(line) for line in run.stdout.split()]
    reopened = SessionStore(path)
    assert len(reported) == 3 and [v["pair"] for v in reopened.votes(code)] == reported
    reopened.close()


TWO_PROCESSES_WRITER = """
import sys
from engines.sessions.store import SessionStore
store = SessionStore(sys.argv[1])
for token in sys.argv[2:]:
    while (shown := store.next_pair(token)) is not None:
        store.vote(token, shown["pair"], "A")
        store.vote(token, shown["pair"], "B")   # a retry: stores nothing
"""


def test_two_processes_on_one_database_lose_no_vote_and_store_none_twice(database_url):
    store = SessionStore(database_url)
    code = make_session(store, pairs=8, per_rater=8)
    tokens = [store.join(code, f"r{i}") for i in range(16)]
    writers = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES_WRITER, database_url, *tokens[i::2]],
                                cwd=ROOT, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [w.communicate(timeout=300)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    votes = store.votes(code)
    assert len(votes) == 16 * 8 and len({(v["rater"], v["pair"]) for v in votes}) == 16 * 8
    assert {v["choice"] for v in votes} == {"A"}           # the first answer is the one kept
    store.close()
