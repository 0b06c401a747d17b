"""What the browser tests share: where Debian's chromium is, opening the studio at a viewport, playing a
player until its clock moves, and the visible text of a container."""
from __future__ import annotations

import shutil

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update",
                 "--autoplay-policy=no-user-gesture-required"]


def open_studio(browser, url: str, width: int = 1400, height: int = 1400, timeout: int = 60_000):
    """A fresh browser context on the studio at this viewport (`url` may carry a query, e.g. the dark theme),
    once the Generate button is there: (context, page)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(timeout)
    page.goto(url, wait_until="load")
    page.wait_for_selector("#generate-button")
    return context, page


def play_and_hear(page, player: str, tries: int = 4) -> None:
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


def visible_text(page, container: str, text: str):
    return page.locator(container).get_by_text(text, exact=True).locator("visible=true").first


def set_slider(page, elem_id: str, value: int):
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
