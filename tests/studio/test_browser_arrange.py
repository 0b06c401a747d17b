"""A real-browser journey through the Arrange tab: build a 3-section plan on the timeline, write the piece,
regenerate the middle section, and download the piece and the plan."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.studio.browser import play_and_hear, set_slider

pytestmark = pytest.mark.browser


def _pick(page, box: str, option: str) -> None:
    page.locator(f"{box} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _upload(page, path) -> None:
    """Load a plan file as a musician does: click the box, pick the file."""
    with page.expect_file_chooser() as chooser:
        page.click("#arrange-upload .upload-container")
    chooser.value.set_files(str(path))


def _heads(page) -> list[str]:
    """Each visible card's heading, its lines joined by " | ", spaces (and no-break spaces) made single."""
    return [" | ".join(" ".join(line.split()) for line in page.inner_text(f"#arrange-card-{i}-head").split("\n"))
            for i in range(8) if page.locator(f"#arrange-card-{i}").is_visible()]


def test_build_a_plan_write_the_piece_regenerate_the_middle_and_download_it(page):
    import symusic

    page.get_by_role("tab", name="Arrange", exact=True).click()
    page.wait_for_selector("#arrange-card-2")
    assert _heads(page) == ["1 BLUE 4 bars · DIFFUSION", "2 RED 4 bars · DIFFUSION", "3 VIOLET 4 bars · DIFFUSION"]
    # a fourth card, then the timeline as the musician wants it: GREEN by the GPT in the middle, the last gone
    page.click("#arrange-add")
    page.wait_for_selector("#arrange-card-3", state="visible")
    page.click("#arrange-card-3-remove")
    page.wait_for_selector("#arrange-card-3", state="hidden")
    _pick(page, "#arrange-card-1-mode", "GREEN")
    _pick(page, "#arrange-card-1-engine", "GPT")
    page.wait_for_function("() => document.querySelector('#arrange-card-1-head').innerText.includes('GPT')")
    page.click("#arrange-card-0-right")                  # BLUE moves after GREEN, and back
    page.wait_for_function("() => document.querySelector('#arrange-card-0-head').innerText.includes('GREEN')")
    page.click("#arrange-card-1-left")
    page.wait_for_function("() => document.querySelector('#arrange-card-0-head').innerText.includes('BLUE')")
    assert _heads(page) == ["1 BLUE 4 bars · DIFFUSION", "2 GREEN 4 bars · GPT", "3 VIOLET 4 bars · DIFFUSION"]
    assert page.locator("#arrange-card-1-regenerate").is_disabled()      # nothing written yet
    page.locator("#arrange-tempo input").fill("100")
    set_slider(page, "arrange-candidates", 1)
    page.click("#arrange-run")
    page.wait_for_function("() => document.querySelector('#arrange-report')?.innerText.includes('heard as asked')")
    report = page.inner_text("#arrange-report")
    assert "12 bars in 3 sections" in report and "real music at a phrase boundary" in report
    assert page.locator("#arrange-report table").count() == 2     # sections, and joins beside real music's
    assert all(re.search(r"\| heard [A-Z]+ [✓✗] · \d+\.\d s$", head) for head in _heads(page)), _heads(page)
    page.wait_for_selector("#arrange-roll .js-plotly-plot .main-svg")
    legend = page.locator("#arrange-roll .legendtext").all_text_contents()
    assert set(legend) <= {"BLUE", "GREEN", "VIOLET"} and legend
    play_and_hear(page, "#arrange-audio")
    first_midi = page.locator("#arrange-files a[download='piece.mid']").get_attribute("href")

    # the middle section anew, and YELLOW this time: the report says it was regenerated, the files change
    _pick(page, "#arrange-card-1-mode", "YELLOW")
    page.wait_for_function("() => !document.querySelector('#arrange-card-1-head').innerText.includes('heard')")
    page.click("#arrange-card-1-regenerate")
    page.wait_for_function("() => document.querySelector('#arrange-report')?.innerText.includes('regenerated 1 time')")
    page.wait_for_function(f"() => document.querySelector(\"#arrange-files a[download='piece.mid']\")"
                           f"?.getAttribute('href') !== {json.dumps(first_midi)}")
    link = page.locator("#arrange-files a[download='piece.mid']")
    with page.expect_download() as download:
        link.click()
    score = symusic.Score.from_midi(Path(download.value.path()).read_bytes())
    markers = [m.text for m in score.markers]
    assert markers[:3] == ["1 BLUE diffusion", "2 YELLOW autoregressive", "3 VIOLET diffusion"]
    assert round(score.tempos[0].qpm) == 100
    page.click("#arrange-save")
    plan_link = page.locator("#arrange-files a[download='plan.json']")
    with page.expect_download() as download:
        plan_link.click()
    plan = json.loads(Path(download.value.path()).read_text())
    assert [(s["mode"], s["engine"], s["bars"]) for s in plan["sections"]] == [
        ("BLUE", "diffusion", 4), ("YELLOW", "autoregressive", 4), ("VIOLET", "diffusion", 4)]
    assert plan["tempo"] == 100


def test_a_plan_file_loads_onto_the_timeline_and_a_bad_one_is_named(page, tmp_path):
    page.get_by_role("tab", name="Arrange", exact=True).click()
    page.wait_for_selector("#arrange-card-2")
    plan = tmp_path / "dance.json"
    plan.write_text(json.dumps({"title": "Dance", "metre": "3/4", "key": "G major",
                                "sections": [{"bars": 8, "mode": "GREEN", "engine": "vae"},
                                             {"bars": 16, "mode": "INDIGO", "engine": "diffusion",
                                              "axes": {"energy": 0.2}}]}))
    _upload(page, plan)
    page.wait_for_function("() => document.querySelector('#arrange-card-1-head')?.innerText.includes('INDIGO')")
    page.wait_for_selector("#arrange-card-2", state="hidden")
    heads = _heads(page)
    assert heads == ["1 GREEN 8 bars · VAE", "2 INDIGO 16 bars · DIFFUSION | energy 0.2"]
    assert page.locator("#arrange-metre input").input_value() == "3/4"
    assert page.locator("#arrange-key input").input_value() == "G major"
    assert page.locator("#arrange-title input, #arrange-title textarea").first.input_value() == "Dance"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sections": [{"bars": 5, "mode": "RED", "engine": "vae"}]}))
    _upload(page, bad)
    page.wait_for_function("() => document.querySelector('#arrange-status')?.innerText.includes('bars must be one')")
    assert "section 1: bars must be one of 4, 8, 16, got 5" in page.inner_text("#arrange-status")
    assert _heads(page) == heads                                  # the timeline is as it was
