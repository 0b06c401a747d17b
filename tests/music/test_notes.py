"""engines/music/notes.py: note cleaning, metre arithmetic, and the piano roll."""
import numpy as np
import pytest

from engines.music.notes import (NOTE_DTYPE, TICKS_PER_QUARTER, Segment, bar_ticks, beat_ticks, clean_notes,
                                 make_notes, notes_to_roll, roll_to_notes, ticks_per_step)
from tests.conftest import note_tuples


def test_make_notes_sorts_and_pads_track():
    notes = make_notes([(12, 6, 64, 80), (0, 12, 67, 70), (0, 12, 60, 90, 2)])
    assert notes.dtype == NOTE_DTYPE
    assert [(int(n["start"]), int(n["pitch"]), int(n["track"])) for n in notes] == [(0, 60, 2), (0, 67, 0), (12, 64, 0)]
    assert len(make_notes([])) == 0 and make_notes([]).dtype == NOTE_DTYPE


def test_clean_notes_keeps_longest_of_same_onset_and_pitch():
    notes = make_notes([(0, 12, 60, 80), (0, 24, 60, 50), (0, 6, 60, 90), (0, 12, 64, 80)])
    cleaned = clean_notes(notes)
    assert note_tuples(cleaned, velocity=True) == [(0, 12, 64, 80), (0, 24, 60, 50)]


def test_clean_notes_cuts_overlap_of_same_pitch_only():
    notes = make_notes([(0, 24, 60, 80), (12, 24, 60, 70), (6, 48, 64, 80), (12, 12, 67, 80)])
    assert note_tuples(clean_notes(notes)) == [(0, 12, 60), (6, 48, 64), (12, 12, 67), (12, 24, 60)]


def test_clean_notes_drops_zero_durations_and_keeps_order():
    notes = make_notes([(24, 0, 60, 80), (12, 12, 62, 80), (0, 12, 60, 80)])
    cleaned = clean_notes(notes)
    assert [(int(n["start"]), int(n["pitch"])) for n in cleaned] == [(0, 60), (12, 62)]
    assert len(clean_notes(np.zeros(0, NOTE_DTYPE))) == 0


def test_clean_notes_is_idempotent():
    rng = np.random.default_rng(0)
    rows = [(int(rng.integers(0, 96)), int(rng.integers(1, 30)), int(rng.integers(60, 66)), 80) for _ in range(80)]
    once = clean_notes(make_notes(rows))
    assert note_tuples(clean_notes(once)) == note_tuples(once)
    ends = {}
    for start, duration, pitch in note_tuples(once):  # no two notes of one pitch overlap
        assert start >= ends.get(pitch, -1)
        ends[pitch] = start + duration


@pytest.mark.parametrize("ts, beat, bar", [
    ((4, 4), 12, 48), ((3, 4), 12, 36), ((6, 8), 18, 36), ((2, 2), 24, 48), ((12, 8), 18, 72),
    ((4, 2), 24, 96), ((3, 8), 6, 18), ((9, 8), 18, 54), ((3, 2), 24, 72),
])
def test_beat_and_bar_ticks(ts, beat, bar):
    assert beat_ticks(*ts) == beat
    assert bar_ticks(*ts) == bar


def test_segment_length_and_seconds():
    seg = Segment(notes=np.zeros(0, NOTE_DTYPE), ts_num=3, ts_den=4, num_bars=4, tempo_qpm=120.0)
    assert seg.bar_length == 36 and seg.length == 144
    assert seg.seconds == pytest.approx(144 / TICKS_PER_QUARTER * 0.5)


@pytest.mark.parametrize("ts, steps_per_beat, step", [
    ((4, 4), 4, 3), ((3, 4), 4, 3), ((4, 2), 4, 6), ((12, 8), 4, 6), ((2, 2), 4, 3), ((4, 4), 2, 6),
    ((4, 4), 12, 1),
])
def test_ticks_per_step(ts, steps_per_beat, step):
    assert ticks_per_step(bar_ticks(*ts), steps_per_beat) == step
    assert bar_ticks(*ts) <= 4 * steps_per_beat * step  # a bar always fits its share of the roll


