"""Real-browser journeys: Playwright drives Debian's chromium against the studio served on 127.0.0.1."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from engines.api import MODE_COLORS
from tests.helpers import start_studio, stop_studio, write_test_midi

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]


SCREENSHOTS = os.environ.get("STUDIO_SCREENSHOTS")   # a folder: the tour test saves the README's screenshots there


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny VAE, diffusion model and GPT trained by the project's own trainers (seconds), so generation
    runs in the browser; or, with STUDIO_BROWSER_CHECKPOINTS=folder (`make screenshots`), those checkpoints."""
    if os.environ.get("STUDIO_BROWSER_CHECKPOINTS"):
        return Path(os.environ["STUDIO_BROWSER_CHECKPOINTS"]).resolve()
    from engines.config import load_config
    from engines.training.autoregressive_trainer import train_autoregressive
    from engines.training.diffusion_trainer import train_diffusion
    from engines.training.vae_trainer import train_vae

    folder = tmp_path_factory.mktemp("checkpoints")
    cfg = load_config(overrides=["model.vae.latent_dim=16", "model.vae.hidden_dim=32", "model.vae.batch_size=16",
                                 "model.vae.epochs=1"])
    train_vae(cfg, folder / "run", limit=64, workers=0)
    shutil.copyfile(folder / "run" / "best.pt", folder / "vae.pt")
    tiny = load_config(overrides=["model.diffusion.base_channels=16", "model.diffusion.channel_mults=[1,2]",
                                  "model.diffusion.embedding_dim=32", "model.diffusion.attention_heads=2",
                                  "model.diffusion.batch_size=16", "model.diffusion.epochs=1"])
    train_diffusion(tiny, folder / "diffusion-run", limit=48, workers=0)
    shutil.copyfile(folder / "diffusion-run" / "best.pt", folder / "diffusion.pt")
    gpt = load_config(overrides=["model.autoregressive.n_layer=1", "model.autoregressive.n_head=2",
                                 "model.autoregressive.n_embd=32", "model.autoregressive.epochs=1",
                                 "model.autoregressive.captions_per_segment=2"])
    train_autoregressive(gpt, folder / "gpt-run", limit=64, workers=0)
    shutil.copyfile(folder / "gpt-run" / "best.pt", folder / "autoregressive.pt")
    # a sampling calibration of our own for YELLOW (the finalize step measures one per mode): the Generate tab
    # shows it when YELLOW is chosen
    from engines.training.common import load_checkpoint, save_checkpoint

    payload = load_checkpoint(folder / "autoregressive.pt")
    payload["sampling_calibration"] = {"modes": {"YELLOW": {"temperature": 1.0, "prompt_guidance": 4.0}}}
    save_checkpoint(payload, folder / "autoregressive.pt")
    # the shipped judge ranks the candidates of every result (verified generation)
    shutil.copyfile(Path(load_config().model.checkpoints_dir) / "judge.pt", folder / "judge.pt")
    return folder


