"""Diversity on toy embeddings and hand-made segments; the memorisation check against the shipped corpus."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engines.evaluation.diversity import IDIOM_TWINS, copy_rates, note_similarity, per_mode_diversity
from engines.music.notes import transpose_notes
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


def test_copy_rates_check_every_training_segment_and_tell_idioms_from_rare_passages():
    from engines.config import load_config
    from engines.data.prepare import ensure_corpus_cache
    from engines.generation.copies import CopyIndex

    index = CopyIndex.build(ensure_corpus_cache(load_config()))
    twins = {int(row): index.near_twins(int(row), limit=60) for row in index.rows[::997]}
    idiom = next(row for row, n in twins.items() if n >= IDIOM_TWINS)    # a formula the corpus repeats
    rare = next(row for row, n in twins.items() if n == 0)              # a passage of one piece
    assert index.near_twins(idiom) >= twins[idiom]    # a longer shortlist finds at least as many
    copies = []
    for row in (idiom, rare):                          # copied a fourth up: the check sees through transposition
        copy = index.cache.segment(row)
        copies.append(replace(copy, notes=transpose_notes(copy.notes, 5, 21, 108)))
    new = segment([(0, 192, 40, 80), (0, 192, 47, 80), (96, 96, 53, 80)])
    rates = copy_rates(copies + [new], index)
    assert rates["n"] == 3 and rates["duplicate_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert rates["near_copy_rate"] == pytest.approx(2 / 3, abs=1e-3)
    assert rates["rare_near_copy_rate"] == pytest.approx(1 / 3, abs=1e-3)   # only the rare passage counts
    assert copy_rates([segment([], bars=1)], index)["near_copy_rate"] is None
