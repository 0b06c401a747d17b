"""engines/music/analyzer.py and features.py: orderings on hand-made segments, ranges, determinism, errors."""
import numpy as np
import pytest

from engines.errors import StudioError
from engines.music.analyzer import AXES, MODE_PROTOTYPES, MODES, AnalyzerConfig, ChromaticAnalyzer
from engines.music.features import estimate_key, key_name, measure_features, pitch_class_histogram
from engines.music.notes import NOTE_DTYPE, Segment, make_notes
from tests.conftest import scale_melody, segment

MELODY = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62, 60, 62]


@pytest.fixture(scope="module")
def analyzer():
    return ChromaticAnalyzer()


def on_beat():
    return segment([(i * 12, 12, p, 80) for i, p in enumerate(MELODY)])


def syncopated():
    """The same pitches pushed half a beat early: an eighth, then quarters from off-beats held over each beat."""
    return segment([(0, 6, MELODY[0], 80)] + [(6 + (i - 1) * 12, 12, p, 80) for i, p in enumerate(MELODY) if i][:15])


def test_syncopation_and_rebracketing(analyzer):
    straight, pushed = analyzer.analyze(on_beat()), analyzer.analyze(syncopated())
    assert straight.features["syncopation"] == 0.0 and straight.rebracketing == 0.0
    assert pushed.features["syncopation"] > 0.5
    assert pushed.rebracketing > straight.rebracketing + 0.3


def test_ties_over_bar_lines_raise_cross_bar(analyzer):
    plain = segment([(i * 24, 24, p, 80) for i, p in enumerate(MELODY[:8])])
    tied = segment([(0, 24, 60, 80)] + [(24 + i * 48, 48, p, 80) for i, p in enumerate((64, 67, 72))]
                   + [(168, 24, 64, 80)])
    a, b = analyzer.analyze(plain), analyzer.analyze(tied)
    assert a.features["cross_bar"] == 0.0
    assert b.features["cross_bar"] == pytest.approx(3 / 5)  # three of five notes cross a bar line
    assert b.rebracketing > a.rebracketing


def test_hemiola_in_three_four(analyzer):
    three_halves = segment([(0, 24, 60, 80), (24, 24, 64, 80), (48, 24, 67, 80)], ts=(3, 4), bars=2)
    dotted_halves = segment([(0, 36, 60, 80), (36, 36, 64, 80)], ts=(3, 4), bars=2)
    quarters = segment([(i * 12, 12, p, 80) for i, p in enumerate(MELODY[:6])], ts=(3, 4), bars=2)
    hemiola = analyzer.analyze(three_halves).features["hemiola"]
    assert hemiola > 0 and hemiola == pytest.approx(1.0)
    assert analyzer.analyze(dotted_halves).features["hemiola"] == 0.0
    assert analyzer.analyze(quarters).features["hemiola"] == 0.0
    assert analyzer.analyze(three_halves).rebracketing > analyzer.analyze(dotted_halves).rebracketing


def test_sixteenths_have_more_energy_than_whole_notes(analyzer):
    sixteenths = segment([(i * 3, 3, MELODY[i % 16], 80) for i in range(64)])
    wholes = segment([(i * 48, 48, MELODY[i], 80) for i in range(4)])
    assert analyzer.analyze(sixteenths).axes["energy"] > analyzer.analyze(wholes).axes["energy"] + 0.2
    assert analyzer.analyze(sixteenths).axes["motion"] > analyzer.analyze(wholes).axes["motion"]


def test_mixed_rhythms_are_more_complex_than_steady_quarters(analyzer):
    # Per bar: four sixteenths, an eighth-note triplet, a dotted eighth and sixteenth, a quarter.
    bar = [(0, 3), (3, 3), (6, 3), (9, 3), (12, 4), (16, 4), (20, 4), (24, 9), (33, 3), (36, 12)]
    mixed = segment([(b * 48 + s, d, MELODY[(j + b) % 16], 80) for b in range(4) for j, (s, d) in enumerate(bar)])
    steady = segment([(i * 12, 12, MELODY[i], 80) for i in range(16)])
    m, s = analyzer.analyze(mixed), analyzer.analyze(steady)
    assert s.temporal_complexity == 0.0
    assert m.temporal_complexity > 0.5
    assert m.features["subdivisions"] == 0.75  # half-beat, quarter-beat and triplet onsets


def triads(third: int):
    """C, F, G, C chords a bar each, with the third of the tonic and subdominant at `third` semitones."""
    chords = [(60, 60 + third, 67), (65, 65 + third, 72), (67, 71, 74), (60, 60 + third, 67)]
    return segment([(b * 48, 48, p, 80) for b, chord in enumerate(chords) for p in chord])


