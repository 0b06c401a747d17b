"""The condition the engines share (engines/models/conditioning.py): attributes given one by one, their
training dropout, and where a mode request aims: its median interior target, or a clear segment's
attributes drawn per result."""
import numpy as np
import pytest
import torch

from engines.models.conditioning import (CONDITION_ATTRIBUTES, attribute_dropout, attribute_inputs, attribute_tensors,
                                         drawn_request_attributes, mode_target_pool, mode_targets, request_attributes)

ALL = list(CONDITION_ATTRIBUTES)


def cache_rows(energy, valence, scores, modes) -> np.ndarray:
    """Segment-cache rows with the fields the targets read: energy and valence axes, top scores and modes."""
    rows = np.zeros(len(energy), dtype=[("rebracketing", "f4"), ("temporal_complexity", "f4"), ("axes", "f4", (5,)),
                                        ("scores", "f4", (8,)), ("mode", "u1")])
    rows["axes"][:, 0], rows["axes"][:, 1] = energy, valence
    rows["scores"][np.arange(len(energy)), modes] = scores
    rows["mode"] = modes
    return rows


def test_each_attribute_can_be_given_alone_and_a_mode_aims_inside_its_region():
    names = ["rebracketing", "energy", "valence"]
    values, given = attribute_tensors({"energy": 0.8, "valence": -0.5, "pitch": 3}, names, 2)
    assert values[0].tolist() == pytest.approx([0.0, 0.8, 0.25]) and given[0].tolist() == [0.0, 1.0, 1.0]
    each = attribute_inputs(values, given, "each", 3)
    assert each.shape == (2, 6) and each[0].tolist() == pytest.approx([0.0, 0.8, 0.25, 0.0, 1.0, 1.0])
    assert attribute_inputs(None, None, "each", 3, batch=2).abs().sum() == 0          # nothing given
    assert attribute_inputs(values, given, "shared", 3).shape == (2, 4)
    torch.manual_seed(0)
    kept = attribute_dropout(20000, 7, 0.1, 0.3, "cpu")
    assert kept.mean().item() == pytest.approx(0.9 * 0.7, abs=0.01)
    assert (kept.sum(1) == 0).float().mean().item() == pytest.approx(0.1 + 0.9 * 0.3 ** 7, abs=0.01)
    # a mode fills the axes not asked for with its interior target; rhythm stays free; WHITE adds nothing
    targets = {"RED": {"rebracketing": 0.1, "temporal_complexity": 0.4, "energy": 0.9, "valence": 0.25,
                       "tension": 0.7, "intimacy": 0.2, "motion": 0.8}}
    all_names = ["rebracketing", "temporal_complexity", "energy", "valence", "tension", "intimacy", "motion"]
    asked = request_attributes("RED", {"energy": 0.3, "rebracketing": 0.6}, targets, all_names)
    assert asked == {"energy": 0.3, "rebracketing": 0.6, "valence": -0.5, "tension": 0.7, "intimacy": 0.2,
                     "motion": 0.8}
    assert request_attributes("WHITE", {"energy": 0.3}, targets, all_names) == {"energy": 0.3}
    # the targets: medians of each mode's clearest segments
    rows = np.zeros(4, dtype=[("rebracketing", "f4"), ("temporal_complexity", "f4"), ("axes", "f4", (5,)),
                              ("scores", "f4", (8,)), ("mode", "u1")])
    rows["axes"][:, 0] = [0.2, 0.4, 0.6, 0.8]
    rows["axes"][:, 1] = [-1.0, -1.0, 1.0, 1.0]
    rows["scores"][:, 0] = [0.3, 0.4, 0.9, 0.8]                                    # all BLACK; the last two clearest
    found = mode_targets(rows)
    assert list(found) == ["BLACK"] and found["BLACK"]["energy"] == pytest.approx(0.7)
    assert found["BLACK"]["valence"] == pytest.approx(1.0)                        # unit scale


def test_each_result_draws_its_target_from_the_clear_segments_of_its_mode_and_repeats_for_a_seed():
    # BLACK: the two clearest of four segments (energy 0.6 and 0.8); RED: one segment
    rows = cache_rows([0.2, 0.4, 0.6, 0.8, 0.5], [-1, -1, 1, 1, 0], [0.3, 0.4, 0.9, 0.8, 0.7], [0, 0, 0, 0, 1])
    pool = mode_target_pool(rows, size=64)
    assert sorted(pool) == ["BLACK", "RED"] and len(pool["RED"]) == 1
    assert sorted(row[ALL.index("energy")] for row in pool["BLACK"]) == pytest.approx([0.6, 0.8])
    assert len(mode_target_pool(rows, size=1)["BLACK"]) == 1                         # at most `size` per mode
    every = mode_target_pool(rows, clear_quantile=1.0, size=64)                     # the diffusion finalize's
    assert sorted(row[ALL.index("energy")] for row in every["BLACK"]) == pytest.approx([0.2, 0.4, 0.6, 0.8])
    drawn = drawn_request_attributes("BLACK", {"tension": 0.9}, pool, None, ALL, 40, seed=5)
    assert {round(d["energy"], 4) for d in drawn} == {0.6, 0.8}                      # both clear segments drawn
    assert all(d["tension"] == 0.9 and d["valence"] == pytest.approx(1.0) for d in drawn)   # asked ones kept
    assert "rebracketing" not in drawn[0]                                          # rhythm stays free
    assert drawn == drawn_request_attributes("BLACK", {"tension": 0.9}, pool, None, ALL, 40, seed=5)
    assert drawn != drawn_request_attributes("BLACK", {"tension": 0.9}, pool, None, ALL, 40, seed=6)
    # no pool for the mode: every result aims at the mode's one target; WHITE at what is asked only
    targets = mode_targets(rows)
    alone = drawn_request_attributes("RED", None, {}, targets, ALL, 3, seed=1)
    assert alone == [request_attributes("RED", None, targets, ALL)] * 3 and alone[0]["energy"] == pytest.approx(0.5)
    assert drawn_request_attributes("WHITE", {"energy": 0.2}, pool, targets, ALL, 2, seed=1) == [{"energy": 0.2}] * 2
