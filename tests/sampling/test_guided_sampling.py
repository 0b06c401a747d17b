"""Classifier-guided sampling through TrainedDiffusion, and RePaint-style inpainting (engines/sampling/diffusion.py)."""
import numpy as np
import pytest
import torch

from engines.errors import StudioError
from engines.models.guidance_classifier import GuidanceTarget
from engines.music.notes import Segment
from engines.sampling.diffusion import Inpainting, NoiseScheduler, sample_loop
from tests.helpers import arpeggio_segment

torch.set_num_threads(1)


# ---- guided sampling ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", ["x0", "x_t"])
def test_classifier_guidance_changes_the_sample_and_repeats(guided_diffusion, space):
    target = GuidanceTarget(mode=True, rebracketing="high", space=space)
    plain, _ = guided_diffusion.sample_rolls("RED", n=2, steps=8, seed=4)
    guided, _ = guided_diffusion.sample_rolls("RED", n=2, steps=8, seed=4, classifier_scale=5.0, target=target)
    again, _ = guided_diffusion.sample_rolls("RED", n=2, steps=8, seed=4, classifier_scale=5.0, target=target)
    assert not torch.allclose(plain, guided) and torch.equal(guided, again)


def test_x0_guidance_moves_the_estimate_by_the_scaled_gradient(guided_diffusion):
    """In the x0 space, one denoising step's x0 is the (clipped) unguided x0 plus scale * grad log p(y | x0)."""
    from engines.models.guidance_classifier import guidance_gradient

    modes, metre = torch.tensor([1, 5]), torch.tensor([2, 2])
    x_t, t = torch.randn(2, 2, 64, 88, generator=torch.Generator().manual_seed(0)), torch.tensor([30, 30])
    plain = guided_diffusion.denoiser(modes, None, metre, 3.0)(x_t, t)[0].clamp(-1, 1)
    target = GuidanceTarget(mode=True, rebracketing="high", space="x0")
    guided = guided_diffusion.denoiser(modes, None, metre, 3.0, 2.0, target)(x_t, t)[0]
    log_tempo = torch.log(guided_diffusion.metre_tempo[modes, metre])   # the rows' tempo (tempo_for)
    grad = guidance_gradient(guided_diffusion.classifier.model, plain, torch.zeros_like(t), metre, modes, "high",
                             log_tempo)
    torch.testing.assert_close(guided, plain + 2.0 * grad)
    white, _ = guided_diffusion.sample_rolls("WHITE", n=2, steps=8, seed=4, classifier_scale=5.0, target=GuidanceTarget())
    white_plain, _ = guided_diffusion.sample_rolls("WHITE", n=2, steps=8, seed=4)
    assert torch.equal(white, white_plain)  # WHITE has no mode to steer toward


def test_axis_guidance_pulls_toward_the_asked_attributes_only(guided_diffusion):
    """axis_scale: the classifier's attribute head is pulled toward the attributes a request asks for (WHITE
    too); a request that asks none samples as without it; the mode and rebracketing terms keep their own
    strength in the same gradient."""
    from engines.models.guidance_classifier import guidance_gradient

    plain, _ = guided_diffusion.sample_rolls("WHITE", n=2, steps=8, seed=4, attributes={"energy": 0.9})
    aimed, _ = guided_diffusion.sample_rolls("WHITE", n=2, steps=8, seed=4, attributes={"energy": 0.9},
                                             axis_scale=1.0)
    again, _ = guided_diffusion.sample_rolls("WHITE", n=2, steps=8, seed=4, attributes={"energy": 0.9},
                                             axis_scale=1.0)
    assert not torch.allclose(plain, aimed) and torch.equal(aimed, again)
    unguided, _ = guided_diffusion.sample_rolls("RED", n=2, steps=8, seed=4)
    nothing_asked, _ = guided_diffusion.sample_rolls("RED", n=2, steps=8, seed=4, axis_scale=1.0)
    assert torch.equal(nothing_asked, unguided)

    modes, metre = torch.tensor([1, 5]), torch.tensor([2, 2])
    x_t, t = torch.randn(2, 2, 64, 88, generator=torch.Generator().manual_seed(0)), torch.tensor([30, 30])
    names = guided_diffusion.classifier.attributes
    values, given = torch.zeros(2, len(names)), torch.zeros(2, len(names))
    values[:, names.index("energy")], given[:, names.index("energy")] = 0.9, 1.0
    plain = guided_diffusion.denoiser(modes, None, metre, 3.0)(x_t, t)[0].clamp(-1, 1)
    target = GuidanceTarget(mode=True, space="x0")
    both = guided_diffusion.denoiser(modes, None, metre, 3.0, 2.0, target, aim=(values, given), axis_scale=0.5)
    log_tempo = torch.log(guided_diffusion.metre_tempo[modes, metre])
    model = guided_diffusion.classifier.model
    toward_mode = guidance_gradient(model, plain, torch.zeros_like(t), metre, modes, None, log_tempo)
    toward_energy = guidance_gradient(model, plain, torch.zeros_like(t), metre, None, None, log_tempo, (values, given))
    torch.testing.assert_close(both(x_t, t)[0], plain + 2.0 * toward_mode + 0.5 * toward_energy)
    with pytest.raises(StudioError, match="axis guidance strength must be >= 0"):
        guided_diffusion.sample("RED", axis_scale=-1)


