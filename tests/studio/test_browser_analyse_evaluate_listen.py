"""Real-browser journeys through Analyse, Evaluate and Listen: uploads and their analysis or reason, the
corpus baseline, two engines side by side, and a listening session organised, rated and read."""
from __future__ import annotations

import re

import pytest

from tests.helpers import write_test_midi
from tests.studio.browser import set_slider

pytestmark = pytest.mark.browser


def test_upload_midi_shows_its_analysis(page, tmp_path):
    path = write_test_midi(tmp_path / "two_phrases.mid", bars=8)
    page.get_by_role("tab", name="Your MIDI").click()
    page.set_input_files("#upload-midi input[type=file]", str(path))
    page.wait_for_function("() => document.querySelector('#upload-table')?.innerText.includes('5-8')")
    table = page.inner_text("#upload-table")
    assert "1-4" in table and "5-8" in table
    assert any(mode in table for mode in ("BLACK", "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "INDIGO", "VIOLET"))
    page.wait_for_selector("#upload-roll .js-plotly-plot .main-svg")
    page.wait_for_function("() => document.querySelector('#upload-error')?.innerText.trim() === ''")
    assert "all 2 tracks merged" in page.inner_text("#upload-roll")
    page.locator("#upload-track input").click()                      # a file of two tracks: analyse the bass
    page.get_by_role("option", name=re.compile("track 2: bass")).click()
    page.wait_for_function("() => document.querySelector('#upload-roll')?.innerText.includes('track 2: bass')")


def test_upload_garbage_shows_the_reason_and_the_studio_goes_on(page, tmp_path):
    garbage = tmp_path / "not_music.mid"
    garbage.write_bytes(b"this is a text file pretending to be MIDI\n" * 10)
    page.get_by_role("tab", name="Your MIDI").click()
    page.set_input_files("#upload-midi input[type=file]", str(garbage))
    page.wait_for_function("() => document.querySelector('#upload-error')?.innerText.includes('not a MIDI file')")
    assert "not_music.mid" in page.inner_text("#upload-error")
    # The same session still works: a good file replaces the error with an analysis.
    page.locator("#upload-midi").get_by_role("button", name="Clear").click()
    page.set_input_files("#upload-midi input[type=file]", str(write_test_midi(tmp_path / "ok.mid", bars=4)))
    page.wait_for_function("() => document.querySelector('#upload-table')?.innerText.includes('1-4')")
    # the error gives way to nothing (read once the handler's progress overlay has gone)
    page.wait_for_function("() => document.querySelector('#upload-error')?.innerText.trim() === ''")


def test_evaluate_tab_shows_the_corpus_baseline(page):
    page.get_by_role("tab", name="Evaluate").click()
    page.wait_for_function("() => document.querySelector('#corpus-summary')?.innerText.includes('segments')")
    assert "pieces" in page.inner_text("#corpus-summary")


def test_evaluate_tab_runs_two_engines_side_by_side_and_shows_each_report(page):
    page.get_by_role("tab", name="Evaluate", exact=True).click()
    page.locator("#evaluate-engine input").fill("real")   # beside the preselected VAE
    page.locator("#evaluate-engine input").press("Enter")
    set_slider(page, "evaluate-n", 2)
    page.locator("#evaluate-settings textarea").fill('{"candidates": 2}')   # verified results, of 2 candidates
    page.click("#evaluate-run")
    page.wait_for_function("() => document.querySelector('#evaluate-summary')?.innerText.includes('REAL:')"
                           " || document.querySelector('#evaluate-status .studio-error')", timeout=300_000)
    assert not page.locator("#evaluate-status .studio-error").count(), page.inner_text("#evaluate-status")
    summary = page.inner_text("#evaluate-summary")
    assert "REAL: 16 segments" in summary and "real-vs-real baseline" in summary
    comparison = page.inner_text("#evaluate-comparison")
    assert "vae" in comparison and "real" in comparison and "Fréchet distance" in comparison
    page.wait_for_selector("#evaluate-confusion .js-plotly-plot")
    page.wait_for_selector("#evaluate-histogram .js-plotly-plot")
    assert page.locator("#evaluate-histogram .legendtext").count() == 3   # real, vae, real as an engine
    assert "BLACK" in page.inner_text("#evaluate-modes")
    page.wait_for_function("() => document.querySelectorAll('#evaluate-files a').length >= 4")  # JSON + CSV each
    # each example's caption is shown whole, wrapped above its player (an audio label cut it off)
    caption = page.locator("#evaluate-example-label-0")
    assert re.fullmatch(r"best #1: asked [A-Z]+, heard [A-Z]+ \(score -?\d+\.\d\d\)", caption.inner_text().strip())
    assert caption.evaluate("e => e.scrollWidth <= e.clientWidth + 1")
    page.locator("#evaluate-detail input").click()
    page.get_by_role("option", name="vae", exact=True).click()
    page.wait_for_function("() => document.querySelector('#evaluate-summary')?.innerText.includes('VAE:')")


def test_organise_a_listening_session_rate_every_pair_and_read_the_results(page):
    import re

    page.get_by_role("tab", name="Listen", exact=True).click()
    page.get_by_role("tab", name="Organise", exact=True).click()
    page.locator("#organise-modes").get_by_label("RED").uncheck()  # BLUE only: VAE against diffusion
    set_slider(page, "organise-per-mode", 2)
    page.click("#organise-create")
    page.wait_for_function("() => document.querySelector('#organise-created')?.innerText.includes('is open')",
                           timeout=240_000)
    created = page.inner_text("#organise-created")
    code, pairs = re.search(r"Session (\w+) is open: (\d+) pairs", created).groups()
    key = re.search(r"Organiser key: (\S+)", created).group(1)
    (link,) = re.findall(r"http\S+", created)
    assert link.endswith(f"/?session={code}") and int(pairs) >= 1
    # the link opens the Listen tab's Rate page with the code filled in (it answered 405 before)
    assert page.goto(link, wait_until="load").status == 200
    page.wait_for_function(f"() => document.querySelector('#listen-code textarea')?.value === '{code}'")
    assert page.locator("#listen-join").is_visible()
    page.fill("#listen-name textarea", "Ada")
    page.click("#listen-join")
    for i in range(int(pairs)):
        page.wait_for_function(f"() => document.querySelector('#listen-progress')?.innerText.includes('Pair {i + 1} of')")
        assert "Which one sounds more like its mode?" in page.inner_text("#listen-question")
        page.wait_for_selector("#listen-a audio, #listen-a button[aria-label*='Play' i]", state="attached")
        page.click(["#vote-a", "#vote-b", "#vote-tie"][i % 3])
    page.wait_for_function("() => document.querySelector('#listen-progress')?.innerText.includes('pairs answered')")
    page.get_by_role("tab", name="Results", exact=True).click()
    assert page.input_value("#results-code textarea") == code
    page.click("#results-show")                                   # without the key: refused
    page.wait_for_function("() => document.querySelector('#results-summary')?.innerText.includes('organiser key')")
    page.fill("#results-key input", key)
    page.click("#results-show")
    page.wait_for_function("() => document.querySelector('#results-summary')?.innerText.includes('votes from')")
    assert f"{pairs} votes from 1 raters" in page.inner_text("#results-summary")
    page.wait_for_selector("#results-bt .js-plotly-plot")
    assert "VAE" in page.inner_text("#results-pairs") and "DIFFUSION" in page.inner_text("#results-pairs")


def test_uploaded_midi_files_join_the_systems_table_and_a_bad_file_is_named(page, tmp_path):
    page.get_by_role("tab", name="Listen", exact=True).click()
    page.get_by_role("tab", name="Organise", exact=True).click()
    page.get_by_text("Upload MIDI files as a system").click()
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    page.set_input_files("#organise-upload input[type=file]",
                         [str(write_test_midi(tmp_path / "tune.mid", bars=4)), str(tmp_path / "bad.mid")])
    # listed once on the server (the name's stem and extension are separate spans: read the cell's label)
    page.wait_for_selector('#organise-upload td[aria-label="bad.mid"]', timeout=180_000)
    page.fill("#organise-upload-name textarea", "my tunes")
    page.click("#organise-upload-add")
    page.wait_for_function("() => document.querySelector('#organise-upload-message')?.innerText.includes('bad.mid')")
    assert "not a MIDI file" in page.inner_text("#organise-upload-message")
    page.locator("#organise-upload").get_by_role("button", name="Clear").click()
    page.set_input_files("#organise-upload input[type=file]", [str(tmp_path / "tune.mid")])
    page.wait_for_selector('#organise-upload td[aria-label="tune.mid"]', timeout=180_000)
    page.click("#organise-upload-add")
    page.wait_for_function("() => document.querySelector('#organise-systems')?.innerText.includes('my tunes')")
    assert "Added my tunes: 1 file(s)" in page.inner_text("#organise-upload-message")
    assert "uploads/my-tunes-" in page.inner_text("#organise-systems")


def test_a_session_link_fills_the_code_and_a_wrong_code_says_so(page, studio_url):
    page.goto(f"{studio_url}/?session=abc123&invite=tok3n", wait_until="load")   # the Rate page opens by itself
    page.wait_for_function("() => document.querySelector('#listen-code textarea')?.value === 'ABC123'")
    assert page.input_value("#listen-invite textarea") == "tok3n" and page.locator("#listen-join").is_visible()
    page.click("#listen-join")
    page.wait_for_function("() => document.querySelector('#listen-message')?.innerText.includes('no listening')")
    assert "no listening session with code 'ABC123'" in page.inner_text("#listen-message")


def _click_map(page, fx: float, fy: float) -> None:
    """Click the latent map at a fraction of its plotting area (where the transparent click layer lies)."""
    box = page.locator("#latent-map .js-plotly-plot .nsewdrag").first.bounding_box()
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
