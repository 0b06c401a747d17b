"""FluidSynth rendering: lengths, timing, loudness, drums, pedal, pool reuse, file output, soundfont errors.

Scores are built in the tests (480 ticks per quarter); at 120 qpm one quarter lasts 0.5 s.
Every render uses the default soundfont, so the synth pool is shared and the soundfont loads once.
"""
import io
import math
import threading

import numpy as np
import pytest

pytest.importorskip("fluidsynth")
soundfile = pytest.importorskip("soundfile")
from symusic import Note, Pedal, Score, Tempo, Track  # noqa: E402

from engines.errors import StudioError  # noqa: E402
from engines.render import fluidsynth_renderer as fr  # noqa: E402

RATE = 22050  # half of CD rate keeps the tests quick; everything scales with the rate


def make_score(notes, qpm=120.0, program=0, is_drum=False, tempos=(), pedals=()):
    """notes: (start_tick, duration_ticks, pitch[, velocity]) on one track."""
    score = Score(480)
    score.tempos.append(Tempo(0, qpm))
    for tick, tempo in tempos:
        score.tempos.append(Tempo(tick, tempo))
    track = Track(program=program, is_drum=is_drum)
    for start, duration, pitch, *velocity in notes:
        track.notes.append(Note(start, duration, pitch, velocity[0] if velocity else 100))
    for start, duration in pedals:
        track.pedals.append(Pedal(start, duration))
    score.tracks.append(track)
    return score


def rms(audio, start_s, end_s, rate=RATE):
    part = audio[int(start_s * rate):int(end_s * rate)]
    return float(np.sqrt(np.mean(np.square(part, dtype=np.float64)))) if len(part) else 0.0


# Four quarter-note C-major chords: 2.0 s at 120 qpm.
CHORDS = make_score([(q * 480, 480, p) for q in range(4) for p in (60, 64, 67)])


def test_shape_length_and_loudness():
    audio = fr.render_score(CHORDS, sample_rate=RATE, tail_seconds=1.0)
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[1] == 2
    assert abs(len(audio) - math.ceil((2.0 + 1.0) * RATE)) <= 1
    assert np.abs(audio).max() <= 1.0
    assert rms(audio, 0.1, 1.9) > 1e-3  # sounding while the chords play
    assert not np.array_equal(audio[:, 0], audio[:, 1])  # real stereo (the piano is panned by pitch)


