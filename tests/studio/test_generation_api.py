"""The studio's named generation endpoints, called from a second program through gradio_client as the README
shows, against the served studio and its shipped checkpoints: tempo, metre, instrument and tonic reach the
MIDI, errors carry their reason, and the UI's own events are not part of the API."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import start_studio, stop_studio

pytestmark = pytest.mark.slow   # a served studio in a subprocess (pytest.ini: slow)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client

    folder = tmp_path_factory.mktemp("api-studio")
    proc, url = start_studio([f"sessions.database={folder}/private/db.sqlite", f"sessions.stimuli_dir={folder}/s"],
                             folder / "studio.log")
    yield Client(url, verbose=False, download_files=str(folder / "downloads"))
    stop_studio(proc)


def read_midi(path):
    from symusic import Score

    return Score(str(path))


def test_the_api_is_the_named_endpoints_with_named_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")
    named = api["named_endpoints"]
    for name in ("/generate_vae", "/generate_diffusion", "/generate_autoregressive"):
        parameters = [p["parameter_name"] for p in named[name]["parameters"]]
        assert {"mode", "n", "seed", "tempo", "metre", "scale", "tonic", "instrument"} <= set(parameters)
    assert "prompt" in [p["parameter_name"] for p in named["/generate_autoregressive"]["parameters"]]
    assert not api["unnamed_endpoints"]
    assert not {"/run", "/lambda", "/show_engine", "/analyze_upload"} & set(named)


def test_tempo_metre_and_instrument_reach_the_midi(client):
    results = client.predict(mode="BLUE", n=2, seed=3, tempo=90, metre="3/4", instrument=41, candidates=4,
                             api_name="/generate_vae")
    assert len(results) == 2
    for k, result in enumerate(results, 1):
        assert Path(result["midi"]).name == f"BLUE-vae-seed3-{k}.mid"
        score = read_midi(result["midi"])
        assert round(score.tempos[0].qpm) == 90
        assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
        assert score.tracks[0].program == 40   # General MIDI 41, violin, written 0-based
        assert result["analysis"]["mode"] in ("BLACK", "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "INDIGO", "VIOLET")
        assert Path(result["audio"]).suffix == ".wav"


def test_the_diffusion_engine_writes_the_metre_asked_for(client):
    (result,) = client.predict(mode="RED", n=1, seed=1, metre="6/8", candidates=1, settings={"steps": 5},
                               api_name="/generate_diffusion")
    signature = read_midi(result["midi"]).time_signatures[0]
    assert (signature.numerator, signature.denominator) == (6, 8)


def test_tonic_moves_the_gpts_notes(client):
    def pitches(tonic):
        (result,) = client.predict(prompt="a calm, intimate BLUE phrase", n=1, seed=4, tonic=tonic, candidates=1,
                                   api_name="/generate_autoregressive")
        return [n.pitch for n in read_midi(result["midi"]).tracks[0].notes]

    in_c, in_g = pitches("C"), pitches("G")
    assert in_c and len(in_c) == len(in_g)
    shifts = {(g - c) % 12 for c, g in zip(in_c, in_g)}
    assert shifts == {7}


@pytest.mark.parametrize("endpoint, arguments, message", [
    ("/generate_vae", {"metre": "7/8"}, "unknown metre '7/8'"),
    ("/generate_vae", {"n": 20}, "n must lie in 1..8, got 20"),
    ("/generate_diffusion", {"instrument": 200}, "instrument must be a General MIDI program 1..128"),
    ("/generate_autoregressive", {"mode": "PURPLE"}, "unknown mode 'PURPLE'"),
    ("/generate_vae", {"tempo": 5}, "tempo must lie in 30..300 BPM, got 5"),
])
def test_a_wrong_value_reaches_the_client_with_its_reason(client, endpoint, arguments, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        client.predict(api_name=endpoint, **arguments)


def test_the_load_test_drives_the_api_and_reads_the_servers_memory(client):
    """`python -m engines loadtest`'s smoke run: a few clients for a few seconds, every answer received."""
    from engines.loadtest import LoadTest

    report = LoadTest(client.src, clients=3, seconds=2, grace=180, settle=0.5).run()
    assert report["errors"] == 0, report["error_messages"]
    assert report["requests"] >= 3 and report["answered"] == report["requests"]   # every response received
    assert set(report["per_engine"]) == {"vae", "diffusion", "autoregressive"}     # one client per engine
    assert all(row["requests"] >= 1 for row in report["per_engine"].values())
    assert report["latency_s"]["p50"] <= report["latency_s"]["p95"] <= report["latency_s"]["max"]
    memory = report["rss_mb"]
    assert 100 < memory["before"] <= memory["peak"] and memory["after"] > 100   # the studio's own process


def test_the_load_test_sends_nothing_beyond_this_machine():
    import socket

    from engines.errors import StudioError
    from engines.loadtest import LoadTest, check_loopback, parse_mix, percentiles

    assert check_loopback("http://127.0.0.1:7860") == 7860 and check_loopback("http://localhost:81/") == 81
    for url in ("http://10.1.2.3:7860", "http://192.168.0.7/", "ftp://127.0.0.1/"):
        with pytest.raises(StudioError, match="loopback|http address"):
            check_loopback(url)
    assert parse_mix("vae=2, diffusion") == {"vae": 2, "diffusion": 1}
    for bad, reason in (("vea=1", "unknown engine 'vea'"), ("vae=x", "whole number"), ("vae=0", "positive")):
        with pytest.raises(StudioError, match=reason):
            parse_mix(bad)
    assert percentiles([4.0, 1.0, 3.0, 2.0]) == {"p50": 2.5, "p95": 4.0, "max": 4.0}
    assert percentiles([]) == {"p50": None, "p95": None, "max": None}
    with socket.socket() as closed:   # a free port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(StudioError, match=f"cannot reach a studio at http://127.0.0.1:{port}"):
        LoadTest(f"http://127.0.0.1:{port}", clients=1, seconds=1).run()


def test_the_load_test_finds_the_process_that_serves_a_port():
    import os
    import socket

    from engines.loadtest import listening_pid, rss_mb

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert listening_pid(server.getsockname()[1]) == os.getpid()
    assert rss_mb(os.getpid()) > 10 and rss_mb(None) is None
