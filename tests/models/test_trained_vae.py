"""TrainedVAE (engines/models/trained_vae.py): seeded sampling, the prior, tonic handling, decoding, encoding
and interpolation, and decoding hand-made logits to segments."""
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from engines.data.torch_dataset import METRES, RollDataset
from engines.errors import StudioError
from engines.models.trained_vae import (DEFAULT_VELOCITY, TrainedVAE, logits_to_segments, pitch_peaks, segment_tonic,
                                       tonic_shift)
from engines.models.vae import (ChromaticVAE, gaussian_kl)
from engines.models.vae_config import VAEConfig
from engines.music.analyzer import AXES, MODES
from engines.music.notes import NOTE_DTYPE, Segment, shift_to_c, transpose_notes

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core

LATENT = 16


# ---- TrainedVAE ----------------------------------------------------------------------------------------------
def _key(segments) -> list:
    return [(s.ts_num, s.ts_den, s.tempo_qpm, s.notes.tobytes()) for s in segments]


def test_sample_is_seeded(tiny_vae):
    a, za = tiny_vae.sample("RED", n=3, seed=7)
    b, zb = tiny_vae.sample("RED", n=3, seed=7)
    assert za.shape == (3, LATENT) and torch.equal(za, zb)
    assert _key(a) == _key(b)
    c, zc = tiny_vae.sample("RED", n=3, seed=8)
    assert not torch.equal(za, zc)
    # Different latents decode to different logits, hence (practically always) different segments.
    assert not torch.equal(tiny_vae.model.decode(za, torch.ones(3, dtype=torch.long))["onset"],
                           tiny_vae.model.decode(zc, torch.ones(3, dtype=torch.long))["onset"])
    # The draw is centred on RED's prior mean (the fitted one when finalize fitted one, else the network's);
    # temperature scales the spread around it.
    centre = tiny_vae.fitted_prior["mean"][MODES.index("RED")] if tiny_vae.fitted_prior else \
        tiny_vae.model.prior_mean(torch.tensor([MODES.index("RED")]))
    _, hot = tiny_vae.sample("RED", n=3, seed=7, temperature=2.0)
    torch.testing.assert_close(hot - centre, 2 * (za - centre))
    network = tiny_vae.model.prior_mean(torch.tensor([MODES.index("RED")]))
    _, cold = tiny_vae.sample("RED", n=3, seed=7, temperature=0.5, prior="network")
    torch.testing.assert_close(cold - network, 0.5 * (tiny_vae.sample("RED", n=3, seed=7, prior="network")[1] - network))


def test_conditional_prior_is_learned_per_mode(tiny_vae, vae_run):
    # Training moved the prior means of the modes it saw (64 segments hold most of them) away from zero.
    means = tiny_vae.model.prior.weight.detach()
    assert means.shape == (len(MODES) + 1, LATENT)
    assert (means[:len(MODES)].norm(dim=1) > 0).sum() >= 4
    assert not torch.allclose(means[MODES.index("RED")], means[MODES.index("BLUE")])
    # A "standard" model keeps the prior at N(0, I): the means are frozen zeros.
    standard = ChromaticVAE(VAEConfig(latent_dim=8, hidden_dim=16, prior="standard"))
    assert not standard.prior.weight.requires_grad and standard.prior.weight.abs().sum() == 0


def test_gaussian_kl_against_a_shifted_prior():
    mean, logvar = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    torch.testing.assert_close(gaussian_kl(mean, logvar), torch.tensor([[0.5, 2.0]]))
    # Against a prior centred on the posterior mean, equal variances: no KL at all.
    torch.testing.assert_close(gaussian_kl(mean, logvar, mean.clone()), torch.zeros(1, 2))
    torch.testing.assert_close(gaussian_kl(mean, torch.full((1, 2), math.log(4.0)), torch.zeros(1, 2)),
                               0.5 * (mean ** 2 + 4 - 1 - math.log(4.0)))