def test_major_is_brighter_than_minor(analyzer):
    major, minor = analyzer.analyze(triads(4)), analyzer.analyze(triads(3))
    assert major.key == "C major" and minor.key == "C minor"
    assert major.axes["valence"] > minor.axes["valence"] + 0.3


def test_clusters_are_more_tense_than_diatonic_chords(analyzer):
    cluster = segment([(b * 24, 24, p, 80) for b in range(8) for p in range(60 + b, 64 + b)])
    diatonic_chords = [(60, 64, 67), (62, 65, 69), (64, 67, 71), (65, 69, 72), (67, 71, 74), (65, 69, 72),
                       (62, 65, 69), (60, 64, 67)]
    diatonic = segment([(b * 24, 24, p, 80) for b, chord in enumerate(diatonic_chords) for p in chord])
    c, d = analyzer.analyze(cluster), analyzer.analyze(diatonic)
    assert c.features["dissonance"] > d.features["dissonance"]
    assert c.axes["tension"] > d.axes["tension"] + 0.3


def test_soft_single_line_is_more_intimate_than_loud_dense_chords(analyzer):
    sparse = segment([(i * 24, 24, p, 40) for i, p in enumerate([60, 62, 64, 62, 60, 62, 64, 60])])
    dense = segment([(i * 6, 6, p, 120) for i in range(32)
                     for p in (36 + i % 4, 48 + i % 5, 64 + i % 3, 84 + i % 4)])
    s, d = analyzer.analyze(sparse), analyzer.analyze(dense)
    assert s.axes["intimacy"] > d.axes["intimacy"] + 0.3
    assert d.axes["energy"] > s.axes["energy"]


def variety():
    """Segments in several metres and textures, for the range checks."""
    return [on_beat(), syncopated(), triads(3), triads(4),
            segment([(i * 3, 3, 40 + (i * 7) % 50, 30 + i) for i in range(64)]),
            segment([(0, 1, 21, 1)]),
            segment([(i * 6, 6, 60 + i % 12, 100) for i in range(24)], ts=(6, 8)),
            segment([(i * 4, 4, 70 - i % 9, 90) for i in range(36)] + [(0, 144, 36, 60)], ts=(3, 4)),
            segment([(i * 24, 48, 55 + i, 70) for i in range(16)], ts=(4, 2)),
            segment([(i * 18, 18, p, 85) for i, p in enumerate(MELODY)], ts=(12, 8))]


def test_scores_ranges_and_mode(analyzer):
    for seg in variety():
        result = analyzer.analyze(seg)
        assert set(result.scores) == set(MODES)
        assert sum(result.scores.values()) == pytest.approx(1.0)
        assert all(0.0 <= v <= 1.0 for v in result.scores.values())
        assert result.mode == max(result.scores, key=result.scores.get)
        assert set(result.axes) == set(AXES)
        for axis, value in result.axes.items():
            low = -1.0 if axis == "valence" else 0.0
            assert low <= value <= 1.0, axis
        assert 0.0 <= result.rebracketing <= 1.0
        assert 0.0 <= result.temporal_complexity <= 1.0


def test_mode_follows_prototypes(analyzer):
    """Moving a prototype onto a segment's own axes makes that the segment's mode."""
    seg = triads(4)
    unit = analyzer.axes_from_features(measure_features(seg))
    for target in ("BLACK", "VIOLET"):
        prototypes = {m: list(v) for m, v in MODE_PROTOTYPES.items()}
        prototypes[target] = [unit[a] for a in AXES]
        result = ChromaticAnalyzer(AnalyzerConfig(prototypes=prototypes)).analyze(seg)
        assert result.mode == target and result.scores[target] > 0.5


def test_determinism(analyzer):
    for seg in variety()[:4]:
        first = analyzer.analyze(seg).to_dict(with_features=True)
        copy = Segment(notes=seg.notes.copy(), ts_num=seg.ts_num, ts_den=seg.ts_den, num_bars=seg.num_bars,
                       tempo_qpm=seg.tempo_qpm)
        assert ChromaticAnalyzer().analyze(copy).to_dict(with_features=True) == first


def test_to_dict():
    out = ChromaticAnalyzer().analyze(on_beat()).to_dict(bars=(3, 6))
    assert list(out) == ["bars", "mode", "scores", "axes", "rebracketing", "temporal_complexity", "key"]
    assert out["bars"] == [3, 6] and out["key"] == "C major"
    assert "features" in ChromaticAnalyzer().analyze(on_beat()).to_dict(with_features=True)


def test_empty_segment(analyzer):
    with pytest.raises(StudioError, match="holds no notes"):
        analyzer.analyze(Segment(notes=np.zeros(0, NOTE_DTYPE)))


