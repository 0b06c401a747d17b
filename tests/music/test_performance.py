"""engines/music/performance.py and engines/generation/musical.py: the parallel major or minor, dynamics, and
the checks of tempo, metre, scale, instrument and dynamics every engine's request goes through."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engines.errors import StudioError
from engines.generation.base import Request
from engines.generation.musical import METRE_NAMES, check_metre_kept, check_musical, metre_of, perform
from engines.music.notes import TICKS_PER_QUARTER
from engines.music.performance import (BAR_ACCENT, BEAT_ACCENT, DYNAMICS, OFFBEAT, at_level, beat_ticks, heard_key, in_scale,
                                       shape_dynamics)
from tests.conftest import segment

Q = TICKS_PER_QUARTER


def melody(pitches, ts=(4, 4), step=Q, velocity=80):
    """One note per `step` ticks, in order, over as many 4-bar segments' bars as it takes."""
    return segment([(i * step, step, p, velocity) for i, p in enumerate(pitches)], ts=ts)


# C major: scale up and down with the tonic triad leaned on, so that the key heard is unambiguous.
C_MAJOR = [60, 64, 67, 72, 71, 69, 67, 65, 64, 62, 60, 67, 64, 60, 62, 64]
A_MINOR = [57, 60, 64, 69, 68, 65, 64, 62, 60, 59, 57, 64, 60, 57, 59, 60]


def test_a_major_melody_moves_to_its_parallel_minor_and_back():
    major = melody(C_MAJOR)
    assert heard_key(major) == (0, True)
    minor = in_scale(major, "minor")
    assert heard_key(minor) == (0, False)
    moved = dict(zip(major.notes["pitch"].tolist(), minor.notes["pitch"].tolist()))
    assert moved[64] == 63 and moved[69] == 68      # the 3rd and the 6th go down a semitone
    assert moved[71] == 71 and moved[67] == 67      # the leading tone and the 5th stay (harmonic minor)
    assert np.array_equal(major.notes[["start", "duration"]], minor.notes[["start", "duration"]])
    back = in_scale(minor, "major")
    assert heard_key(back) == (0, True)
    assert back.notes["pitch"].tolist() == major.notes["pitch"].tolist()


def test_a_melody_already_in_the_scale_asked_is_left_as_it_is():
    tune = melody(A_MINOR)
    assert heard_key(tune) == (9, False)
    assert in_scale(tune, "minor") is tune
    assert in_scale(tune, None) is tune
    major = in_scale(tune, "major")
    assert heard_key(major) == (9, True)
    assert sorted(set(major.notes["pitch"].tolist()) - set(tune.notes["pitch"].tolist())) == [61, 66]   # C#, F#