def test_key_to_c_moves_every_segment_to_the_tonic_c(corpus_cache):
    rows = [int(r) for r in np.nonzero(corpus_cache.segments["key"] % 12 != 0)[0][:6]]
    plain, in_c = RollDataset(corpus_cache, rows), RollDataset(corpus_cache, rows, key_to_c=True)
    for i, row in enumerate(rows):
        tonic = int(corpus_cache.segments[row]["key"]) % 12
        shift = in_c.shifts[i]
        assert shift == shift_to_c(tonic) and -6 <= shift <= 5 and (tonic + shift) % 12 == 0
        assert plain.shifts[i] == 0
        moved = transpose_notes(corpus_cache.segment(row).notes, shift)
        assert segment_tonic(Segment(moved)) == 0
        # Onsets move by `shift` pitches in the roll; the rhythm is untouched.
        a, b = plain[i]["roll"][0], in_c[i]["roll"][0]
        assert torch.equal(a.sum(1), b.sum(1))


def test_transposition_helpers():
    assert [shift_to_c(t) for t in range(12)] == [0, -1, -2, -3, -4, -5, -6, 5, 4, 3, 2, 1]
    notes = np.array([(0, 12, 60, 80, 0), (0, 12, 107, 80, 0)], dtype=NOTE_DTYPE)
    moved = transpose_notes(notes, 3)
    assert moved["pitch"].tolist() == [63, 98]           # 110 is past the piano: folded an octave down
    assert notes["pitch"].tolist() == [60, 107]          # the input is untouched
    assert tonic_shift(None) == 0 and tonic_shift("C") == 0
    assert tonic_shift("G") == -5 and tonic_shift("f#") == 6 and tonic_shift("Bb") == -2 and tonic_shift("Db") == 1
    with pytest.raises(StudioError, match="unknown tonic 'H'; choose one of C, C#, D"):
        tonic_shift("H")


def test_decode_to_another_tonic_transposes_the_notes(tiny_vae):
    z = tiny_vae.sample_latents("YELLOW", 4, seed=3)
    in_c, in_g = tiny_vae.decode(z, "YELLOW"), tiny_vae.decode(z, "YELLOW", tonic="G")
    for a, b in zip(in_c, in_g):
        np.testing.assert_array_equal(b.notes["start"], a.notes["start"])
        np.testing.assert_array_equal(b.notes["pitch"], transpose_notes(a.notes, -5)["pitch"])


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "n must lie in 1..256, got 0"),
    ({"n": 257}, "n must lie in 1..256, got 257"),
    ({"temperature": 0.0}, r"temperature must lie in \(0, 5\], got 0.0"),
    ({"temperature": 5.5}, r"temperature must lie in \(0, 5\], got 5.5"),
    ({"temperature": -1.0}, r"temperature must lie in \(0, 5\], got -1.0"),
])
def test_sample_rejects_bad_arguments(tiny_vae, kwargs, message):
    with pytest.raises(StudioError, match=message):
        tiny_vae.sample("RED", **kwargs)


def test_unknown_mode(tiny_vae):
    with pytest.raises(StudioError, match="unknown mode 'PINK'; choose one of BLACK, RED, .*VIOLET, WHITE"):
        tiny_vae.sample("PINK")
    with pytest.raises(StudioError, match="unknown mode 'PINK'"):
        tiny_vae.decode(torch.zeros(LATENT), "pink")
    # Lower case and the WHITE / empty "no mode" are accepted.
    z = torch.randn(2, LATENT, generator=torch.Generator().manual_seed(0))
    assert _key(tiny_vae.decode(z, "red")) == _key(tiny_vae.decode(z, "RED"))
    assert _key(tiny_vae.decode(z, "")) == _key(tiny_vae.decode(z, "WHITE"))


