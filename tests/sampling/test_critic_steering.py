"""The VAE's drawn latents steered by the judge (engines/sampling/critic_steering.py): which rows move and how far,
that the step lowers what the judge reads as off, how the VAE and its generator take it, and that a shared
batch steers each request as it would be steered alone."""
import shutil

import pytest
import torch

from engines.errors import StudioError
from engines.generation import GENERATORS, Request
from engines.config import load_config
from engines.models.chromatic_judge import TrainedJudge
from engines.models.conditioning import attribute_tensors
from engines.models.trained_vae import TrainedVAE, mode_index
from engines.sampling.critic_steering import STEP_SIZE, judge_reader, steered, steering_loss

torch.set_num_threads(1)


JUDGE = f"{load_config().model.checkpoints_dir}/judge.pt"


@pytest.fixture(scope="module")
def steered_vae(vae_checkpoint):
    vae = TrainedVAE.load(vae_checkpoint[0])
    vae.attach_critic(TrainedJudge.load(JUDGE))
    return vae


@pytest.fixture(scope="module")
def shipped_steered_vae():
    vae = TrainedVAE.load(f"{load_config().model.checkpoints_dir}/vae.pt")
    vae.attach_critic(TrainedJudge.load(JUDGE))
    return vae


def _rows(vae, modes: list[str], attributes: list[dict | None], seed=0):
    """What steered() takes for one row per (mode, attributes): z, mode indices, the decoder's condition, the
    asked targets and their flags."""
    names = vae.model.config.attributes
    parts = [(vae.prior_latents(mode, 1, 1.0, seed + i, "fitted"), mode, asked)
             for i, (mode, asked) in enumerate(zip(modes, attributes))]
    z, index, values, given, _ = vae._conditioned(parts)
    asked = [attribute_tensors(a, names, 1) for a in attributes]
    targets, flags = torch.cat([a[0] for a in asked]), torch.cat([a[1] for a in asked])
    return z, index, values, given, targets, flags, judge_reader(vae.critic.model, names)


def test_a_step_moves_every_coordinate_of_an_aimed_row_by_the_step_and_leaves_a_row_with_no_aim(steered_vae):
    vae = steered_vae
    z, modes, values, given, targets, flags, read = _rows(vae, ["GREEN", "WHITE", "WHITE"],
                                                          [None, None, {"energy": 0.9}])

    def decode(latents):
        return vae.model.decode(latents, modes, values, given)

    moved = steered(decode, read, z, modes, targets, flags, 0.775, step_size=0.2)
    assert torch.allclose((moved - z)[0].abs(), torch.full((vae.latent_dim,), 0.2))   # a mode: one signed step
    assert torch.equal(moved[1], z[1])                                               # WHITE, nothing asked
    assert torch.allclose((moved - z)[2].abs(), torch.full((vae.latent_dim,), 0.2))   # asked energy
    assert torch.equal(steered(decode, read, z, modes, targets, flags, 0.775, step_size=0.0), z)


def test_a_step_lowers_what_the_shipped_critic_reads_as_off(shipped_steered_vae):
    vae = shipped_steered_vae
    modes_asked = ["RED", "GREEN", "VIOLET", "BLUE", "YELLOW", "WHITE", "WHITE", "INDIGO"] * 4
    asked = [None, None, {"tension": 0.1}, None, None, {"energy": 0.9, "valence": -0.5}, {"intimacy": 0.2}, None] * 4
    z, modes, values, given, targets, flags, read = _rows(vae, modes_asked, asked, seed=5)
    assert modes.tolist() == [mode_index(m) for m in modes_asked]

    def decode(latents):
        return vae.model.decode(latents, modes, values, given)

    threshold = vae.sample_onset_threshold
    before = steering_loss(decode, read, z, modes, targets, flags, threshold)
    moved = steered(decode, read, z, modes, targets, flags, threshold)
    after = steering_loss(decode, read, moved, modes, targets, flags, threshold)
    assert (after < before).sum() >= 22 and after.sum() < 0.75 * before.sum()   # measured: 27 of 32, 318 -> 189


def test_the_vae_takes_only_a_critic_that_reads_its_rolls(vae_checkpoint):
    vae = TrainedVAE.load(vae_checkpoint[0])
    judge = TrainedJudge.load(JUDGE)
    judge.model.pitch_low = 24
    with pytest.raises(StudioError, match="the VAE's critic reads 64x88 rolls from pitch 24; this VAE writes "
                                          "64x88 from pitch 21"):
        vae.attach_critic(judge)
    assert vae.critic is None
    z = vae.prior_latents("RED", 2, 1.0, 0, "fitted")
    assert torch.equal(vae.steer([(z, "RED", None)])[0], z)   # no critic: drawn as the prior draws


