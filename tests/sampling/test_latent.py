"""engines/sampling/latent.py and engines/evaluation/reconstruction.py: latent-space operations and note F1
on hand-made tensors with known answers."""
import math

import pytest
import torch

from engines.errors import StudioError
from engines.evaluation.reconstruction import note_f1
from engines.sampling.latent import attribute_vector, interpolate, lerp, shift, slerp, traverse

torch.set_num_threads(1)  # a training job may share this machine: keep the tests to one core


# ---- interpolation ---------------------------------------------------------------------------------------
def test_slerp_endpoints_are_the_inputs():
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(2, 16, generator=generator)
    path = slerp(z1, z2, torch.linspace(0, 1, 7))
    assert path.shape == (7, 16)
    torch.testing.assert_close(path[0], z1, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(path[-1], z2, atol=1e-5, rtol=1e-5)


def test_slerp_keeps_unit_norm_and_lerp_cuts_the_corner():
    e0, e1 = torch.eye(4)[:2]
    t = torch.linspace(0, 1, 11)
    norms = slerp(e0, e1, t).norm(dim=1)
    torch.testing.assert_close(norms, torch.ones(11), atol=1e-5, rtol=0)
    # Halfway along the great circle: 45 degrees between the two axes.
    mid = slerp(e0, e1, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5), 0.0, 0.0]), atol=1e-5, rtol=0)
    line = lerp(e0, e1, t)
    assert line[5].norm().item() == pytest.approx(math.sqrt(0.5), abs=1e-6)
    torch.testing.assert_close(line[5], torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_interpolate_returns_steps_inclusive_for_both_methods():
    z1, z2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    for method in ("slerp", "lerp"):
        path = interpolate(z1, z2, 5, method)
        assert path.shape == (5, 3)
        torch.testing.assert_close(path[0], z1, atol=1e-5, rtol=0)
        torch.testing.assert_close(path[-1], z2, atol=1e-5, rtol=0)
    torch.testing.assert_close(interpolate(z1, z2, 3, "lerp")[1], torch.tensor([0.5, 1.0, 0.0]))
    assert interpolate(z1, z2, 2).shape == (2, 3)  # the smallest path allowed


@pytest.mark.parametrize("steps", [1, 0, -3])
def test_interpolate_rejects_too_few_steps(steps):
    z = torch.ones(4)
    with pytest.raises(StudioError, match=f"at least 2 steps, got {steps}"):
        interpolate(z, -z, steps)


def test_interpolate_rejects_unknown_method():
    z = torch.ones(4)
    with pytest.raises(StudioError, match="unknown interpolation 'cubic'; choose slerp or lerp"):
        interpolate(z, 2 * z, 4, "cubic")


def test_parallel_latents_interpolate_on_the_straight_line():
    z = torch.tensor([1.0, 2.0, 3.0, -1.0])
    t = torch.linspace(0, 1, 9)
    path = slerp(z, 3 * z, t)
    assert torch.isfinite(path).all()
    torch.testing.assert_close(path, lerp(z, 3 * z, t), atol=1e-5, rtol=1e-5)


def test_antiparallel_latents_fall_back_to_lerp():
    # The great circle between z and -z is undefined; the straight line through 0 is the answer.
    z = torch.tensor([1.0, 2.0, 3.0])
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    torch.testing.assert_close(slerp(z, -z, t), lerp(z, -z, t), atol=1e-4, rtol=1e-4)


# ---- attribute vectors, shifts, traversals ---------------------------------------------------------------
def test_attribute_vector_points_along_the_attribute_dimension():
    generator = torch.Generator().manual_seed(3)
    values = torch.rand(400, generator=generator)
    latents = 0.05 * torch.randn(400, 6, generator=generator)
    latents[:, 0] = 4 * values  # dimension 0 carries the attribute, the others are small noise
    vector = attribute_vector(latents, values)
    assert vector.shape == (6,)
    # Top quarter of uniform values averages ~0.875, bottom quarter ~0.125: 4 * 0.75 = 3 apart.
    assert vector[0].item() == pytest.approx(3.0, abs=0.25)
    assert vector[1:].abs().max().item() < 0.05
    cosine = vector[0] / vector.norm()
    assert cosine.item() > 0.999
    # The sign follows the attribute: a falling attribute gives the opposite direction.
    torch.testing.assert_close(attribute_vector(latents, -values), -vector)


def test_attribute_vector_quantile_selects_the_extremes():
    latents = torch.arange(8, dtype=torch.float32)[:, None].repeat(1, 2)
    values = torch.arange(8, dtype=torch.float32)
    # quantile 0.25 of 0..7: low <= 1.75 -> rows 0, 1 (mean 0.5); high >= 5.25 -> rows 6, 7 (mean 6.5).
    torch.testing.assert_close(attribute_vector(latents, values), torch.tensor([6.0, 6.0]))
    # quantile 0.5: low <= 3.5 -> rows 0..3 (1.5); high >= 3.5 -> rows 4..7 (5.5).
    torch.testing.assert_close(attribute_vector(latents, values, quantile=0.5), torch.tensor([4.0, 4.0]))


def test_shift_single_latent_and_batch():
    z = torch.tensor([1.0, -1.0, 0.0])
    vector = torch.tensor([0.0, 2.0, 1.0])
    torch.testing.assert_close(shift(z, vector, 1.5), torch.tensor([1.0, 2.0, 1.5]))
    torch.testing.assert_close(shift(z, vector, 0.0), z)
    batch = torch.stack([z, 2 * z])
    out = shift(batch, vector, -1.0)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out, torch.tensor([[1.0, -3.0, -1.0], [2.0, -4.0, -1.0]]))