def test_long_tail_ends_near_silent():
    audio = fr.render_score(make_score([(0, 480, 60)]), sample_rate=RATE, tail_seconds=4.0)
    assert abs(len(audio) - math.ceil(4.5 * RATE)) <= 1
    assert rms(audio, 0.05, 0.45) > 1e-3
    assert rms(audio, 4.0, 4.5) < 1e-4
    assert np.abs(audio[-RATE // 4:]).max() < 1e-3


def test_halving_the_tempo_doubles_the_length():
    notes = [(q * 480, 480, 60 + q) for q in range(4)]
    fast = fr.render_score(make_score(notes, qpm=120.0), sample_rate=RATE, tail_seconds=0.0)
    slow = fr.render_score(make_score(notes, qpm=60.0), sample_rate=RATE, tail_seconds=0.0)
    assert abs(len(fast) - 2 * RATE) <= 1 and abs(len(slow) - 4 * RATE) <= 1


def test_tempo_change_moves_later_notes():
    # 120 qpm for two quarters (1.0 s), then 60 qpm: tick 1920 = 1.0 s + 2 quarters * 1.0 s = 3.0 s.
    score = make_score([(0, 240, 72), (1920, 480, 60)], tempos=[(960, 60.0)])
    audio = fr.render_score(score, sample_rate=RATE, tail_seconds=0.5)
    assert abs(len(audio) - math.ceil((4.0 + 0.5) * RATE)) <= 1
    assert rms(audio, 1.8, 2.95) < 1e-4  # the first note has died away, the second not yet begun
    assert rms(audio, 3.0, 3.5) > 1e-3


def test_drum_track_sounds():
    kit = make_score([(q * 240, 120, pitch) for q, pitch in enumerate((36, 42, 38, 42) * 2)], is_drum=True)
    audio = fr.render_score(kit, sample_rate=RATE, tail_seconds=0.5)
    assert rms(audio, 0.0, 1.0) > 1e-3
    channels = {channel for _, kind, channel, *_ in fr._score_events(kit, RATE)[0]}
    assert channels == {fr.DRUM_CHANNEL}


def test_melodic_tracks_avoid_the_drum_channel_and_wrap():
    score = Score(480)
    score.tempos.append(Tempo(0, 120.0))
    for index in range(17):
        track = Track(program=index)
        track.notes.append(Note(0, 480, 48 + index, 80))
        score.tracks.append(track)
    channels = [channel for _, kind, channel, *_ in fr._score_events(score, RATE)[0] if kind == fr._PROGRAM]
    assert fr.DRUM_CHANNEL not in channels
    assert sorted(set(channels)) == [c for c in range(16) if c != 9] and len(channels) == 17
    assert rms(fr.render_score(score, sample_rate=RATE, tail_seconds=0.2), 0.05, 0.45) > 1e-3


def test_sustain_pedal_holds_notes():
    short = [(0, 120, 60)]  # an eighth note: released at 0.125 s
    dry = fr.render_score(make_score(short), sample_rate=RATE, tail_seconds=2.0)
    held = fr.render_score(make_score(short, pedals=[(0, 1920)]), sample_rate=RATE, tail_seconds=1.0)
    assert rms(held, 1.0, 1.5) > 10 * rms(dry, 1.0, 1.5) and rms(held, 1.0, 1.5) > 1e-3


def test_pool_reuses_synths_and_leaves_nothing_behind():
    pool = fr.get_pool(sample_rate=RATE)
    first = fr.render_score(CHORDS, sample_rate=RATE)
    ids = {id(s) for s in pool.synths}
    # A render cut off while a pedal holds a loud chord: its notes must not reach the next render.
    blast = make_score([(0, 480, p, 127) for p in (36, 48, 55, 60, 64, 67)], pedals=[(0, 960)])
    fr.render_score(blast, sample_rate=RATE, tail_seconds=0.0)
    late = fr.render_score(make_score([(1920, 480, 60)]), sample_rate=RATE)  # silent until 2.0 s
    assert np.abs(late[:int(1.9 * RATE)]).max() == 0.0
    second = fr.render_score(CHORDS, sample_rate=RATE)
    assert {id(s) for s in pool.synths} == ids and fr.get_pool(sample_rate=RATE) is pool
    # Equal up to note-onset transients: FluidSynth keeps a little DSP state in reused voice slots, which
    # nudges a few attack samples; a held note would differ on almost every frame.
    assert first.shape == second.shape
    differing = np.abs(first - second).max(axis=1) > 1e-6
    assert differing.mean() < 0.01 and np.abs(first - second).max() < 1e-2


def test_concurrent_renders_share_the_pool():
    score = make_score([(0, 480, 60), (480, 480, 64)])
    results = [None, None]

    def work(slot):
        results[slot] = fr.render_score(score, sample_rate=RATE, pool_size=2)

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    serial = fr.render_score(score, sample_rate=RATE, pool_size=2)
    # Two renders at once on two pooled synths must each sound like the render done alone: no cross-talk.
    for result in results:
        assert result.shape == serial.shape
        assert np.abs(result - serial).max() < 1e-2
        assert rms(result, 0.1, 0.9) > 1e-3


def test_render_midi_file_matches_render_score(tmp_path):
    path = tmp_path / "chords.mid"
    CHORDS.dump_midi(str(path))
    from_file = fr.render_midi_file(path, sample_rate=RATE)
    assert from_file.shape == fr.render_score(CHORDS, sample_rate=RATE).shape
    assert rms(from_file, 0.1, 1.9) > 1e-3
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"not a midi file")
    with pytest.raises(StudioError, match="bad.mid"):
        fr.render_midi_file(bad, sample_rate=RATE)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_write_audio_round_trip(tmp_path, suffix):
    audio = fr.render_score(CHORDS, sample_rate=RATE, tail_seconds=0.25)
    path = fr.write_audio(audio, tmp_path / f"out{suffix.upper()}", RATE)  # suffix case does not matter
    info = soundfile.info(str(path))
    assert info.samplerate == RATE and info.frames == len(audio) and info.channels == 2
    assert info.subtype == "PCM_16"
    back, rate = soundfile.read(str(path), dtype="float32")
    assert rate == RATE and np.abs(back - audio).max() < 2 / 32768


def test_wav_bytes_and_bad_suffix(tmp_path):
    audio = np.zeros((100, 2), np.float32)
    audio[:, 0] = 2.0  # out of range: clipped, not wrapped around
    data = fr.audio_to_wav_bytes(audio, RATE)
    assert data[:4] == b"RIFF"
    back, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert rate == RATE and back.shape == (100, 2) and back[:, 0].min() > 0.99
    with pytest.raises(StudioError, match="wav or .flac"):
        fr.write_audio(audio, tmp_path / "out.mp3", RATE)


def test_soundfont_lookup():
    found = fr.find_soundfont()
    assert found.is_file() and found.suffix.lower() in (".sf2", ".sf3")
    assert fr.find_soundfont(str(found)) == found
    missing = "/no/such/dir/piano.sf2"
    with pytest.raises(StudioError, match=missing):
        fr.find_soundfont(missing)
    with pytest.raises(StudioError, match="piano.sf2"):
        fr.render_score(CHORDS, sample_rate=RATE, soundfont=missing)
    with pytest.raises(StudioError, match="not a .sf2"):
        fr.find_soundfont(__file__)


def test_soundfont_search_falls_back_to_pretty_midi(tmp_path, monkeypatch):
    monkeypatch.setattr(fr, "REPO_ROOT", tmp_path)  # no soundfonts/ folder
    monkeypatch.setattr(fr, "SYSTEM_SOUNDFONT_DIRS", (str(tmp_path / "none"),))
    import importlib.util

    if importlib.util.find_spec("pretty_midi") is None:
        with pytest.raises(StudioError, match="no soundfont found"):
            fr.find_soundfont()
    else:
        assert fr.find_soundfont().name == "TimGM6mb.sf2"
    (tmp_path / "soundfonts").mkdir()
    (tmp_path / "soundfonts" / "b.sf3").write_bytes(b"x")
    (tmp_path / "soundfonts" / "a.sf2").write_bytes(b"x")
    assert fr.find_soundfont() == tmp_path / "soundfonts" / "a.sf2"  # the repo folder comes first


def test_measure_speed_reports():
    stats = fr.measure_speed(CHORDS, repeats=2, sample_rate=RATE)
    assert set(stats) == {"audio_seconds", "median_render_seconds", "x_realtime"}
    assert stats["audio_seconds"] == pytest.approx(3.0, abs=1e-3) and stats["x_realtime"] > 0