def _grid_rows(bar_length: int, step: int, bars: int = 4):
    """On-grid notes with chords, repeated pitches, long and one-step notes, velocities >= 64."""
    length = bar_length * bars
    return [
        (0, 4 * step, 60, 100), (0, 4 * step, 64, 90), (0, length, 36, 70),
        (4 * step, step, 60, 127), (5 * step, step, 60, 64), (6 * step, 2 * step, 60, 81),
        (bar_length, bar_length, 72, 110), (length - step, step, 108, 77), (bar_length + 3 * step, 5 * step, 21, 99),
    ]


@pytest.mark.parametrize("ts", [(4, 4), (3, 4), (12, 8), (4, 2)])
def test_roll_round_trip_on_grid(ts):
    bar = bar_ticks(*ts)
    step = ticks_per_step(bar)
    notes = make_notes(_grid_rows(bar, step))
    roll = notes_to_roll(notes, bar, 4)
    assert roll.shape == (2, 64, 88) and roll.dtype == np.float32
    assert roll.min() >= 0 and roll.max() <= 1
    back = roll_to_notes(roll, bar)
    assert note_tuples(back) == note_tuples(notes)
    for a, b in zip(sorted(note_tuples(back, True)), sorted(note_tuples(notes, True))):
        assert abs(a[3] - b[3]) <= 1


def test_roll_channels():
    notes = make_notes([(3, 6, 60, 127)])
    roll = notes_to_roll(notes, 48, 4)
    assert np.argwhere(roll[0]).tolist() == [[1, 60 - 21]]
    assert np.argwhere(roll[1]).tolist() == [[1, 39], [2, 39]]
    assert roll[1, 1, 39] == pytest.approx(1.0)


def test_roll_shape_follows_config():
    roll = notes_to_roll(make_notes([(0, 3, 60, 80)]), 48, 8, steps_per_beat=2, pitch_low=48, pitch_high=72)
    assert roll.shape == (2, 8 * 4 * 2, 25)


def test_roll_drops_notes_outside_pitch_range_and_time():
    notes = make_notes([(0, 12, 20, 80), (0, 12, 109, 80), (192, 12, 60, 80), (180, 30, 62, 80)])
    roll = notes_to_roll(notes, 48, 4)
    assert note_tuples(roll_to_notes(roll, 48)) == [(180, 12, 62)]  # cut at the roll's end


def test_roll_of_no_notes_is_empty():
    roll = notes_to_roll(np.zeros(0, NOTE_DTYPE), 36, 4)
    assert roll.shape == (2, 64, 88) and not roll.any()
    assert len(roll_to_notes(roll, 36)) == 0


def test_roll_round_trip_soft_notes():
    notes = make_notes([(0, 12, 60, 40), (12, 24, 64, 20)])
    back = roll_to_notes(notes_to_roll(notes, 48, 4), 48)
    assert note_tuples(back) == note_tuples(notes)
    assert [int(v) for v in back["velocity"]] == [40, 20]


def test_segment_piano_roll_is_fixed_size_across_metres():
    from engines.music.notes import Segment, make_notes

    waltz = Segment(notes=make_notes([(0, 12, 60, 100), (36, 24, 67, 50)]), ts_num=3, ts_den=4)
    roll = waltz.piano_roll()
    assert roll.shape == (2, 64, 88)
    assert roll[0, 0, 60 - 21] == 1 and roll[0, 12, 67 - 21] == 1      # 36 ticks = 12 sixteenth steps
    assert np.allclose(roll[1, 12:20, 67 - 21], 50 / 127) and roll[1, 11, 67 - 21] == 0 and roll[:, 48:].sum() == 0
    palestrina = Segment(notes=make_notes([(0, 48, 62, 80), (96, 96, 65, 80)]), ts_num=4, ts_den=2)
    roll = palestrina.piano_roll()
    assert roll.shape == (2, 64, 88)                                    # 4/2 bars use eighth-note steps
    assert roll[0, 16, 65 - 21] == 1 and roll[1, 16:32, 65 - 21].min() > 0 and roll[1, 32, 65 - 21] == 0
