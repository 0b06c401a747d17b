"""engines/cli.py: `python -m engines analyze | stats | prepare`, output and one-line errors with exit status 2."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from engines.cli import main
from engines.music.analyzer import AXES, MODES
from tests.conftest import scale_melody, write_midi

REPO = Path(__file__).resolve().parents[1]
ANALYSIS_KEYS = {"bars", "mode", "scores", "axes", "rebracketing", "temporal_complexity", "key"}


@pytest.fixture
def song(tmp_path):
    """9 bars of 4/4: two whole segments and a one-bar remainder."""
    return write_midi(tmp_path / "song.mid", scale_melody(9, step=6))


@pytest.fixture
def garbage(tmp_path):
    path = tmp_path / "garbage.mid"
    path.write_bytes(b"this is not a MIDI file at all" * 10)
    return path


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json(capsys, song):
    code, out, err = run(capsys, "analyze", str(song), "--json")
    assert code == 0 and err == ""
    results = json.loads(out)
    assert isinstance(results, list) and len(results) == 3
    assert [r["bars"] for r in results] == [[1, 4], [5, 8], [9, 9]]
    for r in results:
        assert set(r) == ANALYSIS_KEYS
        assert r["mode"] in MODES and set(r["scores"]) == set(MODES) and set(r["axes"]) == set(AXES)
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-3)
        assert 0 <= r["rebracketing"] <= 1 and 0 <= r["temporal_complexity"] <= 1
    assert results[0]["key"] == "C major"


def test_analyze_features_and_segment_bars(capsys, song):
    code, out, _ = run(capsys, "analyze", str(song), "--json", "--features", "--set", "data.segment_bars=2")
    results = json.loads(out)
    assert code == 0 and [r["bars"] for r in results] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 9]]
    assert "syncopation" in results[0]["features"]


def test_analyze_text(capsys, song):
    code, out, _ = run(capsys, "analyze", str(song))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].startswith("bars   1-4") and "C major" in lines[0] and "rebracketing" in lines[0]
    assert any(mode in lines[0] for mode in MODES)


def test_analyze_garbage(capsys, garbage):
    code, out, err = run(capsys, "analyze", str(garbage), "--json")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: 'garbage.mid' is not a MIDI file")


def test_analyze_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "analyze", str(tmp_path / "nope.mid"))
    assert code == 2 and err == "error: 'nope.mid' does not exist\n"


def test_analyze_unusable_metre(capsys, tmp_path):
    path = write_midi(tmp_path / "odd.mid", [(i * 3, 3, 60, 80) for i in range(40)], signatures=((0, 7, 16),))
    code, _, err = run(capsys, "analyze", str(path))
    assert code == 2 and err.startswith("error: 'odd.mid' has no whole bar of notes in a usable time signature")


@pytest.mark.parametrize("override, expected", [
    ("data.nope=1", "error: unknown config key 'data.nope'"),
    ("data.segment_bars=0", "error: config key 'data.segment_bars' = 0 is not allowed"),
    ("segment_bars", "error: override 'segment_bars' must look like key.path=value"),
])
def test_bad_set(capsys, song, override, expected):
    code, out, err = run(capsys, "analyze", str(song), "--set", override)
    assert code == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1


def test_bad_config_file(capsys, song, tmp_path):
    code, _, err = run(capsys, "analyze", str(song), "--config", str(tmp_path / "missing.yaml"))
    assert code == 2 and err.startswith("error: config file") and "does not exist" in err


def test_usage_errors_exit_2(capsys):
    for argv in ([], ["frobnicate"], ["analyze"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_stats_json(capsys, prepared, tmp_path):
    out_file = tmp_path / "stats" / "stats.json"
    code, out, _ = run(capsys, "stats", "--cache", str(prepared[3]), "--json", str(out_file))
    stats = json.loads(out)
    assert code == 0 and json.loads(out_file.read_text()) == stats
    assert stats["segments"] == 10 and stats["pieces"] == 4 and stats["collections"] == {"songs": 10}
    spread = stats["rebracketing"]
    assert set(spread) == {"mean", "quartiles", "zero_share"} and 0 <= spread["zero_share"] <= 1
    assert spread["quartiles"] == sorted(spread["quartiles"]) and spread["mean"] == stats["rebracketing_mean"]


def test_stats_text(capsys, prepared):
    code, out, _ = run(capsys, "stats", "--cache", str(prepared[3]))
    assert code == 0 and out.startswith("10 segments from 4 pieces; splits")
    assert "songs" in out and "INDIGO" in out


def test_stats_of_missing_cache(capsys, tmp_path):
    code, _, err = run(capsys, "stats", "--cache", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error: no segment cache in")


def test_prepare_and_pack(capsys, tmp_path):
    (tmp_path / "songs").mkdir()
    write_midi(tmp_path / "songs" / "tune.mid", scale_melody(8))
    archive = tmp_path / "packed" / "cache.npz"
    code, out, _ = run(capsys, "prepare", "--midi-dir", str(tmp_path / "songs"), "--workers", "1",
                       "--set", f"data.cache_dir={tmp_path / 'cache'}", "--pack", str(archive))
    report = json.loads(out)
    assert code == 0 and report["segments"] == 2 and report["pieces"] == 1
    assert report["out"] == str(tmp_path / "cache" / "midi-songs") and report["packed"] == str(archive)
    assert archive.is_file()


def test_python_m_engines_analyze(song, garbage):
    done = subprocess.run([sys.executable, "-m", "engines", "analyze", str(song), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["bars"] for r in results] == [[1, 4], [5, 8], [9, 9]]
    assert all(ANALYSIS_KEYS <= set(r) for r in results)
    failed = subprocess.run([sys.executable, "-m", "engines", "analyze", str(garbage)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr.startswith("error: 'garbage.mid'") and failed.stderr.count("\n") == 1


@pytest.mark.slow
def test_an_unwritable_cache_or_session_folder_stops_the_studio_and_stats_in_one_line(tmp_path):
    blocker = tmp_path / "a-file"   # a file where a folder should be: no one can write under it, root included
    blocker.write_text("")
    cases = ((f"data.cache_dir={blocker}/cache", "data.cache_dir"),
             (f"sessions.database={blocker}/db/sessions.sqlite", "sessions.database"),
             (f"sessions.stimuli_dir={blocker}/stimuli", "sessions.stimuli_dir"))
    for setting, key in cases:
        started = subprocess.run([sys.executable, "app.py", "--port", "9", "--set", setting], cwd=REPO,
                                 capture_output=True, text=True, timeout=120)
        assert started.returncode == 2, started.stderr
        (line,) = started.stderr.strip().splitlines()
        assert line.startswith(f"error: {key} '{blocker}") and "is not a writable folder" in line
    stats = subprocess.run([sys.executable, "-m", "engines", "stats", "--set", cases[0][0]], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert stats.returncode == 2 and stats.stderr.strip().splitlines() == [
        f"error: data.cache_dir '{blocker}/cache' is not a writable folder (Not a directory); set data.cache_dir "
        "to one the studio can write, e.g. --set data.cache_dir=/tmp/studio"]


@pytest.mark.slow
def test_listen_create_results_and_close_from_the_command_line(capsys, tmp_path):
    """The documented study spec, created, read and closed as a script would (python -m engines listen)."""
    from engines.sessions.listening import ListeningService
    from engines.sessions.store import SessionStore

    settings = ["--set", f"sessions.database={tmp_path}/private/sessions.sqlite",
                "--set", f"sessions.stimuli_dir={tmp_path}/stimuli"]
    assert main(["listen", "create", "--spec", str(REPO / "assets/configs/studies/mode_test.yaml"), "--json",
                 "--base-url", "http://studio.lan:8080/", *settings]) == 0
    made = json.loads(capsys.readouterr().out)
    assert set(made) == {"code", "organiser_key", "pairs", "rater_links"} and made["pairs"] == 4   # 2 modes x 2
    assert made["rater_links"] == [f"http://studio.lan:8080/?session={made['code']}"]
    store = SessionStore(tmp_path / "private" / "sessions.sqlite")
    tokens = [store.join(made["code"], name) for name in ("Ada", "Bea", "Cy")]   # the spec's cap: 3 raters
    for token in tokens[:2]:
        while (shown := store.next_pair(token)) is not None:
            store.vote(token, shown["pair"], "A")
    with pytest.raises(Exception, match="is full"):
        store.join(made["code"], "Dee")
    assert main(["listen", "results", made["code"], "--key", made["organiser_key"], "--json", *settings]) == 0
    printed = json.loads(capsys.readouterr().out)
    tab = ListeningService(None, store, tmp_path / "stimuli").results(made["code"], made["organiser_key"])
    assert printed == json.loads(json.dumps(tab)) and printed["votes"] == 8      # what the Results tab shows
    assert main(["listen", "results", made["code"], "--key", "a guess", *settings]) == 2
    assert "not the organiser key" in capsys.readouterr().err
    assert main(["listen", "close", made["code"], "--key", made["organiser_key"], *settings]) == 0
    with pytest.raises(Exception, match="is closed"):
        store.vote(tokens[2], store.next_pair(tokens[2])["pair"], "B")
    store.close()
    (tmp_path / "bad.yaml").write_text("title: x\nsystems: [{name: a}]\n")
    assert main(["listen", "create", "--spec", str(tmp_path / "bad.yaml"), *settings]) == 2
    assert "systems[1] ('a') needs an engine" in capsys.readouterr().err


def test_generate_asks_for_axes_within_their_ranges(capsys, tmp_path):
    assert main(["generate", "--engine", "vae", "--valence", "1.5", "--out", str(tmp_path)]) == 2
    assert "--valence must lie in -1..1, got 1.5" in capsys.readouterr().err
    assert main(["generate", "--engine", "vae", "--energy", "-0.1", "--out", str(tmp_path)]) == 2
    assert "--energy must lie in 0..1, got -0.1" in capsys.readouterr().err


def test_generate_writes_the_tempo_metre_and_instrument_asked_for(capsys, tmp_path):
    from symusic import Score

    assert main(["generate", "--engine", "vae", "--mode", "BLUE", "--n", "2", "--candidates", "1", "--tempo", "90",
                 "--metre", "3/4", "--instrument", "41", "--scale", "minor", "--out", str(tmp_path)]) == 0
    files = json.loads(capsys.readouterr().out)["files"]
    assert len(files) == 2
    for entry in files:
        score = Score(entry["midi"])
        assert round(score.tempos[0].qpm) == 90 and score.tracks[0].program == 40
        assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
    assert main(["generate", "--engine", "vae", "--metre", "7/8", "--out", str(tmp_path)]) == 2
    assert "unknown metre '7/8'" in capsys.readouterr().err


def test_generate_with_audio_writes_the_midi_its_render_and_the_gpts_own_audio(capsys, tmp_path, gpt_audio_run,
                                                                               gpt_run):
    import soundfile

    assert main(["generate", "--engine", "autoregressive", "--mode", "BLUE", "--n", "1", "--candidates", "1",
                 "--max-bars", "1", "--audio", "--checkpoint", str(gpt_audio_run[0]), "--out", str(tmp_path)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    own, rate = soundfile.read(entry["model_audio"])
    assert Path(entry["midi"]).is_file() and Path(entry["audio"]).is_file()
    assert rate == 16000 and own.shape == (32000, 2) and abs(own).max() > 0
    plain = str(gpt_run[0] / "autoregressive.pt")
    assert main(["generate", "--engine", "autoregressive", "--audio", "--checkpoint", plain, "--out",
                 str(tmp_path)]) == 2
    assert "never learned to write audio tokens" in capsys.readouterr().err
    assert main(["generate", "--engine", "vae", "--audio", "--out", str(tmp_path)]) == 2
    assert "use it with --engine autoregressive" in capsys.readouterr().err



def test_a_resumed_run_keeps_the_steps_before_it_on_record_and_a_new_one_starts_afresh(tmp_path, monkeypatch):
    from engines.cli import _record_command

    record = tmp_path / "command.json"
    record.write_text(json.dumps({"argv": ["old"], "preceded_by": [{"command": "first", "minutes": 35.0}]}))
    monkeypatch.setattr(sys, "argv", ["engines", "train", "--resume"])
    _record_command(record, resume=True, best={"epoch": 3})
    kept = json.loads(record.read_text())
    assert kept["argv"] == ["engines", "train", "--resume"] and kept["best"] == {"epoch": 3}
    assert kept["preceded_by"] == [{"command": "first", "minutes": 35.0}]
    from engines.training.common import device_name

    assert kept["device"] == device_name()   # the machine that trains, for the card shipped elsewhere
    _record_command(record, resume=False, best=None)
    assert json.loads(record.read_text()) == {"argv": ["engines", "train", "--resume"], "best": None,
                                              "device": kept["device"]}
