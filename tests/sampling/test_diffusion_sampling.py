"""Noise schedules and samplers (engines/sampling/diffusion.py), pure, against closed forms and an oracle
denoiser: DDPM, DDIM, DPM-Solver++, inpainting and classifier guidance's shift."""
import math

import numpy as np
import pytest
import torch

from engines.errors import StudioError
from engines.sampling.diffusion import Inpainting, NoiseScheduler, guided_eps, make_betas, sample_loop

torch.set_num_threads(1)


# ---- schedules --------------------------------------------------------------------------------------------------
def test_linear_schedule_matches_ddpm():
    scheduler = NoiseScheduler(1000, "linear", "epsilon")
    reference = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(scheduler.alpha_bar.numpy(), reference, rtol=1e-10)
    assert scheduler.alpha_bar[-1].item() == pytest.approx(4.04e-5, rel=0.01)  # DDPM's T = 1000 end point


def test_cosine_schedule_matches_its_closed_form():
    scheduler = NoiseScheduler(1000, "cosine", "v")
    f = lambda t: math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    for t in (0, 250, 500, 900):
        assert scheduler.alpha_bar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert (scheduler.alpha_bar.diff() < 0).all() and 0 < scheduler.alpha_bar[-1] < 1e-4
    assert make_betas("cosine", 1000).max().item() == pytest.approx(0.999)  # the cap


def test_schedule_errors_name_the_input():
    with pytest.raises(StudioError, match="noise_schedule 'sigmoid'"):
        NoiseScheduler(1000, "sigmoid")
    with pytest.raises(StudioError, match="prediction 'score'"):
        NoiseScheduler(1000, "cosine", "score")
    with pytest.raises(StudioError, match=r"steps must lie in 1..100"):
        NoiseScheduler(100).timesteps(101)


def test_timesteps_run_from_pure_noise_down_to_zero():
    scheduler = NoiseScheduler(1000)
    assert scheduler.timesteps(1) == [999]
    grid = scheduler.timesteps(50)
    assert len(grid) == 50 and grid[0] == 999 and grid[-1] == 0 and grid == sorted(grid, reverse=True)
    assert scheduler.timesteps(1000) == list(range(999, -1, -1))


