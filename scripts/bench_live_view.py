"""What the studio's live view costs: the same requests timed in the engine (StudioEngine.generate, no live
view) and in the served studio, clicked in a real browser with the live view on, until the results show.

    .venv/bin/python scripts/bench_live_view.py [--repeats 3] > out/live-view.json

Requests: diffusion DDIM-50 x4 and the GPT x4, one candidate per result (the raw model: the comparison is of
the live view, not of checking), with the Generate tab's defaults (piano, mf) in the engine too. Before each
timed run the page is left SETTLE_SECONDS to finish drawing the last results. Each repeat uses its own seed,
the same in both places. Prints JSON with the medians: engine_seconds, studio_seconds (the studio's handler,
request to results with the live view on, as its status line reports "Took N s"), ratio (the median of each
seed's studio / engine; issue 20's bar: <= 1.2), and page_seconds (the click to the last card drawn in the
browser, which shares this machine's cores). Needs Chromium (make test installs it) and the shipped
checkpoints.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REQUESTS = {"diffusion": {"steps": 50}, "autoregressive": {}}
STUDIO_DEFAULTS = {"instrument": 1, "dynamics": "mf"}   # what the Generate tab asks when left as it opens
# Chromium shares this machine's two cores: it draws each request's cards, rolls and audio waveforms for a few
# seconds after they show. A musician's browser runs on their own machine, so each timed run waits for it.
SETTLE_SECONDS = 3.0


def engine_seconds(engine, name: str, seed: int) -> float:
    from engines.api import Request

    settings = dict(REQUESTS[name])
    if name == "autoregressive":
        from engines.data.captions import prompt_for
        settings["prompt"] = prompt_for("BLUE")
    started = time.perf_counter()
    engine.generate(Request(engine=name, mode="BLUE", n=4, seed=seed, candidates=1, settings=settings,
                            **STUDIO_DEFAULTS))
    return time.perf_counter() - started


def studio_seconds(page, name: str, seed: int) -> float:
    label = {"diffusion": "Diffusion (DDIM / DDPM, guided)", "autoregressive": "Autoregressive (GPT, text prompts)"}
    page.locator("#generate-engine").get_by_label(label[name]).check()
    page.locator("#generate-mode").get_by_label("BLUE").check()
    if name == "autoregressive":   # the mode fills in the prompt, which is what the GPT is asked: wait for it
        page.wait_for_function("() => document.querySelector('#generate-prompt textarea')?.value.includes('BLUE')")
    if name == "diffusion":
        page.wait_for_selector("#generate-steps", state="visible")
        set_number(page, "generate-steps", 50)
    set_number(page, "generate-count", 4)
    set_number(page, "generate-candidates", 1)
    page.locator("#generate-seed input").fill(str(seed))
    title = f"{name.upper()} · BLUE · seed {seed} · #4"   # the last card of this very request
    started = time.perf_counter()
    page.click("#generate-button")
    page.wait_for_function(f"() => document.querySelector('#generated-readout-3')?.innerText.includes('{title}')",
                           timeout=600_000)
    page.wait_for_selector("#generated-roll-3 .js-plotly-plot .main-svg")
    browser = time.perf_counter() - started
    handler = float(re.search(r"Took ([\d.]+) s", page.inner_text("#generate-status")).group(1))
    return handler, browser


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def main() -> None:
    from playwright.sync_api import sync_playwright

    from engines.api import Request, StudioEngine
    from engines.config import load_config
    from tests.helpers import start_studio, stop_studio
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="live-view-"))
    proc, url = start_studio([f"sessions.database={folder}/private/db.sqlite", f"sessions.stimuli_dir={folder}/s"],
                             folder / "studio.log")
    result = {}
    engine = StudioEngine(load_config())
    engine.generate(Request(engine="vae", mode="RED", n=1, candidates=1))   # loads, warms the renderer
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.set_default_timeout(600_000)
            page.goto(url, wait_until="load")
            page.wait_for_selector("#generate-button")
            for name in REQUESTS:
                studio_seconds(page, name, 999)   # the first request loads the engine's checkpoint
                engine_seconds(engine, name, 999)
                engine_times, handler, page_seconds = [], [], []
                for seed in range(1, args.repeats + 1):   # alternated, so a busy machine weighs on both alike
                    time.sleep(SETTLE_SECONDS)
                    engine_times.append(engine_seconds(engine, name, seed))
                    time.sleep(SETTLE_SECONDS)
                    served, shown = studio_seconds(page, name, seed)
                    handler.append(served)
                    page_seconds.append(shown)
                e, h, p = (statistics.median(x) for x in (engine_times, handler, page_seconds))
                # each seed's own ratio: seeds differ in length (the GPT writes 1.5-3 s), pairs do not
                ratio = statistics.median(x / y for x, y in zip(handler, engine_times))
                result[name] = {"engine_seconds": round(e, 2), "studio_seconds": round(h, 2),
                                "ratio": round(ratio, 3), "page_seconds": round(p, 2),
                                "runs": {"engine": [round(x, 2) for x in engine_times],
                                         "studio": [round(x, 2) for x in handler],
                                         "page": [round(x, 2) for x in page_seconds]}}
            browser.close()
    finally:
        stop_studio(proc)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
