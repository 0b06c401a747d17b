"""Diversity and the memorisation check on toy embeddings and hand-made segments."""
from __future__ import annotations

import numpy as np
import pytest

from engines.evaluation.diversity import copy_rates, note_similarity, per_mode_diversity
from tests.conftest import scale_melody, segment


def test_per_mode_diversity_has_the_known_values():
    square = np.array([[0, 0], [2, 0], [0, 2], [2, 2]], float)  # centroid (1, 1): squared distance 2 each
    result = per_mode_diversity(np.vstack([square, [[9, 9]]]), ["RED"] * 4 + ["BLUE"])
    assert result["RED"]["intra_class_variance"] == pytest.approx(2.0)
    assert result["RED"]["mean_pairwise_distance"] == pytest.approx((4 * 2 + 2 * np.sqrt(8)) / 6, abs=1e-4)
    assert result["BLUE"] == {"n": 1, "intra_class_variance": None, "mean_pairwise_distance": None}
    assert result["overall"]["n"] == 5


def test_note_similarity_sees_copies_through_transposition():
    melody = segment(scale_melody(2), bars=2)
    up_a_third = segment([(s, d, p + 4, v) for s, d, p, v in scale_melody(2)], bars=2)
    half = segment(scale_melody(2)[:4], bars=2)
    assert note_similarity(melody, melody) == 1.0 and note_similarity(melody, up_a_third) == 1.0
    assert note_similarity(half, melody) == pytest.approx(4 / 8)
    assert note_similarity(segment([], bars=1), melody) == 0.0


def test_copy_rates_find_the_copied_and_the_new():
    training = [segment(scale_melody(4, low=48 + i)) for i in range(0, 24, 3)]
    copied = segment(scale_melody(4, low=51))                                # training[1] exactly
    near = segment(scale_melody(4, low=57)[:15] + [(180, 12, 99, 80)])       # training[3], one note of 16 moved
    new = segment([(0, 192, 40, 80), (0, 192, 47, 80)])
    embed = lambda segs: np.array([[s.notes["pitch"].mean(), len(s.notes)] for s in segs], float)  # noqa: E731
    rates = copy_rates([copied, near, new], training, embed([copied, near, new]), embed(training), k=3)
    assert rates["n"] == 3 and rates["duplicate_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert rates["near_copy_rate"] == pytest.approx(2 / 3, abs=1e-3)         # 15 of 17 notes shared: 0.88
    with pytest.raises(ValueError, match="one row per segment"):
        copy_rates([copied], training, embed([copied, new]), embed(training))