def test_config_validate_rejects_missing_mode():
    prototypes = {m: v for m, v in MODE_PROTOTYPES.items() if m != "GREEN"}
    with pytest.raises(StudioError, match="must name exactly the modes"):
        AnalyzerConfig(prototypes=prototypes).validate()
    with pytest.raises(StudioError, match="must name exactly the modes"):
        ChromaticAnalyzer(AnalyzerConfig(prototypes=prototypes))


@pytest.mark.parametrize("point", [[0.2, 0.1, 1.5, 0.3, 0.2], [0.2, -0.1, 0.5, 0.3, 0.2], [0.2, 0.1, 0.5]])
def test_config_validate_rejects_bad_prototype(point):
    prototypes = {m: list(v) for m, v in MODE_PROTOTYPES.items()}
    prototypes["RED"] = point
    with pytest.raises(StudioError, match=r"analyzer.prototypes.RED must be 5 numbers in \[0, 1\]"):
        AnalyzerConfig(prototypes=prototypes).validate()


def test_config_validate_rejects_temperature():
    with pytest.raises(StudioError, match="softmax_temperature must be > 0"):
        AnalyzerConfig(softmax_temperature=0.0).validate()
    AnalyzerConfig().validate()


def test_estimate_key_c_major_scale():
    notes = make_notes([(i * 12, 12, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])])
    tonic, major, r_major, r_minor = estimate_key(pitch_class_histogram(notes))
    assert (tonic, major) == (0, True) and r_major > r_minor
    assert key_name(tonic, major) == "C major"


def test_estimate_key_a_harmonic_minor():
    melody = [57, 59, 60, 62, 64, 65, 68, 69, 68, 64, 60, 59, 57]
    notes = make_notes([(i * 12, 24 if p == 57 else 12, p, 80) for i, p in enumerate(melody)])
    tonic, major, r_major, r_minor = estimate_key(pitch_class_histogram(notes))
    assert (tonic, major) == (9, False) and r_minor > r_major
    assert key_name(tonic, major) == "A minor"


def test_estimate_key_transposes():
    base = [(i * 12, 12, p, 80) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]
    for shift in range(12):
        notes = make_notes([(s, d, p + shift, v) for s, d, p, v in base])
        assert estimate_key(pitch_class_histogram(notes))[:2] == (shift, True)


def test_pitch_class_histogram_is_duration_weighted():
    hist = pitch_class_histogram(make_notes([(0, 36, 60, 80), (36, 12, 67, 80)]))
    assert hist.shape == (12,) and hist.sum() == pytest.approx(1.0)
    assert hist[0] == pytest.approx(0.75) and hist[7] == pytest.approx(0.25)


def test_features_of_a_plain_scale():
    f = measure_features(segment(scale_melody(4), tempo=120.0))
    assert f["onset_rate"] == pytest.approx(16 / 8.0)  # 16 onsets in 4 bars of 4/4 at 120 qpm = 8 s
    assert f["polyphony"] == 1.0 and f["dissonance"] == 0.0 and f["silence"] == 0.0
    assert f["chromaticism"] == 0.0 and f["pitch_range"] == 12.0
    assert f["short_notes"] == 0.0 and f["leap_fraction"] == 0.0


def test_a_suspension_in_one_voice_is_a_syncopation_while_the_others_keep_the_beat(analyzer):
    from engines.music.features import syncopation

    # upper voice: beat 4 tied over the bar line (a suspension); lower voice: quarters on every beat
    upper = [(0, 12, 72, 80), (12, 12, 74, 80), (24, 12, 76, 80), (36, 24, 77, 80)] + \
        [(60 + 12 * i, 12, 76, 80) for i in range(11)]
    lower = [(12 * i, 12, 48 + i % 5, 80) for i in range(16)]
    merged = segment(upper + lower, bars=4)                 # one track: the lower voice's onset hides it
    voiced = segment(upper + lower, bars=4)
    voiced.notes["track"] = [int(n["pitch"] < 60) for n in voiced.notes]
    assert syncopation(merged) == 0.0 and syncopation(voiced) > 0.0


def test_lengthened_notes_off_the_downbeat_displace_the_accent(analyzer):
    from engines.music.features import displacement

    # eighths, then a quarter: on the downbeat (0), on beat 2 (a quarter of it), between beats (all of it)
    def lengthened_at(position):
        rows, t = [], 0
        while t < 192:
            length = 12 if t % 48 == position else 6
            rows.append((t, length, 60 + (t // 6) % 7, 80))
            t += length
        return segment(rows, bars=4)

    on, beat, off = (displacement(lengthened_at(p)) for p in (0, 12, 18))
    assert on == 0.0 and beat == pytest.approx(0.25) and off == pytest.approx(1.0)
    assert displacement(on_beat()) == 0.0                    # even notes: no accent to displace
    assert analyzer.analyze(lengthened_at(18)).rebracketing > analyzer.analyze(lengthened_at(0)).rebracketing
