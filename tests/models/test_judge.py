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


def test_the_harmony_branch_reads_key_intervals_and_register_of_the_whole_segment():
    model = ChromaticJudge(TINY)
    roll = torch.zeros(1, 2, 64, 88)
    for pitch in (60, 64, 67):                      # a C major triad held through the first 32 steps
        roll[0, 1, :32, pitch - 21] = 1
        roll[0, 0, 0, pitch - 21] = 1
    inside = torch.ones(1, 1, 64)
    f = model.harmony_features(roll, inside)[0]
    k = TINY.key_profiles
    z = f[:12]
    assert torch.argsort(z, descending=True)[:3].sort().values.tolist() == [0, 4, 7]  # C, E, G
    o = 12 + 13 * k                                 # past the histogram and the key profiles' readings
    entropy, intervals, chordal, register, span, density = f[o], f[o + 1:o + 8], f[o + 8], f[o + 9], f[o + 10], f[o + 11]
    assert entropy.item() == pytest.approx(np.log(3) / np.log(12), abs=1e-4)
    # pairs sounding together: C-E (class 4), E-G (3), C-G (5), a third each
    assert intervals.tolist() == pytest.approx([0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 0], abs=1e-5)
    assert chordal.item() == pytest.approx(0.5) and density.item() == pytest.approx(1 / 64)
    assert register.item() == pytest.approx((np.mean([60, 64, 67]) - 60) / 24, abs=1e-4)
    assert span.item() == pytest.approx(7 / 48)
    moved = torch.roll(roll, 2, dims=3)             # up a whole tone: the key profiles' best match is the same
    again = model.harmony_features(moved, inside)[0]
    assert torch.allclose(again[12:12 + k], f[12:12 + k], atol=1e-5)
    assert torch.allclose(again[12 + k:o], f[12 + k:o], atol=1e-4)   # and each reads the same degrees of its key
    assert f[o + 12:o + 17].tolist() == [0, 0, 0, 0, 0]  # a held chord: its top line never moves


def test_the_top_line_moves_as_the_analyzers_skyline_does_under_a_held_bass_and_through_a_rest():
    from engines.music.features import skyline
    from engines.music.notes import notes_to_roll

    # 4/4 at 12 ticks a beat: a low C held two bars under a tune that goes up 2, then 5, then after a rest 12
    tune = segment([(0, 96, 36, 80), (0, 12, 60, 80), (12, 12, 62, 80), (24, 12, 67, 80), (48, 12, 79, 80)])
    assert np.abs(np.diff(skyline(tune.notes))).tolist() == [2, 5, 12]
    roll = torch.from_numpy(notes_to_roll(tune.notes, tune.bar_length, 4, 4, 21, 108))[None].float()
    model = ChromaticJudge(TINY)
    features = model.top_line_features(roll[:, 1], roll[:, 0], torch.tensor([[64.0]]), torch.tensor([[4.6]]))
    assert [x.item() for x in features[:5]] == pytest.approx([1 / 3, 0, 1 / 3, 1 / 3, 0])  # by TOP_LINE_BINS
    assert features[5].item() == pytest.approx(3 / 64) and features[6].item() == pytest.approx(19 / 64)


def test_transposed_copies_are_labelled_as_the_analyzer_hears_them(tmp_path):
    from dataclasses import replace

    from engines.data.prepare import ensure_corpus_cache
    from engines.music.analyzer import ChromaticAnalyzer
    from engines.music.notes import transpose_notes
    from engines.training.judge_trainer import JUDGE_FEATURES, feature_targets, transposed_labels

    cfg = load_config()
    cache = ensure_corpus_cache(cfg)
    rows = cache.split_indices("train")[:12]
    modes, targets, features = transposed_labels(cache, rows, [0, 5], 21, 108, cfg.analyzer, processes=1)
    assert modes.shape == (12, 2) and targets.shape == (12, 2, 7) and features.shape[:2] == (12, 2)
    assert (modes[:, 0] == cache.segments["mode"][rows]).all()   # unmoved: the cache's own labels
    segment = cache.segment(int(rows[3]))
    moved = ChromaticAnalyzer(cfg.analyzer).analyze(replace(segment, notes=transpose_notes(segment.notes, 5)))
    assert MODES[modes[3, 1]] == moved.mode and targets[3, 1, 2] == pytest.approx(moved.axes["energy"], abs=1e-5)
    normalised = feature_targets(features)
    assert normalised.shape == (12, 2, len(JUDGE_FEATURES)) and normalised.min() >= 0 and normalised.max() <= 1
    again = transposed_labels(cache, rows, [0, 5], 21, 108, cfg.analyzer, processes=1)   # read back, not redone
    assert all(np.array_equal(a, b) for a, b in zip(again, (modes, targets, features)))
    from engines.training.judge_trainer import soft_mode_targets

    analyzer = ChromaticAnalyzer(cfg.analyzer)
    scores = soft_mode_targets(modes, targets, analyzer)          # the moved copy's soft scores, from its axes
    assert scores.shape == (12, 2, 8)
    assert scores[3, 1] == pytest.approx([moved.scores[m] for m in MODES], abs=1e-4)
    relabelled = modes.copy()
    relabelled[0, 0] = (modes[0, 0] + 1) % 8                      # a listener's label the axes do not explain
    assert soft_mode_targets(relabelled, targets, analyzer)[0, 0].tolist() == np.eye(8)[relabelled[0, 0]].tolist()


def test_the_soft_target_mixes_the_label_with_the_analyzers_scores():
    from engines.models.chromatic_judge import judge_loss

    torch.manual_seed(0)
    model = ChromaticJudge(TINY).eval()
    batch = {"roll": (torch.rand(4, 2, 64, 88) > 0.97).float(), "metre": torch.zeros(4, dtype=torch.long),
             "log_tempo": torch.full((4,), 4.6), "mode": torch.tensor([0, 1, 2, 3]), "targets": torch.zeros(4, 7)}
    logits = model(batch["roll"], batch["metre"], batch["log_tempo"])[0]
    hard = judge_loss(model, batch, 0.0)[0]
    assert hard.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, batch["mode"]).item(), abs=1e-5)
    scores = torch.full((4, 8), 1 / 8)                           # the analyzer unsure between all modes
    mixed = judge_loss(model, {**batch, "scores": scores}, 0.0, soft_weight=0.5)[0]
    uniform = -logits.log_softmax(1).mean(1).mean()
    assert mixed.item() == pytest.approx(0.5 * hard.item() + 0.5 * uniform.item(), abs=1e-5)
    assert judge_loss(model, {**batch, "scores": scores}, 0.0)[0].item() == pytest.approx(hard.item(), abs=1e-6)