def test_guided_sampling_errors_name_the_input(guided_diffusion):
    with pytest.raises(StudioError, match="classifier guidance strength must be >= 0"):
        guided_diffusion.sample("RED", classifier_scale=-1, target=GuidanceTarget())
    classifier, guided_diffusion.classifier = guided_diffusion.classifier, None
    try:
        with pytest.raises(StudioError, match="needs a guidance classifier"):
            guided_diffusion.sample("RED", steps=4, classifier_scale=1.0, target=GuidanceTarget())
    finally:
        guided_diffusion.classifier = classifier


# ---- inpainting -----------------------------------------------------------------------------------------------
def test_renoise_is_the_forward_process():
    scheduler = NoiseScheduler(100)
    x0, noise = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(scheduler.renoise(x0, -1, 40, noise),
                               scheduler.add_noise(x0, noise, torch.tensor([40, 40])), rtol=1e-6, atol=1e-6)
    # two jumps compose to one: variances add up to 1 - alpha_bar
    a = scheduler.alpha_bar
    ratio = float(a[60] / a[20])
    assert scheduler.renoise(torch.ones(1), 20, 60, torch.zeros(1)).item() == pytest.approx(ratio ** 0.5)


def test_resampling_keeps_the_known_part_and_takes_each_step_more_often():
    scheduler = NoiseScheduler(50)
    calls = []

    def denoise(x_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(x_t), scheduler.eps_from_x0(torch.zeros_like(x_t), x_t, t)

    known = torch.ones(1, 4)
    mask = torch.tensor([[True, True, False, False]])
    out = sample_loop(scheduler, denoise, (1, 4), steps=5, inpainting=Inpainting(known, mask, resample=3),
                      generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[mask], known[mask]) and torch.allclose(out[~mask], torch.zeros(2), atol=1e-5)
    assert len(calls) == 4 * 3 + 1  # every step three times but the last, which lands on x0
    with pytest.raises(StudioError, match="resample must be at least 1"):
        sample_loop(scheduler, denoise, (1, 4), steps=5, inpainting=Inpainting(known, mask, resample=0))


def test_inpainting_keeps_the_chosen_bars_exactly(guided_diffusion):
    init = arpeggio_segment()
    out = guided_diffusion.inpaint(init, keep_bars=[1, 3], mode="BLUE", n=2, steps=6, seed=2)
    bar = init.bar_length
    for segment in out:
        assert (segment.ts_num, segment.ts_den, segment.tempo_qpm) == (3, 4, 88.0)
        for b in (0, 2):  # kept bars: the very notes of the init, in its key
            kept = segment.notes[(segment.notes["start"] >= b * bar) & (segment.notes["start"] < (b + 1) * bar)]
            original = init.notes[(init.notes["start"] >= b * bar) & (init.notes["start"] < (b + 1) * bar)]
            assert kept[["start", "duration", "pitch"]].tolist() == original[["start", "duration", "pitch"]].tolist()
        assert segment.notes["start"].max(initial=0) < 4 * bar
    again = guided_diffusion.inpaint(init, keep_bars=[1, 3], mode="BLUE", n=2, steps=6, seed=2)
    assert [s.notes.tolist() for s in again] == [s.notes.tolist() for s in out]
    (solver,) = guided_diffusion.inpaint(init, keep_bars=[1, 3], mode="BLUE", steps=6, seed=2, sampler="dpmsolver++")
    kept = solver.notes[solver.notes["start"] < bar]
    assert kept[["start", "pitch"]].tolist() == init.notes[init.notes["start"] < bar][["start", "pitch"]].tolist()


def test_inpainting_a_short_segment_and_notes_never_overlap(guided_diffusion):
    init = arpeggio_segment()
    short = Segment(notes=init.notes[init.notes["start"] < 2 * init.bar_length], ts_num=3, ts_den=4, num_bars=2,
                    tempo_qpm=88.0)
    for segment in guided_diffusion.inpaint(short, keep_bars=[1], mode="RED", n=3, steps=6, seed=4):
        notes = segment.notes
        first = notes[notes["start"] < init.bar_length]
        assert first[["start", "pitch"]].tolist() == init.notes[:3][["start", "pitch"]].tolist()
        for pitch in set(notes["pitch"].tolist()):  # MIDI cannot hold two overlapping notes of one pitch
            same = np.sort(notes[notes["pitch"] == pitch], order="start")
            assert (same["start"][1:] >= same["start"][:-1] + same["duration"][:-1]).all()


def test_inpainting_errors_name_the_bars(guided_diffusion):
    init = arpeggio_segment()
    with pytest.raises(StudioError, match=r"bars to keep must lie in 1..4, got 5"):
        guided_diffusion.inpaint(init, keep_bars=[5])
    short = Segment(notes=init.notes[init.notes["start"] < init.bar_length], ts_num=3, ts_den=4, num_bars=1)
    with pytest.raises(StudioError, match="has only 1 bar"):
        guided_diffusion.inpaint(short, keep_bars=[2])
    with pytest.raises(StudioError, match="not 5/8"):
        guided_diffusion.inpaint(Segment(notes=init.notes[:0], ts_num=5, ts_den=8), keep_bars=[1])
