"""A/B listening sessions end to end on the shipped VAE: stimuli generated and rendered ahead of time into
the session's folder, a rater's blinded pairs, results and the CSV export (engines/sessions/listening.py)."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from engines.api import StudioEngine
from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.sessions.listening import (Joining, ListeningService, SessionPlan, SystemSpec, plan_from_spec,
                                        rater_link)
from engines.sessions.store import SessionStore


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    base = tmp_path_factory.mktemp("listening")
    cfg = load_config()
    engine = StudioEngine(cfg, cache=ensure_corpus_cache(cfg), out_dir=base / "renders")
    store = SessionStore(base / "sessions.sqlite")
    (base / "corpus-folders").mkdir()
    yield ListeningService(engine, store, base / "stimuli", serve_dir=base / "served",
                           allowed_folders=[str(base / "corpus-folders")])
    store.close()


def plan(**kw) -> SessionPlan:
    values = dict(title="Temperature", question="Which one sounds more like its mode?",
                  systems=[SystemSpec("VAE cool", "vae", {"temperature": 0.6}),
                           SystemSpec("VAE hot", "vae", {"temperature": 1.3})],
                  modes=["RED", "BLUE"], stimuli_per_mode=2, pairs_per_rater=3)
    values.update(kw)
    return SessionPlan(**values)


def test_a_whole_session_from_creation_to_results(service):
    steps = []
    made = service.create(plan(), progress=lambda done, total, what: steps.append((done, total, what)))
    code, key = made.code, made.organiser_key
    assert steps[0] == (0, 4, "VAE cool · RED") and steps[-1] == (4, 4, "ready")
    info = service.store.session(code)
    assert info["pairs"] == made.pairs == 4 and set(info["systems"]) == {"VAE cool", "VAE hot"}
    assert made.invitations == [] and made.rater_links("http://host:7860/") == [f"http://host:7860/?session={code}"]
    folder = service.stimuli_dir / code
    assert len(list(folder.glob("*.wav"))) == 8 and not list(service.stimuli_dir.glob(".staging-*"))
    # blinded: a stimulus's file name says nothing of its system or settings
    assert all("vae" not in p.name.lower() and "hot" not in p.name.lower() and "cool" not in p.name.lower()
               for p in folder.iterdir())
    view = service.join(code, "Ada")
    heard = []
    while not view.done:
        # what a rater is served: copies of this pair's two files alone, as A.wav and B.wav in a random folder
        a, b = Path(view.audio_a), Path(view.audio_b)
        assert (a.name, b.name) == ("A.wav", "B.wav") and a.parent == b.parent
        assert a.parent.parent == service.serve_dir and folder not in a.parents and a.stat().st_size > 1000
        heard.append(view.pair)
        view = service.vote(view.token, view.pair, "A", "the first")
    assert len(heard) == 3 and view.answered == view.total == 3
    other = service.store.join(code, '=HYPERLINK("http://x")')   # a rater's text a spreadsheet would run
    while (shown := service.store.next_pair(other)) is not None:
        service.store.vote(other, shown["pair"], "tie", "+1 both fine")
    with pytest.raises(StudioError, match=f"not the organiser key of session '{code}'"):
        service.results(code, "a guess")
    with pytest.raises(StudioError, match="give its organiser key"):
        service.votes_csv(code, "")
    result = service.results(code, key, bootstrap=50)
    assert result["votes"] == 6 and result["raters"] == 2
    assert result["joining"] == {"open": True, "max_raters": None, "raters_joined": 2}
    (row,) = result["head_to_head"]
    assert row["a_wins"] + row["b_wins"] == 3 and row["ties"] == 3
    assert set(result["per_mode"]) == {"RED", "BLUE"}
    assert result["bradley_terry"]["systems"] == ["VAE cool", "VAE hot"]
    assert result["agreement"]["pairs_rated_twice"] >= 2   # 3 of 4 pairs each: at least 2 overlap
    rows = list(csv.DictReader(io.StringIO(service.votes_csv(code, key))))
    assert len(rows) == 6 and {r["choice"] for r in rows} == {"A", "tie"} and rows[0]["comment"] == "the first"
    ties = [r for r in rows if r["choice"] == "tie"]
    assert all(r["rater_name"] == '\'=HYPERLINK("http://x")' and r["comment"] == "'+1 both fine" for r in ties)
    # closing: no joining, no voting; what was stored stays; reopening takes votes again
    late = service.join(code, "Late")
    with pytest.raises(StudioError, match="not the organiser key"):
        service.close(code, "a guess")
    assert service.close(code, key)["status"] == "closed"
    with pytest.raises(StudioError, match=f"listening session '{code}' is closed"):
        service.vote(late.token, late.pair, "B")
    with pytest.raises(StudioError, match="is closed"):
        service.join(code, "Later")
    assert service.results(code, key, bootstrap=10)["votes"] == 6
    assert service.reopen(code, key)["status"] == "open"
    assert service.vote(late.token, late.pair, "B").answered == 1


def test_creation_needs_a_creator_key_when_it_is_not_open_and_invitation_sessions_give_links(service):
    service.open_creation = False
    try:
        with pytest.raises(StudioError, match="creating sessions on this studio needs an organiser key"):
            service.create(plan())
        with pytest.raises(StudioError, match="that organiser key cannot create sessions here"):
            service.create(plan(), creator_key="a guess")
        made = service.create(plan(stimuli_per_mode=1, joining=Joining(open=False, invitations=2)),
                              creator_key=service.store.add_creator_key())
    finally:
        service.open_creation = True
    links = made.rater_links("http://studio.lan:8080/?x=1")
    assert links == [f"http://studio.lan:8080/?session={made.code}&invite={t}" for t in made.invitations]
    assert len(set(made.invitations)) == 2
    with pytest.raises(StudioError, match="is by invitation"):
        service.join(made.code, "no link")
    view = service.join(made.code, "Ada", made.invitations[0])
    assert view.total == 2
    with pytest.raises(StudioError, match="used already"):
        service.join(made.code, "again", made.invitations[0])
    more = service.add_raters(made.code, made.organiser_key, 1)
    service.join(made.code, "Bea", made.invitations[1]), service.join(made.code, "Cy", more[0])
    joining = service.results(made.code, made.organiser_key, bootstrap=10)["joining"]
    assert joining == {"open": False, "max_raters": None, "raters_joined": 3, "invitations": {"made": 3, "used": 3}}
    assert rater_link("http://h/", "ABC") == "http://h/?session=ABC"


def test_a_study_spec_is_read_as_the_organise_tab_reads_its_form(tmp_path):
    import yaml

    spec = yaml.safe_load(Path("assets/configs/studies/mode_test.yaml").read_text())
    made = plan_from_spec(spec)
    assert [(s.name, s.kind) for s in made.systems] == [("vae", "vae"), ("diffusion-fast", "diffusion")]
    assert made.systems[1].settings == {"steps": 10} and made.modes == ["RED", "BLUE"]
    assert (made.stimuli_per_mode, made.pairs_per_rater) == (2, 4)
    assert made.joining == Joining(open=True, max_raters=3)
    assert plan_from_spec({**spec, "notes": "extra keys are fine"}).title == made.title
    with pytest.raises(StudioError, match="systems\\[2\\] \\('x'\\) needs an engine"):
        plan_from_spec({**spec, "systems": [{"name": "a", "engine": "vae"}, {"name": "x"}]})
    with pytest.raises(StudioError, match="'joining.max_raters' must be a whole number >= 1, got 0"):
        plan_from_spec({**spec, "joining": {"open": True, "max_raters": 0}})
    with pytest.raises(StudioError, match="'pairs_per_rater' must be a whole number"):
        plan_from_spec({**spec, "pairs_per_rater": "many"})
    invite = plan_from_spec({**spec, "joining": {"open": False, "invitations": 5}})
    assert invite.joining == Joining(open=False, invitations=5)


def test_the_database_never_lies_in_the_folder_raters_are_served(tmp_path):
    from engines.sessions.locations import check_private_database

    served = tmp_path / "listening"
    with pytest.raises(StudioError, match="sessions.database .* lies inside sessions.stimuli_dir"):
        check_private_database(str(served / "sessions.sqlite"), str(served))
    with pytest.raises(StudioError, match="lies inside"):
        check_private_database(f"sqlite:///{served}/deep/db.sqlite", str(served))
    check_private_database(str(tmp_path / "private" / "sessions.sqlite"), str(served))   # beside it: fine
    check_private_database("postgresql+psycopg://u@h/db", str(served))                  # a server: fine
    cfg = load_config(overrides=[f"sessions.database={served}/db.sqlite", f"sessions.stimuli_dir={served}"])
    with pytest.raises(StudioError, match="lies inside"):
        StudioEngine(cfg, cache=ensure_corpus_cache(load_config()), out_dir=tmp_path / "out")
    assert load_config().sessions.database == "data/private/sessions.sqlite"


def test_plans_that_cannot_run_are_refused_with_the_reason(service, tmp_path):
    with pytest.raises(StudioError, match="at least two systems"):
        service.create(plan(systems=[SystemSpec("only", "vae")]))
    with pytest.raises(StudioError, match="its own, non-empty name"):
        service.create(plan(systems=[SystemSpec("x", "vae"), SystemSpec("x", "vae")]))
    with pytest.raises(StudioError, match="no .mid files in folder"):
        service.create(plan(systems=[SystemSpec("a", "vae"),
                                     SystemSpec("b", "folder", folder=str(service.allowed_folders[0]))]))
    with pytest.raises(StudioError, match="system 'b': folder '.*' is not in the upload area or in "
                                          "sessions.allowed_folders"):
        service.create(plan(systems=[SystemSpec("a", "vae"), SystemSpec("b", "folder", folder="/etc")]))
    with pytest.raises(StudioError, match="not in the upload area"):   # no way out through ..
        service.create(plan(systems=[SystemSpec("a", "vae"), SystemSpec(
            "b", "folder", folder=str(service.allowed_folders[0] / ".." / ".."))]))
    with pytest.raises(StudioError, match="system 'a': the vae engine has no setting 'temprature'"):
        service.create(plan(systems=[SystemSpec("a", "vae", {"temprature": 1}), SystemSpec("b", "vae")]))
    with pytest.raises(StudioError, match="modes must be chosen from"):
        service.create(plan(modes=["PINK"]))
    with pytest.raises(StudioError, match="give raters a question"):
        service.create(plan(question="  "))


def test_a_folder_of_midi_is_a_system_by_the_modes_the_analyzer_hears(service):
    from engines.analysis import analyze_segments, midi_file_segments

    tmp_path = service.allowed_folders[0]   # a folder listed in sessions.allowed_folders
    for i in (3, 500, 900):
        midi, _ = service.engine.export_segments([service.engine.cache.segment(i)], f"corpus{i}")
        Path(midi).replace(tmp_path / f"corpus{i}.mid")
    (tmp_path / "broken.mid").write_bytes(b"not midi")  # skipped, the others count
    _, segments = midi_file_segments(tmp_path / "corpus3.mid", service.engine.cfg)
    heard = analyze_segments(segments[:1], service.engine.cfg)[0]["mode"]
    code = service.create(plan(systems=[SystemSpec("corpus", "folder", folder=str(tmp_path)),
                                        SystemSpec("VAE", "vae")], modes=[heard], stimuli_per_mode=1)).code
    stimuli = list((service.stimuli_dir / code).glob("*.mid"))
    assert service.store.session(code)["pairs"] == 1 and len(stimuli) == 2   # one of the folder's, one VAE


def test_uploaded_midi_files_become_a_folder_system(service, tmp_path):
    from engines.analysis import analyze_segments, midi_file_segments

    uploads = []
    for i in (3, 900):
        midi, _ = service.engine.export_segments([service.engine.cache.segment(i)], f"upload{i}")
        uploads.append(Path(midi).replace(tmp_path / f"piece {i}.mid"))
    folder = Path(service.import_midi("my pieces", uploads))
    assert folder.parent == service.stimuli_dir / "uploads" and folder.name.startswith("my-pieces-")
    assert sorted(p.name for p in folder.iterdir()) == ["000-piece-3.mid", "001-piece-900.mid"]
    assert Path(service.import_midi("my pieces", uploads)) == folder   # the same upload again: the same folder
    heard = analyze_segments(midi_file_segments(uploads[0], service.engine.cfg)[1][:1], service.engine.cfg)[0]["mode"]
    code = service.create(plan(systems=[SystemSpec("mine", "folder", folder=str(folder)), SystemSpec("VAE", "vae")],
                               modes=[heard], stimuli_per_mode=1)).code
    assert service.store.session(code)["pairs"] == 1
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StudioError, match="'notes.txt' is not a .mid or .midi file"):
        service.import_midi("mine", [uploads[0], tmp_path / "notes.txt"])
    (tmp_path / "broken.mid").write_bytes(b"not midi")
    with pytest.raises(StudioError, match="'broken.mid' is not a MIDI file"):
        service.import_midi("mine", [uploads[0], tmp_path / "broken.mid"])
    with pytest.raises(StudioError, match="name the uploaded system"):
        service.import_midi(" ", uploads)
    with pytest.raises(StudioError, match="upload one or more"):
        service.import_midi("mine", [])
    assert len(list((service.stimuli_dir / "uploads").iterdir())) == 1   # nothing kept of the refused ones


def test_a_database_at_the_first_default_moves_out_of_the_served_folder(tmp_path, monkeypatch):
    from engines.sessions.locations import move_legacy_database

    monkeypatch.chdir(tmp_path)
    old = tmp_path / "data" / "listening" / "sessions.sqlite"
    old.parent.mkdir(parents=True)
    store = SessionStore(old)
    code = store.create_session("t", "q?", ["RED"], 1, {"a": {}, "b": {}},
                                [{"system": s, "mode": "RED", "midi_path": "x", "audio_path": "x"} for s in "ab"],
                                [(0, 1)])
    store.close()
    assert move_legacy_database("data/private/sessions.sqlite", "data/listening")
    assert not old.exists() and SessionStore("data/private/sessions.sqlite").session(code)["pairs"] == 1
    assert not move_legacy_database("data/private/sessions.sqlite", "data/listening")   # once only