def test_decode_gives_well_formed_segments(tiny_vae):
    z = 2 * torch.randn(12, LATENT, generator=torch.Generator().manual_seed(1))
    segments = tiny_vae.decode(z, "BLUE")
    assert len(segments) == 12
    for s in segments:
        assert isinstance(s, Segment) and s.num_bars == 4
        assert (s.ts_num, s.ts_den) in METRES
        assert 30 <= s.tempo_qpm <= 300
        if len(s.notes):
            assert s.notes["pitch"].min() >= 21 and s.notes["pitch"].max() <= 108
            assert (s.notes["start"] >= 0).all() and (s.notes["start"] < s.length).all()
            assert (s.notes["duration"] > 0).all()
            assert (s.notes["start"] + s.notes["duration"] <= s.length).all()
            assert (s.notes["velocity"] == DEFAULT_VELOCITY).all()
    # One latent (D,) decodes too, with attributes given.
    (one,) = tiny_vae.decode(z[0], "BLUE", {"rebracketing": 0.9, "temporal_complexity": 0.1})
    assert isinstance(one, Segment)


def test_encode_and_interpolate(tiny_vae, corpus_cache, vae_rows):
    segments = [corpus_cache.segment(r) for r in vae_rows]
    z = tiny_vae.encode(segments, "RED")
    assert z.shape == (3, LATENT) and torch.isfinite(z).all()
    # encode is the posterior mean of the dataset's rolls.
    ds_batch = next(iter(DataLoader(RollDataset(corpus_cache, vae_rows, key_to_c=True), batch_size=3)))
    torch.testing.assert_close(z, tiny_vae.encode_rolls(ds_batch["roll"], torch.full((3,), MODES.index("RED"))))
    path = tiny_vae.interpolate(z[0], z[1], steps=6)
    assert path.shape == (6, LATENT)
    torch.testing.assert_close(path[0], z[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(path[-1], z[1], atol=1e-4, rtol=1e-4)
    assert len(tiny_vae.decode(path, "RED")) == 6
    with pytest.raises(StudioError, match="at least 2 steps"):
        tiny_vae.interpolate(z[0], z[1], steps=1)


def test_shift_along_named_vectors(tiny_vae):
    z = torch.randn(2, LATENT, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(tiny_vae.shift(z, "rebracketing", 1.5), z + 1.5 * tiny_vae.vectors["rebracketing"])
    with pytest.raises(StudioError) as err:
        tiny_vae.shift(z, "sparkle", 1.0)
    message = str(err.value)
    assert message.startswith("no attribute vector 'sparkle'; this checkpoint has: ")
    for name in ("rebracketing", "temporal_complexity", *AXES):
        assert name in message


def test_load_errors(tmp_path):
    with pytest.raises(StudioError, match="checkpoint '.*nope.pt' does not exist"):
        TrainedVAE.load(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(StudioError, match="checkpoint 'bad.pt' could not be read"):
        TrainedVAE.load(bad)


# ---- decoding hand-made logits -------------------------------------------------------------------------------
def _logits(metre, tempo=90.0, t=64, p=88) -> dict:
    metre_logits = torch.full((1, len(METRES)), -5.0)
    metre_logits[0, METRES.index(metre)] = 5.0
    return {"onset": torch.full((1, t, p), -10.0), "sustain": torch.full((1, t, p), -10.0), "metre": metre_logits,
            "log_tempo": torch.tensor([math.log(tempo)])}


def test_logits_to_segments_one_note():
    out = _logits((4, 4))
    out["onset"][0, 4, 39] = 10.0
    out["sustain"][0, 4:8, 39] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den, segment.num_bars) == (4, 4, 4)
    assert segment.tempo_qpm == pytest.approx(90.0)
    assert len(segment.notes) == 1
    note = segment.notes[0]
    # Step 4 of sixteenths (3 ticks), four steps long, pitch index 39 above A0 (21) = middle C.
    assert (int(note["start"]), int(note["duration"]), int(note["pitch"]), int(note["velocity"])) == (12, 12, 60, 80)


def test_pitch_window_keeps_the_peak_of_neighbouring_onsets_and_ends_overlaps():
    out = _logits((4, 4))
    out["onset"][0, 0, 39] = 3.0                   # C4 and a less likely C#4 and D4 at once: a blurred pitch
    out["onset"][0, 0, 40] = 2.0
    out["onset"][0, 0, 41] = 2.5
    out["onset"][0, 0, 46] = 2.0                   # G4 is a fifth away: a chord tone, kept
    out["sustain"][0, 0:8, 39] = 10.0              # C4 is held for two beats ...
    out["onset"][0, 4, 41] = 10.0                  # ... but D4 starts on beat 2: the line moved on
    out["sustain"][0, 4:8, 41] = 10.0
    plain, = logits_to_segments(out, onset_threshold=0.5)
    assert sorted((int(n["start"]), int(n["pitch"])) for n in plain.notes) == [
        (0, 60), (0, 61), (0, 62), (0, 67), (12, 62)]
    assert {int(n["pitch"]): int(n["duration"]) for n in plain.notes if n["start"] == 0}[60] == 24
    peaked, = logits_to_segments(out, onset_threshold=0.5, pitch_window=2)
    assert sorted((int(n["start"]), int(n["pitch"]), int(n["duration"])) for n in peaked.notes) == [
        (0, 60, 12), (0, 67, 3), (12, 62, 12)]
    # pitch_peaks alone: only local maxima on the pitch axis survive; window 0 changes nothing.
    probs = torch.tensor([[[0.2, 0.9, 0.8, 0.1, 0.1, 0.7]]])
    torch.testing.assert_close(pitch_peaks(probs, 2), torch.tensor([[[0.0, 0.9, 0.0, 0.0, 0.0, 0.7]]]))
    assert torch.equal(pitch_peaks(probs, 0), probs)


def test_logits_to_segments_repeated_onsets_and_chords():
    out = _logits((3, 4))
    out["onset"][0, [0, 2], 39] = 10.0          # two onsets of one pitch: the second ends the first
    out["sustain"][0, 0:6, 39] = 10.0
    out["onset"][0, 0, [43, 46]] = 10.0          # a chord
    out["sustain"][0, 0:1, [43, 46]] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den) == (3, 4)
    notes = sorted((int(n["start"]), int(n["duration"]), int(n["pitch"])) for n in segment.notes)
    assert notes == [(0, 3, 64), (0, 3, 67), (0, 6, 60), (6, 12, 60)]


def test_logits_to_segments_drops_padding_and_clamps_tempo():
    out = _logits((2, 4), tempo=1000.0)
    out["onset"][0, 2, 50] = 10.0
    out["sustain"][0, 2:4, 50] = 10.0
    out["onset"][0, 40, 39] = 10.0               # past the 32 steps of four 2/4 bars
    out["sustain"][0, 40:44, 39] = 10.0
    out["onset"][0, 30, 60] = 10.0               # sounds into the padding: cut at the end of bar 4
    out["sustain"][0, 30:40, 60] = 10.0
    (segment,) = logits_to_segments(out)
    assert (segment.ts_num, segment.ts_den) == (2, 4)
    assert segment.tempo_qpm == 300.0
    notes = sorted((int(n["start"]), int(n["duration"]), int(n["pitch"])) for n in segment.notes)
    assert notes == [(6, 6, 71), (90, 6, 81)]
    slow = _logits((4, 4), tempo=5.0)
    assert logits_to_segments(slow)[0].tempo_qpm == 30.0
    assert len(logits_to_segments(slow)[0].notes) == 0


def test_logits_to_segments_long_bars_use_eighth_steps():
    out = _logits((4, 2))                         # 96 ticks a bar: 16 steps of 6 ticks
    out["onset"][0, 63, 39] = 10.0
    out["sustain"][0, 63, 39] = 10.0
    (segment,) = logits_to_segments(out)
    assert [(int(n["start"]), int(n["duration"])) for n in segment.notes] == [(378, 6)]
    assert segment.length == 384


# ---- the attribute prior -------------------------------------------------------------------------------------
def _with_prior(vae: TrainedVAE, **changes) -> TrainedVAE:
    """The same network with its attribute prior's settings changed (the session's tiny_vae stays as it is)."""
    return TrainedVAE(vae.model, dict(vae.payload, attribute_prior=dict(vae.attribute_prior, **changes)))


def test_only_a_request_asking_attributes_and_no_mode_follows_the_attribute_prior(tiny_vae):
    assert tiny_vae.attribute_prior, "finalize fits one"
    assert tiny_vae.follows_attributes("WHITE", {"energy": 0.8})
    assert tiny_vae.follows_attributes("", {"rebracketing": 0.5, "valence": None})
    assert not tiny_vae.follows_attributes("RED", {"energy": 0.8})        # a mode keeps its own prior
    assert not tiny_vae.follows_attributes("WHITE", None)
    assert not tiny_vae.follows_attributes("WHITE", {"energy": None, "loudness": 0.3})
    assert not tiny_vae.follows_attributes("WHITE", {"energy": 0.8}, prior="network")
    older = TrainedVAE(tiny_vae.model, {k: v for k, v in tiny_vae.payload.items() if k != "attribute_prior"})
    assert not older.follows_attributes("WHITE", {"energy": 0.8})         # a checkpoint from before it
    # what sample draws: for mode requests the mode's Gaussian as before, for asked axes the neighbourhood
    _, z = tiny_vae.sample("WHITE", n=3, seed=5, attributes={"energy": 0.8, "valence": -0.2})
    torch.testing.assert_close(z, tiny_vae.neighbourhood_latents({"energy": 0.8, "valence": -0.2}, 3, 1.0, 5))
    _, red = tiny_vae.sample("RED", n=3, seed=5, attributes={"energy": 0.8})
    torch.testing.assert_close(red, tiny_vae.sample_latents("RED", 3, seed=5))


def test_the_neighbours_are_the_rows_nearest_the_asked_attributes(tiny_vae):
    prior = tiny_vae.attribute_prior
    names = prior["names"]
    asked = {"energy": 0.9, "valence": -0.5}   # valence is asked on the analyzer's scale, -1..1
    target = torch.tensor([0.9, 0.25])
    distance = (prior["attributes"][:, [names.index("energy"), names.index("valence")]] - target).abs().sum(1)
    nearest = tiny_vae.attribute_neighbours(asked, torch.Generator().manual_seed(0))
    k = min(prior["neighbours"], len(distance))
    assert len(nearest) == k == len(set(nearest.tolist()))
    assert distance[nearest].max() <= distance.sort().values[k - 1] + 1e-5
    # unknown and unset attributes are not measured
    again = tiny_vae.attribute_neighbours(dict(asked, loudness=1.0, tension=None), torch.Generator().manual_seed(0))
    assert torch.equal(again, nearest)


def test_neighbourhood_latents_mix_the_nearest_latents_and_temperature_spreads_them(tiny_vae):
    asked = {"tension": 0.7}
    z = tiny_vae.neighbourhood_latents(asked, 6, 1.0, seed=2)
    assert z.shape == (6, LATENT) and torch.equal(z, tiny_vae.neighbourhood_latents(asked, 6, 1.0, seed=2))
    assert not torch.equal(z, tiny_vae.neighbourhood_latents(asked, 6, 1.0, seed=3))
    nearest = tiny_vae.attribute_neighbours(asked, torch.Generator().manual_seed(2))
    latents = tiny_vae.attribute_prior["latents"][nearest]
    centre = latents.mean(0)
    # each draw is the mean of `mixed` neighbours, at their mean norm: with one mixed, a neighbour itself
    single = _with_prior(tiny_vae, mixed=1).neighbourhood_latents(asked, 6, 1.0, seed=2)
    for row in single:
        assert (latents - row).norm(dim=1).min() < 1e-5
    # temperature scales the distance from the neighbours' mean (0 would be the mean itself)
    hot = tiny_vae.neighbourhood_latents(asked, 6, 2.0, seed=2)
    torch.testing.assert_close(hot - centre, 2 * (z - centre))
    # a mix is rescaled to its neighbours' mean norm: it lies within theirs, not shrunk toward 0 as a mean would
    norms = latents.norm(dim=1)
    assert torch.all((z.norm(dim=1) >= norms.min() - 1e-4) & (z.norm(dim=1) <= norms.max() + 1e-4))
