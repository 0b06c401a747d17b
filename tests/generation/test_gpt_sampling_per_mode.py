"""The GPT's sampling per mode (engines/training/autoregressive_calibration.py): a request that leaves temperature
or prompt guidance unset is sampled with what the checkpoint calibrated for its mode; one that sets them, as set."""
from __future__ import annotations

import pytest

from engines.config import load_config
from engines.generation import GENERATORS, Request
from engines.generation.verify import draw
from engines.models.trained_autoregressive import FALLBACK_GUIDANCE, FALLBACK_TEMPERATURE

CALIBRATION = {"modes": {"GREEN": {"temperature": 0.9, "prompt_guidance": 1.0}}}


@pytest.fixture(scope="module")
def gpt():
    generator = GENERATORS["autoregressive"].load("assets/checkpoints/autoregressive.pt")
    generator.model.sampling_calibration = CALIBRATION   # a calibration of our own, whatever the shipped one says
    return generator


def test_unset_settings_take_the_modes_calibration_and_set_ones_win(gpt):
    assert gpt.model.sampling_for("GREEN") == (0.9, 1.0)
    assert gpt.model.sampling_for("green", temperature=1.2) == (1.2, 1.0)
    assert gpt.model.sampling_for("RED") == (FALLBACK_TEMPERATURE, FALLBACK_GUIDANCE)     # not calibrated
    assert gpt.model.sampling_for("WHITE", guidance=2.0) == (FALLBACK_TEMPERATURE, 2.0)


def test_a_request_is_sampled_with_its_modes_settings_unless_it_sets_them(gpt):
    cfg = load_config()
    asked = []

    def run(request, on_step=None):   # the engine as verified generation calls it, recording what it is asked
        asked.append(gpt.settings_of(request))
        return gpt.run(request)

    unset = gpt.settings_for(cfg)
    assert unset.temperature is None and unset.prompt_guidance is None   # the config leaves them to the mode
    draw(gpt, Request("autoregressive", mode="GREEN", n=1, seed=4), unset, None, run=run)
    draw(gpt, Request("autoregressive", mode="GREEN", n=1, seed=4), gpt.settings_for(cfg, {"prompt_guidance": 2.5}),
         None, run=run)
    assert [(s.temperature, s.prompt_guidance) for s in asked] == [(0.9, 1.0), (0.9, 2.5)]
    # the engine on its own fills them in the same way: the same notes as asking for the values outright
    alone = gpt.run(Request("autoregressive", mode="GREEN", n=2, seed=5, settings=unset))
    outright = gpt.run(Request("autoregressive", mode="GREEN", n=2, seed=5,
                               settings=gpt.settings_for(cfg, {"temperature": 0.9, "prompt_guidance": 1.0})))
    assert [s.notes.tolist() for s in alone] == [s.notes.tolist() for s in outright]


def test_the_shipped_gpt_is_calibrated_and_the_studio_shows_each_modes_settings():
    from engines.api import StudioEngine
    from engines.data.prepare import ensure_corpus_cache
    from engines.music.analyzer import MODES
    from engines.training.autoregressive_calibration import GUIDANCE, TEMPERATURES

    cfg = load_config()
    engine = StudioEngine(cfg, cache=ensure_corpus_cache(cfg))
    shipped = engine.models.get("autoregressive").model
    calibrated = shipped.sampling_calibration["modes"]
    assert set(calibrated) == set(MODES)
    for mode, m in calibrated.items():
        assert m["temperature"] in TEMPERATURES and m["prompt_guidance"] in GUIDANCE
        assert m["heard_new"] >= m["default"]["heard_new"]   # never worse than the former defaults where measured
        assert engine.engine_mode_settings("autoregressive", mode) == {"temperature": m["temperature"],
                                                                        "prompt_guidance": m["prompt_guidance"]}
    assert engine.engine_mode_settings("autoregressive", "WHITE") == {"temperature": FALLBACK_TEMPERATURE,
                                                                      "prompt_guidance": FALLBACK_GUIDANCE}
    # the VAE's temperature, as its finalize calibrated it per mode
    vae = engine.models.get("vae").model
    assert engine.engine_mode_settings("vae", "GREEN") == {"temperature": vae.temperature_for("GREEN")}
    assert vae.temperature_for("GREEN") == vae.temperature_calibration["modes"]["GREEN"]["temperature"]
    assert engine.engine_mode_settings("vae", "WHITE") == {"temperature": 1.0}
