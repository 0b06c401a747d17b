"""Real-browser journeys through the Latent Explorer and the studio's controls: phone width, the dark theme,
tempo, metre and instrument reaching the files, the history, dragging on the map, playing a phrase in,
and the README's tour (`make screenshots` saves its pictures)."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.studio.browser import open_studio, set_slider

pytestmark = pytest.mark.browser
SCREENSHOTS = os.environ.get("STUDIO_SCREENSHOTS")   # a folder: the tour test saves the README's screenshots there


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
    context, page = open_studio(browser, studio_url, 390, 900)
    for name in ("Generate", "Latent Explorer", "Arrange", "Evaluate", "Listen"):   # none behind a "⋯" menu
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
    context, page = open_studio(browser, studio_url + "/?__theme=dark", 1400, 1200)
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
    set_slider(page, "generate-steps", 5)
    set_slider(page, "generate-candidates", 1)
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
    set_slider(page, "generate-count", 2)
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
    """The README's tour, step by step, through every tab: each step asserts what it shows (and saves it under
    `make screenshots`)."""
    context, page = open_studio(browser, studio_url, 1440, 1000, timeout=120_000)
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
    page.get_by_role("tab", name="Arrange", exact=True).click()
    page.locator("#arrange-example input").click()
    page.get_by_role("option", name="A GREEN dance in 3/4 that darkens to INDIGO", exact=True).click()
    page.wait_for_function("() => document.querySelector('#arrange-card-2-head')?.innerText.includes('INDIGO')")
    # the tiny engines write the raw model's piece (quick); the screenshots show the checked one
    set_slider(page, "arrange-candidates", 0 if SCREENSHOTS else 1)
    page.click("#arrange-run")
    page.wait_for_function("() => document.querySelector('#arrange-report')?.innerText.includes('heard as asked')")
    page.wait_for_selector("#arrange-roll .js-plotly-plot .main-svg")
    assert "20 bars in 3 sections" in page.inner_text("#arrange-report")
    page.locator("#arrange-timeline").evaluate("e => e.scrollIntoView()")   # the cards, the roll under them
    _shot(page, "tour-8-arrange")
    page.get_by_role("tab", name="Evaluate", exact=True).click()
    page.wait_for_function("() => document.querySelector('#corpus-summary')?.innerText.includes('segments')")
    _shot(page, "tour-6-evaluate")
    page.get_by_role("tab", name="Listen", exact=True).click()
    page.get_by_role("tab", name="Organise", exact=True).click()
    page.wait_for_selector("#organise-create", state="visible")
    _shot(page, "tour-7-listen")
    context.close()
    dark, page = open_studio(browser, studio_url + "/?__theme=dark", 1440, 900, timeout=120_000)
    _generate_vae(page, "RED")
    page.locator("#generated-grid").scroll_into_view_if_needed()
    _shot(page, "tour-5-dark")
    dark.close()
