"""The browser tests' studio: one app on 127.0.0.1 with the tiny checkpoints, served for the whole test run, and
one chromium; each test opens its own page (tests/studio/browser.py has the page helpers)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import start_studio, stop_studio
from tests.studio.browser import CHROMIUM, CHROMIUM_ARGS, open_studio

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def browser_checkpoints(request, tmp_path_factory):
    """The tiny checkpoints (conftest.py), but a denoiser of the shipped T = 1000 steps (so that a run is long
    enough to be stopped), and a sampling calibration of our own for the GPT's YELLOW (the finalize step
    measures one per mode; the Generate tab shows it when YELLOW is chosen); or, with
    STUDIO_BROWSER_CHECKPOINTS=folder (`make screenshots`), that folder."""
    if os.environ.get("STUDIO_BROWSER_CHECKPOINTS"):
        return Path(os.environ["STUDIO_BROWSER_CHECKPOINTS"]).resolve()
    from engines.config import load_config
    from engines.training.common import load_checkpoint, save_checkpoint
    from engines.training.diffusion_trainer import train_diffusion
    from tests.helpers import DIFFUSION_LIMIT, TINY_DIFFUSION

    from tests.conftest import built_once

    tiny = request.getfixturevalue("tiny_checkpoints")

    def build(base):
        folder = base / "checkpoints"
        shutil.copytree(tiny["vae"].parent, folder)
        steps_1000 = [o for o in TINY_DIFFUSION if not o.startswith("model.diffusion.num_steps")]
        train_diffusion(load_config(overrides=steps_1000 + ["model.diffusion.epochs=1"]), base / "diffusion-run",
                        limit=DIFFUSION_LIMIT, workers=0)
        shutil.copyfile(base / "diffusion-run" / "best.pt", folder / "diffusion.pt")
        payload = load_checkpoint(folder / "autoregressive.pt")
        payload["sampling_calibration"] = {"modes": {"YELLOW": {"temperature": 1.0, "prompt_guidance": 4.0}}}
        save_checkpoint(payload, folder / "autoregressive.pt")
        return str(folder)

    return Path(built_once(tmp_path_factory, "browser-checkpoints", build)[1])


@pytest.fixture(scope="session")
def studio_url(browser_checkpoints, tmp_path_factory):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: `make test` installs it (apt package chromium)")
        pytest.skip("chromium is not installed (make test installs it)")
    log = ROOT / "data" / "studio-test.log" if (ROOT / "data").is_dir() else None
    folder = tmp_path_factory.mktemp("studio")   # listening stimuli and (outside them) database, away from data/
    proc, url = start_studio([f"model.checkpoints_dir={browser_checkpoints}",
                              f"sessions.database={folder}/private/db.sqlite",
                              f"sessions.stimuli_dir={folder}/listening",
                              "generation.arrange.section_tries=1"], log)   # the journeys test the page, not retries
    yield url
    stop_studio(proc)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, studio_url):
    context, page = open_studio(browser, studio_url)
    yield page
    context.close()
