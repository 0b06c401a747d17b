"""The roll denoiser (engines/models/denoiser.py): shapes, a first checkpoint's shared flag, the unit roll,
the loss and the checkpoint round trip."""

import torch

from engines.data.torch_dataset import WHITE_INDEX
from engines.models.denoiser import (RollDenoiser, checkpoint_payload, diffusion_loss, model_from_checkpoint,
                                     roll_to_unit)
from engines.sampling.diffusion import NoiseScheduler

torch.set_num_threads(1)


# ---- the denoiser ---------------------------------------------------------------------------------------------
def test_denoiser_shapes_and_identity_start(diffusion_cfg, diffusion_batch):
    model = RollDenoiser(diffusion_cfg.model.diffusion, 64, 88)
    x = torch.randn(8, 2, 64, 88)
    values = diffusion_batch["conditions"][:, model.attribute_columns]
    out = model(x, torch.arange(8), diffusion_batch["mode"], values, None, diffusion_batch["metre"])
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer: training starts from "predict 0"
    assert model(x[:2], torch.tensor([1, 2]), torch.tensor([0, WHITE_INDEX]), None, None,
                 torch.tensor([0, 1])).shape == (2, 2, 64, 88)
    # every attribute is given or not on its own: the condition differs with each subset
    t, mode, metre = torch.arange(8), diffusion_batch["mode"], diffusion_batch["metre"]
    given = torch.zeros_like(values)
    given[:, 2] = 1                                                        # energy alone
    alone = model.condition(t, mode, values, given, metre)
    assert not torch.allclose(alone, model.condition(t, mode, None, None, metre))
    assert not torch.allclose(alone, model.condition(t, mode, values, None, metre))


def test_a_first_diffusion_checkpoint_with_one_shared_flag_still_loads(diffusion_cfg):
    from dataclasses import replace

    from engines.models.denoiser import checkpoint_payload, model_from_checkpoint

    old = RollDenoiser(replace(diffusion_cfg.model.diffusion, attributes=["rebracketing", "temporal_complexity"],
                               attribute_mask="shared"), 64, 88)
    payload = checkpoint_payload(old, {})
    for key in ("attributes", "attribute_mask", "attribute_dropout"):      # as the first checkpoints were
        payload["config"].pop(key)
    loaded = model_from_checkpoint(payload)
    assert loaded.config.attribute_mask == "shared" and loaded.attribute_mlp.in_features == 3


def test_roll_to_unit_marks_onsets_and_sustain(diffusion_batch):
    unit = roll_to_unit(diffusion_batch["roll"])
    assert set(unit.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(unit[:, 0] > 0, diffusion_batch["roll"][:, 0] > 0.5)
    assert torch.equal(unit[:, 1] > 0, diffusion_batch["roll"][:, 1] > 0)


def test_loss_falls_when_fitting_one_batch(diffusion_cfg, diffusion_batch):
    torch.manual_seed(0)
    config = diffusion_cfg.model.diffusion
    model = RollDenoiser(config, 64, 88)
    scheduler = NoiseScheduler(config.num_steps, config.noise_schedule, config.prediction)
    optimizer = torch.optim.Adam(model.parameters(), 2e-3)
    generator = torch.Generator().manual_seed(5)
    model.eval()
    before = diffusion_loss(model, scheduler, diffusion_batch, 0.0, torch.Generator().manual_seed(9)).item()
    model.train()
    for _ in range(40):
        loss = diffusion_loss(model, scheduler, diffusion_batch, 0.1, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    after = diffusion_loss(model, scheduler, diffusion_batch, 0.0, torch.Generator().manual_seed(9)).item()
    assert after < 0.7 * before


def test_checkpoint_round_trip(diffusion_cfg, tmp_path):
    model = RollDenoiser(diffusion_cfg.model.diffusion, 64, 88)
    torch.save(checkpoint_payload(model, {"val_loss": 1.0}), tmp_path / "d.pt")
    back = model_from_checkpoint(torch.load(tmp_path / "d.pt", weights_only=True))
    assert back.config == model.config
    for a, b in zip(model.state_dict().values(), back.state_dict().values()):
        assert torch.equal(a, b)
