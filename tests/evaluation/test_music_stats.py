"""Musical statistics and distribution overlap on hand-made segments with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from engines.evaluation.music_stats import (compare_sets, empty_beat_rate, groove_consistency, overlap_area,
                                            pitch_class_entropy, pitch_range, polyphony, scale_consistency,
                                            segment_statistics)
from tests.conftest import segment

C_MAJOR_UP = [(i * 6, 6, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]  # one 4/4 bar


def test_pitch_statistics_of_a_c_major_scale():
    scale = segment(C_MAJOR_UP, bars=1)
    assert pitch_class_entropy(scale) == pytest.approx(2.75)   # C twice, six others once: 0.5 + 6 * 0.375 bits
    assert scale_consistency(scale) == 1.0 and pitch_range(scale) == 12
    with_f_sharp = segment(C_MAJOR_UP + [(47, 1, 66, 80)], bars=1)
    assert scale_consistency(with_f_sharp) == pytest.approx(8 / 9)  # G major holds the F# but not the F
    twelve = segment([(i * 4, 4, 60 + i, 80) for i in range(12)], bars=1)
    assert pitch_class_entropy(twelve) == pytest.approx(math.log2(12))


def test_groove_empty_beats_and_polyphony():
    steady = segment([(b * 48 + q * 12, 12, 60, 80) for b in range(2) for q in range(4)], bars=2)
    assert groove_consistency(steady) == 1.0 and empty_beat_rate(steady) == 0.0
    changed = segment([(q * 12, 12, 60, 80) for q in range(4)] + [(48, 48, 60, 80)], bars=2)
    assert groove_consistency(changed) == pytest.approx(1 - 3 / 48)  # three of 48 positions differ
    assert empty_beat_rate(changed) == pytest.approx(3 / 8)           # beats 6, 7, 8 start nothing
    chord = segment([(0, 48, 60, 80), (0, 48, 64, 80), (0, 48, 67, 80)], bars=1)
    assert polyphony(chord) == 3.0
    chord_then_line = segment([(0, 24, 60, 80), (0, 24, 64, 80), (24, 24, 72, 80)], bars=1)
    assert polyphony(chord_then_line) == pytest.approx(1.5)            # half the bar 2 pitches, half 1
    assert polyphony(segment([], bars=1)) == 0.0


def test_overlap_area_is_one_for_the_same_distribution_and_near_zero_for_far_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 4000)
    assert overlap_area(a, a) == pytest.approx(1.0, abs=1e-3)
    assert overlap_area(a, rng.normal(10, 1, 4000)) < 0.01
    # two unit Gaussians one apart overlap 2 * Phi(-1/2) = 0.617 (KDE widens both a little)
    assert overlap_area(a, rng.normal(1, 1, 4000)) == pytest.approx(0.617, abs=0.03)
    assert overlap_area(np.full(5, 3.0), np.full(5, 3.0)) == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="two values or more"):
        overlap_area(np.ones(1), a)


def test_compare_sets_reports_every_statistic_of_both_sets():
    real = [segment(C_MAJOR_UP, bars=1), segment(C_MAJOR_UP[:6], bars=1), segment(C_MAJOR_UP[2:], bars=1)]
    generated = [segment([(0, 48, 61, 80), (0, 48, 66, 80)], bars=1)] * 3 + [segment([], bars=1)]
    stats = segment_statistics(generated)
    assert len(stats["polyphony"]) == 3  # the empty segment is left out
    table = compare_sets(real, generated)
    assert table["polyphony"]["generated"]["mean"] == 2.0 and table["polyphony"]["real"]["mean"] == 1.0
    assert table["pitch_range"]["overlap"] < 0.2 and 0 <= table["scale_consistency"]["overlap"] <= 1
    assert compare_sets(real, generated[-1:])["polyphony"]["overlap"] is None