def test_dynamics_accent_the_bar_and_beat_and_keep_the_level_as_their_mean():
    flat = melody([60] * 32, step=Q // 2)   # one pitch in eighths, on and off the beat: only the metre shapes it
    for marking, level in DYNAMICS.items():
        shaped = shape_dynamics(flat, marking)
        velocity, starts = shaped.notes["velocity"].astype(int), shaped.notes["start"]
        assert abs(velocity.mean() - level) < 1.0
        on_bar = velocity[starts % flat.bar_length == 0]
        on_beat = velocity[(starts % Q == 0) & (starts % flat.bar_length != 0)]
        off_beat = velocity[starts % Q != 0]
        assert abs(on_bar.mean() - off_beat.mean() - (BAR_ACCENT - OFFBEAT)) <= 1
        assert abs(on_beat.mean() - off_beat.mean() - (BEAT_ACCENT - OFFBEAT)) <= 1
    assert round(float(shape_dynamics(flat).notes["velocity"].mean())) == DYNAMICS["mf"]
    with pytest.raises(StudioError, match="unknown dynamics 'fff'"):
        shape_dynamics(flat, "fff")


def test_the_top_of_the_texture_sings_over_the_bass():
    shaped = shape_dynamics(segment([(0, Q, 48, 80), (0, Q, 72, 80), (Q, Q, 48, 80), (Q, Q, 72, 80)])).notes
    velocity = dict(zip(zip(shaped["start"].tolist(), shaped["pitch"].tolist()), shaped["velocity"].tolist()))
    assert velocity[(0, 72)] > velocity[(0, 48)] and velocity[(Q, 72)] > velocity[(Q, 48)]
    assert velocity[(0, 72)] > velocity[(Q, 72)]   # the bar's start over its second beat


def test_performed_velocities_are_scaled_to_the_level_with_their_shape_kept():
    played = segment([(0, Q, 60, 100), (Q, Q, 62, 50), (2 * Q, Q, 64, 75)])
    soft = at_level(played, "p")
    assert soft.notes["velocity"].tolist() == [65, 33, 49]
    assert at_level(played, None) is played


def test_compound_metres_count_dotted_beats():
    assert beat_ticks(4, 4) == Q and beat_ticks(3, 4) == Q and beat_ticks(2, 2) == 2 * Q
    assert beat_ticks(6, 8) == 3 * Q // 2 and beat_ticks(12, 8) == 3 * Q // 2 and beat_ticks(3, 8) == Q // 2


def test_perform_sets_tempo_instrument_scale_and_dynamics():
    request = Request(tempo=90, instrument=41, scale="minor", dynamics="f")
    performed = perform(melody(C_MAJOR), request)
    assert performed.tempo_qpm == 90.0 and performed.meta["program"] == 40
    assert heard_key(performed) == (0, False)
    assert abs(performed.notes["velocity"].mean() - DYNAMICS["f"]) < 1.0
    untouched = perform(melody(C_MAJOR), Request())
    assert untouched.tempo_qpm == 100.0 and "program" not in untouched.meta
    assert untouched.notes["pitch"].tolist() == C_MAJOR


@pytest.mark.parametrize("field, value, message", [
    ("tempo", 500, r"tempo must lie in 30..300 BPM, got 500"),
    ("tempo", "fast", r"tempo must be a number of beats per minute, got 'fast'"),
    ("metre", "7/8", r"unknown metre '7/8'; the engines write 2/4, 6/8"),
    ("scale", "dorian", r"unknown scale 'dorian'; choose major or minor"),
    ("instrument", 0, r"instrument must be a General MIDI program 1..128"),
    ("instrument", 41.5, r"instrument must be a General MIDI program 1..128"),
    ("dynamics", "fff", r"unknown dynamics 'fff'; choose one of pp, p, mp, mf, f, ff"),
])
def test_a_bad_musical_setting_is_named(field, value, message):
    with pytest.raises(StudioError, match=message):
        check_musical(Request(**{field: value}))


def test_metres_are_the_corpus_metres_and_a_kept_segment_keeps_its_own():
    assert metre_of("3/4") == (3, 4) and metre_of(" 6/8 ") == (6, 8) and metre_of("") is None
    assert "3/4" in METRE_NAMES and "4/4" in METRE_NAMES and "7/8" not in METRE_NAMES
    check_musical(Request(tempo=90, metre="3/4", scale="major", instrument=41, dynamics="pp"))
    in_four = segment([(0, Q, 60, 80)])
    check_metre_kept(SimpleNamespace(metre="4/4"), in_four)
    with pytest.raises(StudioError, match="the segment to start from is in 4/4 and keeps its metre"):
        check_metre_kept(SimpleNamespace(metre="3/4"), in_four)


def test_a_result_that_keeps_bars_of_a_segment_keeps_its_key():
    kept = melody(C_MAJOR)
    performed = perform(melody(C_MAJOR), Request(scale="minor", tempo=80, init_midi=kept))
    assert performed.notes["pitch"].tolist() == C_MAJOR and performed.tempo_qpm == 80.0