# ---- forward process and parameterisations ------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["epsilon", "v", "x0"])
def test_split_inverts_the_training_target(prediction):
    scheduler = NoiseScheduler(1000, "cosine", prediction)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 2, 8, 6, generator=g), torch.randn(4, 2, 8, 6, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    x_t = scheduler.add_noise(x0, noise, t)
    x0_back, eps_back = scheduler.split(scheduler.training_target(x0, noise, t), x_t, t)
    torch.testing.assert_close(eps_back, noise, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(x0_back[:3], x0[:3], atol=1e-4, rtol=1e-4)  # at t=999 x0 from eps is ill-posed


def test_add_noise_has_the_closed_form_statistics():
    scheduler = NoiseScheduler(1000, "linear")
    x0 = torch.ones(20000)
    t = torch.full((20000,), 300)
    x_t = scheduler.add_noise(x0[:, None], torch.randn(20000, 1, generator=torch.Generator().manual_seed(1)), t)
    a = scheduler.alpha_bar[300].item()
    assert x_t.mean().item() == pytest.approx(math.sqrt(a), abs=0.02)
    assert x_t.std().item() == pytest.approx(math.sqrt(1 - a), abs=0.02)


# ---- samplers -------------------------------------------------------------------------------------------------
def _oracle(scheduler, x0):
    """A perfect denoiser of a single known sample."""
    return lambda x_t, t: (x0, scheduler.eps_from_x0(x0, x_t, t))


@pytest.mark.parametrize("sampler,steps,eta", [("ddim", 10, 0.0), ("ddim", 50, 1.0), ("ddpm", 25, 0.0),
                                               ("ddpm", 1000, 0.0), ("dpmsolver++", 10, 0.0)])
def test_samplers_land_on_the_sample_an_oracle_denoiser_knows(sampler, steps, eta):
    scheduler = NoiseScheduler(1000, "cosine", "v")
    x0 = torch.full((2, 2, 8, 6), -1.0)
    x0[:, 0, 3, 2] = 1
    out = sample_loop(scheduler, _oracle(scheduler, x0), x0.shape, steps, sampler, eta,
                      torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x0)


def test_dpm_solver_converges_to_the_ode_solution_ddim_finds():
    """DPM-Solver++ and DDIM (eta 0) solve the same probability-flow ODE: with more steps the solver's sample
    approaches the fine (DDIM, 1000 steps) solution from the same noise."""
    scheduler = NoiseScheduler(1000, "cosine", "x0")

    def smooth(x_t, t):  # a posterior mean that depends on the noise level
        a = scheduler.alpha_bar[t].float().view(-1, 1)
        x0 = torch.tanh(a.sqrt() * x_t * 2)
        return x0, scheduler.eps_from_x0(x0, x_t, t)

    def run(sampler, steps):
        return sample_loop(scheduler, smooth, (64, 16), steps, sampler, generator=torch.Generator().manual_seed(3))

    fine = run("ddim", 1000)
    errors = [(run("dpmsolver++", n) - fine).abs().mean().item() for n in (5, 20, 200)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.01
    assert torch.equal(run("dpmsolver++", 20), run("dpmsolver++", 20))
    with pytest.raises(StudioError, match="not dpmsolver"):
        sample_loop(scheduler, smooth, (1, 4), 5, "dpmsolver++",
                    inpainting=Inpainting(torch.zeros(1, 4), torch.ones(1, 4, dtype=torch.bool), resample=2))


def test_ddim_step_follows_song_et_al():
    scheduler = NoiseScheduler(1000, "linear")
    x0, eps = torch.tensor([0.5]), torch.tensor([-0.3])
    a, a_prev = scheduler.alpha_bar[600].item(), scheduler.alpha_bar[400].item()
    expected = math.sqrt(a_prev) * 0.5 + math.sqrt(1 - a_prev) * -0.3
    assert scheduler.ddim_step(x0, eps, 600, 400).item() == pytest.approx(expected, rel=1e-6)
    # eta = 1: DDPM's posterior variance, drawn from the noise given
    sigma = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    got = scheduler.ddim_step(x0, eps, 600, 400, eta=1.0, noise=torch.tensor([1.0])).item()
    assert got == pytest.approx(math.sqrt(a_prev) * 0.5 + math.sqrt(1 - a_prev - sigma ** 2) * -0.3 + sigma, rel=1e-6)


def test_ddpm_step_is_the_posterior_of_ho_et_al():
    scheduler = NoiseScheduler(1000, "linear")
    t = 500
    beta, a, a_prev = scheduler.betas[t].item(), scheduler.alpha_bar[t].item(), scheduler.alpha_bar[t - 1].item()
    x0, x_t = torch.tensor([0.2]), torch.tensor([0.7])
    mean = math.sqrt(a_prev) * beta / (1 - a) * 0.2 + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * 0.7
    variance = beta * (1 - a_prev) / (1 - a)
    got = scheduler.ddpm_step(x0, x_t, t, t - 1, noise=torch.tensor([2.0])).item()
    assert got == pytest.approx(mean + 2 * math.sqrt(variance), rel=1e-6)


def test_deterministic_ddim_repeats_and_seeds_differ():
    scheduler = NoiseScheduler(100)
    denoise = lambda x_t, t: scheduler.split(0.5 * x_t, x_t, t)  # noqa: E731  (any fixed function)
    run = lambda seed: sample_loop(scheduler, denoise, (1, 4), 10, "ddim", 0.0, torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3)) and not torch.equal(run(3), run(4))


def test_inpainting_keeps_the_known_part_and_on_step_can_stop():
    scheduler = NoiseScheduler(100, "cosine", "epsilon")
    known = torch.linspace(-1, 1, 8).view(1, 8)
    mask = torch.tensor([[True] * 4 + [False] * 4])
    denoise = lambda x_t, t: (torch.zeros_like(x_t), scheduler.eps_from_x0(torch.zeros_like(x_t), x_t, t))  # noqa: E731
    out = sample_loop(scheduler, denoise, (1, 8), 20, "ddpm", generator=torch.Generator().manual_seed(0),
                      inpainting=Inpainting(known, mask))
    torch.testing.assert_close(out[mask], known[mask])
    torch.testing.assert_close(out[~mask], torch.zeros(4))  # the denoiser's answer where nothing is kept
    seen = []
    sample_loop(scheduler, denoise, (1, 8), 20, on_step=lambda i, n, x0: seen.append((i, n)) or i == 4)
    assert seen == [(i, 20) for i in range(5)]


def test_classifier_guidance_shifts_eps_against_the_gradient():
    scheduler = NoiseScheduler(1000, "linear")
    eps, grad = torch.zeros(2, 3), torch.ones(2, 3)
    t = torch.tensor([100, 900])
    out = guided_eps(eps, grad, scheduler, t, scale=2.0)
    for row, step in enumerate(t.tolist()):
        expected = -2.0 * math.sqrt(1 - scheduler.alpha_bar[step].item())
        torch.testing.assert_close(out[row], torch.full((3,), expected, dtype=out.dtype))


def test_sampler_errors_name_the_input():
    scheduler = NoiseScheduler(100)
    with pytest.raises(StudioError, match="sampler 'euler'"):
        sample_loop(scheduler, None, (1, 2), 5, "euler")
    with pytest.raises(StudioError, match="eta must lie"):
        sample_loop(scheduler, None, (1, 2), 5, "ddim", eta=2.0)