@pytest.fixture(scope="module")
def studio_url(checkpoints, tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt package chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    log = ROOT / "data" / "studio-test.log" if (ROOT / "data").is_dir() else None
    folder = tmp_path_factory.mktemp("studio")   # listening stimuli and (outside them) database, away from data/
    proc, url = start_studio([f"model.checkpoints_dir={checkpoints}", f"sessions.database={folder}/private/db.sqlite",
                              f"sessions.stimuli_dir={folder}/listening"], log)
    yield url
    stop_studio(proc)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open_studio(browser, url: str, width: int = 1400, height: int = 1400, timeout: int = 60_000):
    """A fresh browser context on the studio at this viewport (`url` may carry a query, e.g. the dark theme),
    once the Generate button is there: (context, page)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#generate-button")
    return context, page


@pytest.fixture
def page(browser, studio_url):
    context, page = _open_studio(browser, studio_url)
    yield page
    context.close()


def _play_and_hear(page, player: str, tries: int = 4) -> None:
    """Press Play on an audio player and wait for its clock (the first time it shows, after any label; the
    second is the duration) to move past 0:00. Pressed again when it does not: a click that lands while the
    file is still loading is lost on a busy machine, and the run's completion may reload the player under it.
    (The check once matched the duration too, so a player shorter than 10 s passed without playing.)"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    clock_moved = (f"() => {{ const clock = document.querySelector('{player}').innerText.match(/\\d+:\\d\\d/); "
                   f"return clock !== null && clock[0] !== '0:00'; }}")
    for attempt in range(tries):
        pause = page.locator(player).get_by_role("button", name="Pause", exact=True)
        if pause.is_visible():   # it took the last press but its clock stands still: stop it, press again
            pause.click()
        play = page.locator(player).get_by_role("button", name="Play", exact=True)
        play.wait_for()
        play.click()
        try:
            page.wait_for_function(clock_moved, timeout=8_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


def _visible_text(page, container: str, text: str):
    return page.locator(container).get_by_text(text, exact=True).locator("visible=true").first


def test_generate_with_the_vae_and_hear_it(page):
    page.locator("#generate-mode").get_by_label("BLUE").check()
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generate-status')?.innerText.includes('segments;')")
    status = page.inner_text("#generate-status")
    assert "4 segments; the analyzer hears BLUE in" in status
    # the VAE's 32 candidates per result (more rounds when the judge hears too few as BLUE), ranked by the judge
    assert re.search(r"\d+ of (128|256|384|512) candidates heard as BLUE by the judge; showing the best 4\.", status)
    assert re.search(r"Took \d+\.\d\d s\.$", status.strip())   # request to results, as the musician waited
    readout = page.locator("#generated-readout-0")
    readout.wait_for()
    assert "VAE · BLUE · seed 0 · #1" in readout.inner_text()
    assert "Checked: ranked 1 of the candidates drawn (32 per result)" in readout.inner_text()
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")
    assert page.locator("#generated-readout-4").is_hidden()  # only the 4 asked-for variations show
    # playing a result moves a playhead along its roll, in step with the audio
    _play_and_hear(page, "#generated-audio-0")
    head = "document.querySelector('#generated-roll-0 .studio-playhead')"
    page.wait_for_function(f"() => {head} && parseFloat({head}.dataset.quarters) > 0.5")
    first = float(page.locator("#generated-roll-0 .studio-playhead").get_attribute("data-quarters"))
    page.wait_for_function(f"() => parseFloat({head}.dataset.quarters) > {first} + 0.5")
    plot_box = page.locator("#generated-roll-0 .nsewdrag").first.bounding_box()
    line = page.locator("#generated-roll-0 .studio-playhead").bounding_box()
    assert plot_box["x"] <= line["x"] <= plot_box["x"] + plot_box["width"]


def _choose_diffusion(page, mode: str):
    page.locator("#generate-engine").get_by_label("Diffusion (DDIM / DDPM, guided)").check()
    page.wait_for_selector("#generate-steps", state="visible")
    page.locator("#generate-mode").get_by_label(mode).check()


def _set_slider(page, elem_id: str, value: int):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _wait_for_results(page):
    page.wait_for_function("() => document.querySelector('#generate-status')?.innerText.includes('segments;')")


def test_generate_with_diffusion_watch_it_denoise_and_see_the_result(page):
    _choose_diffusion(page, "GREEN")
    page.click("#generate-button")
    page.wait_for_selector("#generate-live canvas[data-drawn]")  # the live view of the running sampler
    _wait_for_results(page)
    assert "4 segments; the analyzer hears GREEN in" in page.inner_text("#generate-status")
    assert "DIFFUSION · GREEN · seed 0 · #1" in page.inner_text("#generated-readout-0")
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")
    assert page.locator("#generate-live canvas").is_visible()  # the final estimate stays in view
    # drawn in the page from the levels sent: what sounds in GREEN's colour (its level the opacity), tiles framed
    green = [int(MODE_COLORS["GREEN"][i:i + 2], 16) for i in (1, 3, 5)]
    drawn = page.evaluate("""(rgb) => { const c = document.querySelector('#generate-live canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let sounding = 0;
        for (let i = 0; i < d.length; i += 4)
            if (d[i + 3] > 0 && Math.abs(d[i] - rgb[0]) + Math.abs(d[i + 1] - rgb[1]) + Math.abs(d[i + 2] - rgb[2]) < 6)
                sounding++;
        return {sounding, corner: Array.from(d.slice(0, 4))}; }""", green)
    assert drawn["sounding"] > 20 and drawn["corner"] == [128, 128, 128, 90], drawn


def test_stop_ends_denoising_early_and_keeps_the_estimate(page):
    _choose_diffusion(page, "RED")
    _set_slider(page, "generate-steps", 1000)
    page.click("#generate-button")
    page.wait_for_selector("#generate-live canvas[data-drawn]")
    page.click("#generate-stop")
    _wait_for_results(page)
    assert "Stopped at step" in page.inner_text("#generate-status")
    assert "DIFFUSION · RED" in page.inner_text("#generated-readout-0")


def test_inpaint_a_result_keeping_two_bars(page):
    _choose_diffusion(page, "BLUE")
    page.click("#generate-button")
    _wait_for_results(page)
    page.get_by_text("Inpainting: keep bars, regenerate the rest").click()
    page.locator("#inpaint-on").get_by_label("Inpaint").check()
    page.locator("#generate-mode").get_by_label("RED").check()
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generated-readout-0')?.innerText.includes('inpainted')")
    assert "DIFFUSION · RED · inpainted · #1" in page.inner_text("#generated-readout-0")
    assert "segments; the analyzer hears RED in" in page.inner_text("#generate-status")


def test_type_a_prompt_generate_with_the_gpt_and_hear_it(page):
    from playwright.sync_api import expect

    page.locator("#generate-engine").get_by_label("Autoregressive (GPT, text prompts)").check()
    page.wait_for_selector("#generate-prompt", state="visible")
    guidance = "#generate-prompt-guidance input[type=number]"
    assert page.input_value(guidance) == "3"   # RED: not calibrated, the former default
    page.locator("#generate-mode").get_by_label("YELLOW").check()  # fills in the mode's prompt
    page.wait_for_function("() => document.querySelector('#generate-prompt textarea')?.value.includes('YELLOW')")
    # ... and the sampling the checkpoint calibrated for YELLOW
    page.wait_for_function(f"() => document.querySelector('{guidance}')?.value === '4'")
    assert page.input_value("#generate-autoregressive-temperature input[type=number]") == "1"
    page.fill("#generate-prompt textarea", "")
    # typing a mode moves the picker to it (typed: Playwright's fill sends no input event Gradio listens to)
    page.locator("#generate-prompt textarea").press_sequentially("a slow BLUE phrase")
    expect(page.locator("#generate-mode").get_by_label("BLUE")).to_be_checked(timeout=30000)
    assert page.input_value("#generate-prompt textarea") == "a slow BLUE phrase"   # and the prompt stays as typed
    page.fill("#generate-prompt textarea", "")
    page.locator("#generate-prompt textarea").press_sequentially("a calm, intimate YELLOW phrase with low "
                                                                 "temporal complexity")
    expect(page.locator("#generate-mode").get_by_label("YELLOW")).to_be_checked(timeout=30000)
    _set_slider(page, "generate-count", 2)
    page.click("#generate-button")
    _wait_for_results(page)
    assert "2 segments; the analyzer hears YELLOW in" in page.inner_text("#generate-status")
    assert "AUTOREGRESSIVE · YELLOW · seed 0 · #1" in page.inner_text("#generated-readout-0")
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")
    assert page.locator("#generated-readout-2").is_hidden()
    _play_and_hear(page, "#generated-audio-0")  # the FluidSynth render plays


def test_browse_to_a_segment_and_play_it(page):
    page.get_by_role("tab", name="Corpus browser").click()
    page.locator("#filter-modes").get_by_label("BLUE").check()
    page.click("#browse-search")
    page.wait_for_function("() => document.querySelector('#browse-status')?.innerText.includes('segments match')")
    status = page.inner_text("#browse-status")
    assert int(status.split()[0].replace(",", "")) > 0
    # Every listed row is BLUE: click the mode cell of the first one.
    _visible_text(page, "#browse-table", "BLUE").click()
    page.wait_for_function("() => document.querySelector('#segment-readout')?.innerText.includes('BLUE')")
    readout = page.inner_text("#segment-readout")
    assert "Rebracketing" in readout and "Temporal complexity" in readout
    page.wait_for_selector("#segment-roll .js-plotly-plot .main-svg")  # plotly draws after the data arrives
    _play_and_hear(page, "#segment-audio")


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
    _set_slider(page, "evaluate-n", 2)
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
    _set_slider(page, "organise-per-mode", 2)
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


def test_latent_explorer_decodes_a_place_and_interpolates_two_points(page):
    page.get_by_role("tab", name="Latent Explorer").click()
    page.wait_for_selector("#latent-map .js-plotly-plot .main-svg")
    # A click decodes what lies there: a place (inverse UMAP) or, on a dot, that corpus segment.
    _click_map(page, 0.5, 0.5)
    page.wait_for_function("() => document.querySelector('#latent-readout')?.innerText.includes('analyzer hears')")
    assert page.inner_text("#latent-readout").startswith(("place (", "segment "))
    page.wait_for_selector("#latent-roll .js-plotly-plot .main-svg")
    # Pick A and B on the map, then interpolate between them.
    page.locator("#latent-role").get_by_label("set A").check()
    _click_map(page, 0.2, 0.3)
    page.wait_for_function("() => !document.querySelector('#latent-picked')?.innerText.includes('A: —')")
    page.locator("#latent-role").get_by_label("set B").check()
    _click_map(page, 0.8, 0.7)
    page.wait_for_function("() => !document.querySelector('#latent-picked')?.innerText.includes('B: —')")
    page.click("#latent-interpolate")
    page.wait_for_function("() => document.querySelector('#latent-status')?.innerText.includes('8 steps from')")
    assert page.inner_text("#latent-status").count("→") == 7
    page.wait_for_selector("#latent-strip .js-plotly-plot .main-svg")
    page.locator("#latent-strip-audio").get_by_role("button", name="Play", exact=True).wait_for()


def _set_musical(page, tempo: int, metre: str, instrument: str) -> None:
    """Tempo, metre and instrument in the Generate tab, as a musician types and picks them."""
    page.locator("#generate-tempo input").fill(str(tempo))
    for box, option in (("#generate-metre", metre), ("#generate-instrument", instrument)):
        page.locator(f"{box} input").click()
        page.get_by_role("option", name=option, exact=True).click()


def _generate_vae(page, mode: str = "BLUE") -> None:
    page.locator("#generate-mode").get_by_label(mode).check()
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generate-status')?.innerText.includes('segments;')")
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")


def test_at_phone_width_every_tab_is_in_reach_and_no_word_breaks(browser, studio_url):
    context, page = _open_studio(browser, studio_url, 390, 900)
    for name in ("Generate", "Latent Explorer", "Evaluate", "Listen"):   # none behind a "⋯" menu
        tab = page.get_by_role("tab", name=name, exact=True)
        assert tab.is_visible()
        box = tab.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    _generate_vae(page)
    page.locator("#generated-analysis-box-0").get_by_text("What the analyzer hears").click()
    page.locator("#generated-analysis-0 table").wait_for()
    lines = page.locator("#generated-analysis-0").evaluate("""e => [...e.querySelectorAll('th, td')].map(cell => {
        const range = document.createRange(); range.selectNodeContents(cell);
        return [cell.innerText, new Set([...range.getClientRects()].map(r => Math.round(r.top))).size];
    })""")
    assert lines and all(count <= 1 for _, count in lines), [cell for cell in lines if cell[1] > 1]
    assert page.get_by_role("tab", name="Listen", exact=True).is_visible()
    page.get_by_role("tab", name="Listen", exact=True).click()
    page.wait_for_selector("#listen-join")
    context.close()


def test_in_the_dark_theme_rolls_are_not_white(browser, studio_url):
    context, page = _open_studio(browser, studio_url + "/?__theme=dark", 1400, 1200)
    assert "dark" in page.evaluate("() => document.body.className")
    _generate_vae(page)
    paper, plot, plot_opacity = page.locator("#generated-roll-0").evaluate(
        """e => [e.querySelector('.main-svg').style.background, getComputedStyle(e.querySelector('.bglayer .bg')).fill,
                 getComputedStyle(e.querySelector('.bglayer .bg')).fillOpacity]""")
    # transparent or nearly so: the page's dark background shows through (it was white)
    assert paper == "rgba(0, 0, 0, 0)", paper
    alpha = re.fullmatch(r"rgba?\(\d+, \d+, \d+(?:, ([\d.]+))?\)", plot).group(1)
    assert float(alpha if alpha is not None else 1) * float(plot_opacity) <= 0.1, (plot, plot_opacity)
    tick = page.locator("#generated-roll-0 .xtick text").first.evaluate("e => getComputedStyle(e).fill")
    assert tick == "rgb(209, 213, 219)"   # light text on the dark page
    context.close()


def test_tempo_metre_and_instrument_from_the_studio_reach_the_download_and_starred_results_zip(page):
    import io
    import json
    import zipfile

    import symusic

    _set_musical(page, 90, "3/4", "41 · Violin")
    _generate_vae(page, "RED")
    link = page.locator("#generated-files-0 a[download$='.mid']").first
    link.wait_for()
    assert link.get_attribute("download") == "RED-vae-seed0-1.mid"
    with page.expect_download() as download:
        link.click()
    score = symusic.Score.from_midi(Path(download.value.path()).read_bytes())
    assert round(score.tempos[0].qpm) == 90 and score.tracks[0].program == 40
    assert (score.time_signatures[0].numerator, score.time_signatures[0].denominator) == (3, 4)
    # four results show side by side in a grid of cards, not stacked one under another
    first, second = (page.locator(f"#generated-card-{i}").bounding_box() for i in (0, 1))
    assert abs(first["y"] - second["y"]) < 5 and second["x"] > first["x"] + first["width"] - 5
    # star the first and third, and download them as one ZIP with the settings that made them
    for i in (0, 2):
        page.locator(f"#generated-star-{i} input").check()
    page.wait_for_function("() => document.querySelector('#generate-starred-line')?.innerText.includes('2 starred')")
    page.click("#generate-zip")
    archive_link = page.locator("#generate-zip-file a[download$='.zip']").first
    archive_link.wait_for()
    assert archive_link.get_attribute("download") == "starred-results.zip"
    with page.expect_download() as download:
        archive_link.click()
    archive = zipfile.ZipFile(io.BytesIO(Path(download.value.path()).read_bytes()))
    names = sorted(archive.namelist())
    assert names == ["RED-vae-seed0-1.mid", "RED-vae-seed0-1.wav", "RED-vae-seed0-3.mid", "RED-vae-seed0-3.wav",
                     "settings.json"]
    settings = json.loads(archive.read("settings.json"))
    assert [s["midi"] for s in settings] == ["RED-vae-seed0-1.mid", "RED-vae-seed0-3.mid"]
    assert all(s["engine"] == "vae" and s["seed"] == 0 and s["tempo"] == 90 and s["metre"] == "3/4"
               and s["instrument"] == 41 for s in settings)


def test_the_history_survives_a_reload_and_gives_back_settings_and_a_start(page):
    page.locator("#generate-tempo input").fill("96")
    _generate_vae(page, "GREEN")
    page.reload(wait_until="load")   # kept in this browser, not in the page
    page.wait_for_selector("#generate-button")
    page.locator("#generate-history-box").get_by_text("History: your last").click()
    page.wait_for_function("() => document.querySelector('#generate-history')?.innerText.includes('VAE · GREEN')")
    history = page.inner_text("#generate-history")
    assert "96 BPM" in history and "VAE · GREEN · seed 0 · #1" in history
    page.locator("#generate-tempo input").fill("120")
    page.locator("#generate-mode").get_by_label("RED").check()
    page.click("#generate-history-again")
    page.wait_for_function("() => document.querySelector('#generate-history-note')?.innerText.includes('filled in')")
    assert page.locator("#generate-tempo input").input_value() == "96"
    assert page.locator("#generate-mode").get_by_label("GREEN").is_checked()
    page.click("#generate-history-start")
    page.wait_for_function("() => document.querySelector('#generate-history-note')?.innerText.includes('start from')")
    assert page.locator("#generate-engine").get_by_label("Diffusion (DDIM / DDPM, guided)").is_checked()
    assert page.locator("#inpaint-on input").is_checked()
    page.wait_for_selector("#generate-steps", state="visible")
    _set_slider(page, "generate-steps", 5)
    _set_slider(page, "generate-candidates", 1)
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generated-readout-0')?.innerText.includes('inpainted')",
                           timeout=120_000)
    assert "DIFFUSION · GREEN · inpainted · #1" in page.inner_text("#generated-readout-0")


def test_drag_on_the_latent_map_decodes_where_it_ends_and_sliders_act_live(page):
    page.get_by_role("tab", name="Latent Explorer").click()
    page.wait_for_selector("#latent-map .js-plotly-plot .main-svg")
    layer = page.locator("#latent-map .js-plotly-plot .nsewdrag").first
    box = layer.bounding_box()
    before = page.locator("#latent-map .js-plotly-plot").evaluate("p => [...p._fullLayout.xaxis.range]")
    start = (box["x"] + 0.3 * box["width"], box["y"] + 0.3 * box["height"])
    end = (box["x"] + 0.7 * box["width"], box["y"] + 0.6 * box["height"])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    assert page.locator("#latent-drag-marker").is_visible()        # the marker follows the pointer
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('#latent-readout')?.innerText.includes('analyzer hears')")
    place = re.search(r"place \((-?[\d.]+), (-?[\d.]+)\)", page.inner_text("#latent-readout"))
    x, y = (float(v) for v in place.groups())
    expected = page.locator("#latent-map .js-plotly-plot").evaluate(
        f"""p => [p._fullLayout.xaxis.p2d({end[0] - box['x']}), p._fullLayout.yaxis.p2d({end[1] - box['y']})]""")
    assert abs(x - expected[0]) < 0.05 and abs(y - expected[1]) < 0.05   # decoded where the drag ended
    after = page.locator("#latent-map .js-plotly-plot").evaluate("p => [...p._fullLayout.xaxis.range]")
    assert after == before                                            # a drag does not pan the map
    page.locator("#latent-audio").get_by_role("button", name="Pause", exact=True).wait_for()   # it plays at once
    # a slider beside the map acts on release: the latent is shifted, decoded, and the marker moves
    marker = "() => { const p = document.querySelector('#latent-map .js-plotly-plot'); " \
             "const t = p.data.find(t => t.name === 'here'); return t ? [t.x[0], t.y[0]] : null; }"
    page.wait_for_function(f"() => ({marker})() !== null")
    placed = page.evaluate(f"({marker})()")
    track = page.locator("#latent-shift-energy input[type=range]").bounding_box()
    page.mouse.click(track["x"] + 0.95 * track["width"], track["y"] + track["height"] / 2)
    page.wait_for_function("() => document.querySelector('#latent-readout')?.innerText.includes('energy +')")
    page.wait_for_function(f"() => {{ const m = ({marker})(); "
                           f"return m && Math.abs(m[0] - {placed[0]!r}) + Math.abs(m[1] - {placed[1]!r}) > 1e-6; }}")


def test_play_a_phrase_on_the_keyboard_analyse_it_and_let_the_gpt_continue_it(page):
    page.locator("#generate-engine").get_by_label("Autoregressive (GPT, text prompts)").check()
    page.get_by_text("Continue a segment: keep its first bars, write on").click()
    page.locator("#inpaint-on").get_by_label("Continue").check()
    page.get_by_label("the phrase you play in").check()
    page.get_by_text("Play a phrase in: keyboard and step grid").click()
    melody = ["C4", "E4", "G4", "C5", "B4", "G4", "A4", "F4", "E4", "G4", "D5", "B4", "C5", "G4", "E4", "C4"]
    for name in melody:   # sixteen eighths: two bars
        page.locator(f"#phrase-pad [title='{name}']").click()
    assert page.locator("#phrase-pad .phrase-note").count() == 16
    assert "Step 33 of 64 (bar 3)" in page.inner_text("#phrase-status")
    page.locator("#phrase-pad [data-phrase-action='undo']").click()      # take the last note back, play it again
    assert "Step 31 of 64" in page.inner_text("#phrase-status")
    page.locator("#phrase-pad [title='C4']").click()
    page.click("#phrase-analyse")
    page.wait_for_function("() => document.querySelector('#phrase-readout')?.innerText.includes('analyzer hears')")
    assert "Energy" in page.inner_text("#phrase-readout")
    _set_slider(page, "generate-count", 2)
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generated-readout-0')?.innerText.includes('continued')")
    assert "AUTOREGRESSIVE" in page.inner_text("#generated-readout-0")
    assert "segments; the analyzer hears" in page.inner_text("#generate-status")


def _shot(target, name: str) -> None:
    """Save a screenshot for the README's tour when STUDIO_SCREENSHOTS names a folder (`make screenshots`)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        target.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"))


def test_tour_of_the_new_controls(browser, studio_url):
    """The README's tour, step by step: each step asserts what it shows (and saves it under `make screenshots`)."""
    context, page = _open_studio(browser, studio_url, 1440, 1000, timeout=120_000)
    _set_musical(page, 92, "3/4", "41 · Violin")
    _generate_vae(page, "BLUE")
    page.locator("#generated-star-0 input").check()
    page.wait_for_function("() => document.querySelector('#generate-starred-line')?.innerText.includes('1 starred')")
    page.evaluate("() => window.scrollTo(0, 0)")
    _shot(page, "tour-1-generate")
    assert page.locator("#generate-musical").is_visible() and page.locator("#generated-card-3").is_visible()
    page.locator("#generate-history-box").get_by_text("History: your last").click()
    page.wait_for_function("() => document.querySelector('#generate-history')?.innerText.includes('VAE · BLUE')")
    _shot(page.locator("#generate-history-box"), "tour-2-history")
    page.locator("#generate-engine").get_by_label("Diffusion (DDIM / DDPM, guided)").check()
    page.get_by_text("Inpainting: keep bars, regenerate the rest").click()
    page.get_by_text("Play a phrase in: keyboard and step grid").click()
    for name in ("C4", "E4", "G4", "C5", "B4", "G4", "D5", "C5"):
        page.locator(f"#phrase-pad [title='{name}']").click()
    assert page.locator("#phrase-pad .phrase-note").count() == 8
    _shot(page.locator("#generate-init"), "tour-3-play-it-in")
    page.get_by_role("tab", name="Latent Explorer", exact=True).click()
    page.wait_for_selector("#latent-map .js-plotly-plot .main-svg")
    _click_map(page, 0.5, 0.5)
    page.wait_for_function("() => document.querySelector('#latent-readout')?.innerText.includes('analyzer hears')")
    _shot(page, "tour-4-latent-explorer")
    context.close()
    dark, page = _open_studio(browser, studio_url + "/?__theme=dark", 1440, 900, timeout=120_000)
    _generate_vae(page, "RED")
    page.locator("#generated-grid").scroll_into_view_if_needed()
    _shot(page, "tour-5-dark")
    dark.close()