def test_the_judge_is_read_in_unit_scale(shipped_steered_vae):
    names = ["valence", "energy"]
    roll = torch.zeros(1, 2, 64, 88) - 1
    roll[0, :, 0:16, 39] = 1                                    # a held C4 (MIDI 60) from the downbeat
    metre, tempo = torch.tensor([2]), torch.tensor([4.6])
    logits, read = judge_reader(shipped_steered_vae.critic.model, names)(roll, metre, tempo)
    _, raw, _ = shipped_steered_vae.critic.model((roll + 1) / 2, metre, tempo)
    assert logits.shape == (1, 8)
    assert torch.allclose(read[0], torch.stack([(raw[0, 3] + 1) / 2, raw[0, 2]]))   # valence -1..1 -> 0..1


def test_the_studio_steers_by_the_default_step():
    from engines.generation.vae import VAESettings

    assert VAESettings().steer == STEP_SIZE == load_config().generation.sampling.vae.steer


def test_sample_steers_by_default_and_not_at_step_0(steered_vae):
    _, drawn = steered_vae.sample("ORANGE", n=3, seed=4, steer=0.0)
    _, moved = steered_vae.sample("ORANGE", n=3, seed=4)
    assert torch.allclose((moved - drawn).abs(), torch.full_like(drawn, STEP_SIZE))


def test_the_generator_attaches_the_judge_beside_its_checkpoint_and_steers_as_asked(vae_run, tmp_path):
    shutil.copyfile(vae_run[0] / "best.pt", tmp_path / "vae.pt")
    alone = GENERATORS["vae"].load(tmp_path / "vae.pt")
    assert alone.model.critic is None
    assert GENERATORS["vae"].files_beside(tmp_path / "vae.pt") == [tmp_path / "judge.pt"]
    (tmp_path / "judge.pt").write_bytes(b"not a checkpoint")                 # logged; the VAE samples unsteered
    assert GENERATORS["vae"].load(tmp_path / "vae.pt").model.critic is None
    shutil.copyfile(JUDGE, tmp_path / "judge.pt")
    generator = GENERATORS["vae"].load(tmp_path / "vae.pt")
    assert generator.model.critic is not None

    def notes(engine, steer, mode="BLUE", attributes=None):
        request = Request(engine="vae", mode=mode, n=2, seed=9, candidates=1, attributes=attributes,
                          settings={"steer": steer})
        return [s.notes.tolist() for s in engine.run(request)]

    assert notes(generator, 0.0) == notes(alone, 0.0) == notes(alone, 0.3)   # no critic, nothing to steer by
    assert notes(generator, 0.3) != notes(generator, 0.0)
    assert notes(generator, 0.3, "WHITE") == notes(generator, 0.0, "WHITE")   # nothing asked: nothing to aim at
    with pytest.raises(StudioError, match="steer"):
        generator.settings_of(Request(engine="vae", mode="BLUE", settings={"steer": 2}))


def test_a_shared_batch_steers_each_request_as_it_would_be_steered_alone(vae_run, tmp_path):
    shutil.copyfile(vae_run[0] / "best.pt", tmp_path / "vae.pt")
    shutil.copyfile(JUDGE, tmp_path / "judge.pt")
    generator = GENERATORS["vae"].load(tmp_path / "vae.pt")
    requests = [Request(engine="vae", mode="RED", n=2, seed=1, candidates=1),
                Request(engine="vae", mode="WHITE", n=1, seed=2, candidates=1, attributes={"energy": 0.8}),
                Request(engine="vae", mode="GREEN", n=1, seed=3, candidates=1, settings={"steer": 0.0}),
                Request(engine="vae", mode="INDIGO", n=1, seed=4, candidates=1, settings={"steer": 0.4})]
    alone = [[s.notes.tolist() for s in generator.run(r)] for r in requests]

    class Job:
        def __init__(self, request):
            self.request, self.rows, self.result, self.error = request, request.n, None, None

        def fail(self, exc):
            self.error = exc

        def finish(self, read):
            self.result = [s.notes.tolist() for s in read()]

    jobs = [Job(r) for r in requests]
    generator.run_batch(jobs)
    assert [job.error for job in jobs] == [None] * 4
    assert [job.result for job in jobs] == alone