def test_traverse_sets_one_dimension_and_leaves_z_alone():
    z = torch.tensor([0.5, -0.5, 1.0, 2.0])
    values = torch.tensor([-2.0, 0.0, 2.0])
    out = traverse(z, 2, values)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out[:, 2], values)
    torch.testing.assert_close(out[:, [0, 1, 3]], z[[0, 1, 3]].repeat(3, 1))
    torch.testing.assert_close(z, torch.tensor([0.5, -0.5, 1.0, 2.0]))  # the input is not modified


# ---- note F1 ---------------------------------------------------------------------------------------------
def _roll(cells, b=1, t=8, p=5) -> torch.Tensor:
    roll = torch.zeros(b, t, p, dtype=torch.bool)
    for cell in cells:
        roll[cell] = True
    return roll


def test_note_f1_two_of_three_right():
    target = _roll([(0, 0, 1), (0, 2, 3), (0, 5, 0)])
    predicted = _roll([(0, 0, 1), (0, 2, 3), (0, 4, 0)])  # the third is one step early: wrong
    scores = note_f1(predicted, target)
    assert scores["true_positive"] == 2 and scores["predicted"] == 3 and scores["target"] == 3
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)


def test_note_f1_wrong_pitch_counts_as_wrong_and_batches_sum():
    target = _roll([(0, 1, 1), (1, 3, 2), (1, 6, 4)], b=2)
    predicted = _roll([(0, 1, 2), (1, 3, 2), (1, 6, 4), (1, 7, 4)], b=2)
    scores = note_f1(predicted, target)
    assert (scores["true_positive"], scores["predicted"], scores["target"]) == (2, 4, 3)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_note_f1_accepts_float_rolls():
    target = _roll([(0, 0, 0), (0, 1, 1)]).float()
    assert note_f1(target.clone(), target)["f1"] == 1.0


def test_note_f1_valid_mask_excludes_steps():
    target = _roll([(0, 1, 1), (0, 6, 2)])
    predicted = _roll([(0, 1, 1), (0, 6, 3), (0, 7, 0)])  # two wrong notes, both past step 4
    valid = torch.zeros(1, 8, dtype=torch.bool)
    valid[:, :4] = True
    unmasked = note_f1(predicted, target)
    assert unmasked["precision"] == pytest.approx(1 / 3) and unmasked["recall"] == pytest.approx(0.5)
    masked = note_f1(predicted, target, valid)
    assert (masked["true_positive"], masked["predicted"], masked["target"]) == (1, 1, 1)
    assert masked["f1"] == 1.0


def test_note_f1_empty_cases():
    empty, some = _roll([]), _roll([(0, 2, 2)])
    nothing = note_f1(empty, empty)
    assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (1.0, 1.0, 1.0)
    missed = note_f1(empty, some)  # predicting nothing when there was a note
    assert (missed["precision"], missed["recall"], missed["f1"]) == (0.0, 0.0, 0.0)
    invented = note_f1(some, empty)  # a note where there was none
    assert (invented["precision"], invented["recall"], invented["f1"]) == (0.0, 1.0, 0.0)
    # Everything outside the mask: nothing to score, counts as a perfect empty match.
    masked = note_f1(some, some, torch.zeros(1, 8, dtype=torch.bool))
    assert (masked["predicted"], masked["target"], masked["f1"]) == (0, 0, 1.0)
