"""The Latent Explorer (engines/explorer.py): map points, decoding places, interpolation strips, latent
arithmetic and placing a shifted latent on the map."""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.music.analyzer import MODES
from tests.helpers import TINY_VAE, VAE_LIMIT

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core

LATENT = 16


@pytest.fixture(scope="module")
def explorer(vae_checkpoint, vae_cfg, corpus_cache, tmp_path_factory):
    from engines.api import StudioEngine

    folder = vae_checkpoint[0].parent
    cfg = load_config(overrides=TINY_VAE + [f"model.checkpoints_dir={folder}"])
    return StudioEngine(cfg, cache=corpus_cache, out_dir=tmp_path_factory.mktemp("explorer")).explorer


def test_explorer_map_points_name_their_segments(explorer, corpus_cache):
    points = explorer.map_points()
    assert len(points["x"]) == len(points["y"]) == len(points["index"]) == VAE_LIMIT
    for i, mode, label in zip(points["index"][:5], points["mode"], points["label"]):
        assert mode == MODES[corpus_cache.segments["mode"][i]]
        assert label.startswith(corpus_cache.piece_of(i)["id"]) and "bars" in label


def test_explorer_decodes_places_and_segments(explorer, tiny_vae, corpus_cache):
    points = explorer.map_points()
    z = explorer.latent_at(points["x"][0], points["y"][0])
    assert len(z) == LATENT and all(math.isfinite(v) for v in z)
    i = points["index"][0]
    z_segment = explorer.latent_of_segment(i)
    expected = tiny_vae.encode([corpus_cache.segment(i)], MODES[corpus_cache.segments["mode"][i]])[0]
    np.testing.assert_allclose(z_segment, expected.numpy(), atol=1e-5)
    view = explorer.decode(z_segment, "RED", title="segment")
    assert Path(view.midi_path).is_file() and view.latent == z_segment
    assert (view.analysis is None) == (view.wav_path is None)
    # Files are named by what they hold: the same latent under another mode never gets the RED file back.
    other = explorer.decode(z_segment, "BLUE", title="segment")
    same_notes = view.notes.pitch == other.notes.pitch and view.notes.start == other.notes.start
    assert (other.midi_path == view.midi_path) == same_notes


def test_explorer_interpolation_strip_stitches_the_steps(explorer, tiny_vae):
    a, b = (explorer.sample("BLUE", seed=s) for s in (1, 2))
    strip = explorer.interpolate(a, b, steps=4, method="lerp")
    assert len(strip.steps) == 4 and len(strip.notes.regions) == 4
    np.testing.assert_allclose(strip.steps[0].latent, a, atol=1e-6)
    np.testing.assert_allclose(strip.steps[-1].latent, b, atol=1e-6)
    assert Path(strip.midi_path).is_file() and Path(strip.wav_path).stat().st_size > 1000
    # The stitched MIDI holds every step's notes, one after another.
    segments = tiny_vae.decode(tiny_vae.interpolate(torch.tensor(a), torch.tensor(b), 4, "lerp"))
    assert len(strip.notes.pitch) == sum(len(s.notes) for s in segments)
    assert strip.notes.bar_lines[-1] == pytest.approx(sum(s.length for s in segments) / 12)


def test_explorer_shift_is_latent_arithmetic_and_names_bad_input(explorer, tiny_vae):
    z = explorer.sample("WHITE", seed=3)
    mode = next(name.split(":")[1] for name in tiny_vae.vectors if name.startswith("mode:"))  # one the 64 segments hold
    moved = explorer.shift(z, {"rebracketing": 1.5, "energy": -0.5}, mode, 1.0)
    expected = (torch.tensor(z) + 1.5 * tiny_vae.vectors["rebracketing"] - 0.5 * tiny_vae.vectors["energy"]
                + tiny_vae.vectors[f"mode:{mode}"])
    np.testing.assert_allclose(moved, expected.numpy(), atol=1e-5)
    with pytest.raises(StudioError, match="unknown attribute 'loudness'"):
        explorer.shift(z, {"loudness": 1.0})
    with pytest.raises(StudioError, match="2..32 steps"):
        explorer.interpolate(z, z, steps=1)
    with pytest.raises(StudioError, match=f"{LATENT} finite numbers"):
        explorer.decode(z[:3])
    with pytest.raises(StudioError, match="does not exist"):
        explorer.latent_of_segment(10 ** 9)


def test_a_shifted_latent_is_placed_on_the_map_near_its_neighbours(explorer):
    latent_map = explorer._map()
    data, places = latent_map.payload["latents"].numpy(), latent_map.embedding
    # a fitted latent lands on its own place; a point between two lands between their places

    for i, place in enumerate(latent_map.project(data[:5])):   # (a repeated segment has twins: any of theirs)
        twins = np.nonzero(np.abs(data - data[i]).max(axis=1) < 1e-6)[0]
        assert np.abs(places[twins] - place).max(axis=1).min() < 1e-3
    assert explorer.place_of(data[0].tolist()) == pytest.approx(tuple(latent_map.project(data[:1])[0]))
    # a latent nudged off a fitted one (far less than to any other) lands next to that one's place: its
    # neighbours weigh by inverse distance (equal weights would put it at the mean of its 8 neighbours)
    others = np.abs(data - data[5]).max(axis=1) > 1e-6
    nearest_other = np.sqrt(((data[others] - data[5]) ** 2).sum(1)).min()
    nudged = data[5] + 1e-3 * nearest_other / np.sqrt(data.shape[1])
    span = np.ptp(places, axis=0).max()
    twins = np.nonzero(~others)[0]
    assert np.abs(places[twins] - latent_map.project(nudged[None])[0]).max(axis=1).min() < 0.01 * span
    with pytest.raises(StudioError, match="a latent here is"):
        explorer.place_of([1.0, 2.0])
