"""The learned chromatic judge: shapes, masking of the steps outside a segment, a tiny training run and the
loaded judge's readings (engines/models/chromatic_judge.py, engines/training/judge_trainer.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.models.chromatic_judge import JUDGE_ATTRIBUTES, ChromaticJudge, TrainedJudge
from engines.models.judge_config import JudgeConfig
from engines.music.analyzer import MODES
from tests.conftest import scale_melody, segment

TINY = JudgeConfig(base_channels=8, channel_mults=[1, 2], condition_dim=16, embedding_dim=16)


def test_judge_shapes_and_that_steps_outside_the_segment_do_not_count():
    torch.manual_seed(0)
    model = ChromaticJudge(TINY).eval()
    for block in model.blocks:  # as if trained: blocks start as the identity, where the condition has no say
        torch.nn.init.normal_(block.conv2.weight, std=0.2)
    roll = torch.zeros(2, 2, 64, 88)
    roll[:, :, :24, 30] = 1
    metre = torch.tensor([4, 4])            # 3/4: a 4-bar segment fills 48 of 64 steps
    logits, attributes, embedding = model(roll, metre, torch.log(torch.tensor([100.0, 100.0])))
    assert logits.shape == (2, len(MODES)) and attributes.shape == (2, len(JUDGE_ATTRIBUTES))
    assert embedding.shape == (2, 16)
    stray = roll.clone()
    stray[1, :, 56:, 60] = 1               # notes past the segment's end
    assert torch.allclose(model(stray, metre, torch.full((2,), 4.6))[2][1],
                          model(roll, metre, torch.full((2,), 4.6))[2][1])  # pooling reads the segment only
    slower = model(roll, metre, torch.log(torch.tensor([100.0, 50.0])))[2]
    assert not torch.allclose(slower[0], slower[1])  # the tempo changes what it hears


def test_a_tiny_judge_trains_and_reads_segments(tmp_path):
    from engines.training.judge_trainer import train_judge

    overrides = ["model.judge.base_channels=8", "model.judge.channel_mults=[1,2]", "model.judge.condition_dim=16",
                 "model.judge.embedding_dim=16", "model.judge.epochs=1", "model.judge.batch_size=32"]
    best = train_judge(load_config(overrides=overrides), tmp_path / "run", limit=128, workers=0)
    assert 0 <= best["val_mode_acc"] <= 1 and np.array(best["confusion"]).shape == (8, 8)
    assert np.array(best["confusion"]).sum() == 32 and "val_mae_energy" in best
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1
    judge = TrainedJudge.load(tmp_path / "run" / "best.pt")
    melody = segment(scale_melody(4))
    (reading,) = judge.judge([melody])
    assert reading["mode"] in MODES and sum(reading["scores"].values()) == pytest.approx(1, abs=1e-3)
    assert set(reading["attributes"]) == set(JUDGE_ATTRIBUTES)
    assert judge.embed([melody, melody]).shape == (2, 16)
    assert judge.embed([]).shape == (0, 16)
    from engines.evaluation.judge_eval import evaluate_judge
    from engines.training.model_card import ship

    report = evaluate_judge(str(tmp_path / "run" / "best.pt"), load_config(), test_limit=40)
    assert report["n"] == 40 and np.array(report["confusion"]).sum() == 40
    assert report["accuracy"] == pytest.approx(np.trace(np.array(report["confusion"])) / 40, abs=1e-4)
    assert set(report["attribute_mae"]) == set(JUDGE_ATTRIBUTES)
    (tmp_path / "eval.json").write_text(json.dumps(report))
    ship("judge", tmp_path / "run", tmp_path / "out", str(tmp_path / "eval.json"))
    card = (tmp_path / "out" / "judge.md").read_text()
    assert "| mode accuracy, 40 test segments | >= 90 % |" in card and "| BLACK | " in card
    assert judge.embed([segment(scale_melody(2), bars=2)]).shape == (1, 16)  # read with silence after bar 2
    with pytest.raises(StudioError, match="up to 4 bars"):
        judge.judge([segment(scale_melody(6), bars=6)])
    with pytest.raises(StudioError, match="not a chromatic judge"):
        torch.save({"engine": "vae"}, tmp_path / "vae.pt")
        TrainedJudge.load(tmp_path / "vae.pt")
