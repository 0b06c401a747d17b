"""Real-browser journeys through the Generate tab: each engine generates, is heard and seen (the live view,
Stop, inpainting, a prompt for the GPT), and a corpus segment is browsed and played."""
from __future__ import annotations

import re

import pytest

from engines.api import MODE_COLORS
from tests.studio.browser import play_and_hear, set_slider, visible_text

pytestmark = pytest.mark.browser


def test_generate_with_the_vae_and_hear_it(page):
    page.locator("#generate-mode").get_by_label("BLUE").check()
    page.click("#generate-button")
    page.wait_for_function("() => document.querySelector('#generate-status')?.innerText.includes('segments;')")
    status = page.inner_text("#generate-status")
    assert "4 segments; the analyzer hears BLUE in" in status
    # the VAE's 16 candidates per result (more rounds when the judge hears too few as BLUE), ranked by the judge
    assert re.search(r"\d+ of (64|128|192|256) candidates heard as BLUE by the judge; showing the best 4\.", status)
    assert re.search(r"Took \d+\.\d\d s\.$", status.strip())   # request to results, as the musician waited
    readout = page.locator("#generated-readout-0")
    readout.wait_for()
    assert "VAE · BLUE · seed 0 · #1" in readout.inner_text()
    assert "Checked: ranked 1 of the candidates drawn (16 per result)" in readout.inner_text()
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")
    assert page.locator("#generated-readout-4").is_hidden()  # only the 4 asked-for variations show
    # playing a result moves a playhead along its roll, in step with the audio
    play_and_hear(page, "#generated-audio-0")
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
    set_slider(page, "generate-steps", 1000)
    page.click("#generate-button")
    page.wait_for_selector("#generate-live canvas[data-drawn]")
    page.click("#generate-stop")
    _wait_for_results(page)
    assert "Stopped at step" in page.inner_text("#generate-status")
    assert "DIFFUSION · RED" in page.inner_text("#generated-readout-0")


def test_inpaint_a_result_keeping_two_bars(page):
    _choose_diffusion(page, "BLUE")
    set_slider(page, "generate-steps", 10)
    set_slider(page, "generate-candidates", 2)   # checked, but of 2 (inpainting runs alone, unbatched)
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
    set_slider(page, "generate-count", 2)
    page.click("#generate-button")
    _wait_for_results(page)
    assert "2 segments; the analyzer hears YELLOW in" in page.inner_text("#generate-status")
    assert "AUTOREGRESSIVE · YELLOW · seed 0 · #1" in page.inner_text("#generated-readout-0")
    page.wait_for_selector("#generated-roll-0 .js-plotly-plot .main-svg")
    assert page.locator("#generated-readout-2").is_hidden()
    play_and_hear(page, "#generated-audio-0")  # the FluidSynth render plays


def test_browse_to_a_segment_and_play_it(page):
    page.get_by_role("tab", name="Corpus browser").click()
    page.locator("#filter-modes").get_by_label("BLUE").check()
    page.click("#browse-search")
    page.wait_for_function("() => document.querySelector('#browse-status')?.innerText.includes('segments match')")
    status = page.inner_text("#browse-status")
    assert int(status.split()[0].replace(",", "")) > 0
    # Every listed row is BLUE: click the mode cell of the first one.
    visible_text(page, "#browse-table", "BLUE").click()
    page.wait_for_function("() => document.querySelector('#segment-readout')?.innerText.includes('BLUE')")
    readout = page.inner_text("#segment-readout")
    assert "Rebracketing" in readout and "Temporal complexity" in readout
    page.wait_for_selector("#segment-roll .js-plotly-plot .main-svg")  # plotly draws after the data arrives
    play_and_hear(page, "#segment-audio")
