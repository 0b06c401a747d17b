"""The GPT's MIDI -> audio task: its examples, the codec tokens they hold, a GPT started from another's weights,
and MIDI -> audio tokens -> waveform end to end (engines/data/audio_tokens.py, the trainer, the trained model)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.data.audio_tokens import (audio_task_set, codec_fingerprint, opening_bars, opening_remi,
                                       render_opening)
from engines.errors import StudioError
from engines.music.notes import TICKS_PER_QUARTER as Q
from engines.tokenizers.vocabulary import AUDIO, MIDI
from tests.conftest import segment

CODEC = Path(load_config().model.checkpoints_dir) / "codec.pt"


@pytest.fixture(scope="module")
def codec():
    from engines.models.codec import load_codec

    return load_codec(CODEC)


def test_the_opening_bars_cover_the_seconds_asked_and_their_remi_stops_before_the_next_bar():
    from engines.tokenizers.midi import encode_segment
    from engines.tokenizers.vocabulary import remi_token_names

    four_four = segment([(0, Q * 4, 60, 80)], tempo=120.0)        # 4/4 at 120: a bar is 2 s
    assert opening_bars(four_four, 2.0) == 1
    assert opening_bars(four_four, 2.5) == 2
    assert opening_bars(four_four, 60.0) == four_four.num_bars
    assert opening_bars(segment([(0, Q, 60, 80)], tempo=60.0), 2.0) == 1   # a 4 s bar: still one
    three_bars = segment([(0, Q, 60, 80), (4 * Q, Q, 62, 80), (8 * Q, Q, 64, 80)], tempo=120.0)
    remi = encode_segment(three_bars, "remi").tolist()
    bar = remi_token_names().index("Bar_None")
    assert opening_remi(remi, 1).count(bar) == 1 and opening_remi(remi, 2).count(bar) == 2
    assert opening_remi(remi, 2) == remi[:len(opening_remi(remi, 2))]
    assert opening_remi(remi, 99) == remi


def test_the_opening_render_has_the_length_asked_and_sounds_only_where_notes_are():
    quiet_end = segment([(0, Q, 60, 80)], tempo=120.0)            # a quarter note, then silence
    audio = render_opening(quiet_end, 2.0, 16000)
    assert audio.shape == (32000,) and audio.dtype == np.float32
    assert np.abs(audio[:4000]).max() > 10 * np.abs(audio[-4000:]).max()
    assert not render_opening(segment([]), 1.0, 16000).any()


def test_the_task_set_holds_the_codec_codes_of_each_opening_and_is_kept_per_codec(codec):
    cfg = load_config()
    task = audio_task_set(cfg, codec, "train", 4, 2.0, 2)
    assert task.codes.shape == (4, 2, 100) and task.codes.dtype == np.int16
    assert 0 <= task.codes.min() and task.codes.max() < codec.config.bins
    from engines.data.prepare import ensure_corpus_cache

    cache = ensure_corpus_cache(cfg)
    first = cache.segment(int(task.rows[0]))
    expected = codec.encode(render_opening(first, 2.0, 16000, cfg.render.soundfont, cfg.render.gain))[:2]
    assert np.array_equal(task.codes[0], expected.numpy())
    assert task.bars[0] == opening_bars(first, 2.0)
    assert list((Path(cfg.data.cache_dir) / "audio").glob("task-train-4-*.npz"))
    assert codec_fingerprint(codec) != codec_fingerprint(torch.nn.Linear(2, 2))
    again = audio_task_set(cfg, codec, "train", 4, 2.0, 2)   # read back, not rebuilt
    assert np.array_equal(again.codes, task.codes)
    with pytest.raises(ValueError, match="writes 4 codebooks"):
        audio_task_set(cfg, codec, "train", 4, 2.0, 5)


def test_an_audio_example_is_given_the_remi_and_learns_the_codes_only(gpt_audio_run, corpus_cache):
    from engines.training.autoregressive_trainer import training_pair

    checkpoint = torch.load(gpt_audio_run[0], weights_only=True)
    assert checkpoint["vocabulary"]["audio_codebooks"] == 1 and checkpoint["vocabulary"]["audio_bins"] == 1024
    from engines.tokenizers.vocabulary import UnifiedVocabulary

    vocabulary = UnifiedVocabulary.from_dict(checkpoint["vocabulary"])
    ids = vocabulary.encode(midi=[4, 5, 6], audio=np.array([[1, 2, 3, 4]]))
    pair = training_pair(ids)
    learned = pair["y"][pair["y"] != -100].tolist()
    assert learned == ids[ids.index(AUDIO) + 1:]            # the four codes and <eos>
    assert ids.index(MIDI) < ids.index(AUDIO)


def test_a_gpt_started_from_another_keeps_its_text_and_midi_ids_and_adds_the_audio_range(gpt_run, gpt_audio_run):
    before = torch.load(gpt_run[0] / "autoregressive.pt", weights_only=True)
    after = torch.load(gpt_audio_run[0], weights_only=True)
    assert after["vocabulary"]["words"] == before["vocabulary"]["words"]
    assert after["vocabulary"]["midi_tokens"] == before["vocabulary"]["midi_tokens"]
    assert after["state_dict"]["wte.weight"].shape[0] == before["state_dict"]["wte.weight"].shape[0] + 1024
    task = after["audio_task"]
    assert (task["seconds"], task["codebooks"], task["frames"]) == (2.0, 1, 100)
    assert task["codec_fingerprint"] and after["training"]["init_checkpoint"].endswith("autoregressive.pt")
    best = gpt_audio_run[1]
    assert np.isfinite(best["val_audio_loss"]) and 0 <= best["val_audio_accuracy"] <= 1
    assert best["val_perplexity"] == pytest.approx(np.exp(best["val_loss"]))   # still per MIDI token


def test_midi_becomes_audio_tokens_and_the_codec_turns_them_into_a_waveform(gpt_audio_run, codec):
    from engines.models.trained_autoregressive import TrainedAutoregressive, model_audio

    engine = TrainedAutoregressive.load(gpt_audio_run[0])
    melody = segment([(i * Q, Q, 60 + (i % 5) * 2, 80) for i in range(16)], tempo=120.0)
    codes = engine.write_audio(melody, n=2, seed=3)
    assert [c.shape for c in codes] == [(1, 100), (1, 100)]
    assert all(0 <= c.min() and c.max() < 1024 for c in codes)
    assert np.array_equal(engine.write_audio(melody, n=2, seed=3)[1], codes[1])   # seeded
    # written against the same bars a tritone off by default; guidance 1 is the plain model
    plain = engine.write_audio(melody, n=2, seed=3, guidance=1.0)
    assert not all(np.array_equal(a, b) for a, b in zip(plain, codes))
    with pytest.raises(StudioError, match="audio guidance must lie in 1..20, got 0.5"):
        engine.write_audio(melody, guidance=0.5)
    waveform = model_audio(engine, codec, melody, seed=3)
    assert waveform.shape == (100 * codec.hop_length,) and np.isfinite(waveform).all()
    render = render_opening(melody, 2.0, 16000)
    rms = float(np.sqrt((render ** 2).mean()))
    assert rms > 1e-3
    assert float(np.sqrt((waveform ** 2).mean())) == pytest.approx(rms, rel=1e-3)   # as loud as the render
    # the codes the GPT learns from (the render's coarse codebook) decode to what the render plays
    from engines.evaluation.audio_metrics import chroma_correlation

    decoded = codec.decode(codec.encode(render)[:1])
    assert chroma_correlation(decoded, torch.from_numpy(render), 16000) > 0.8
    assert chroma_correlation(decoded, torch.from_numpy(render_opening(
        segment([(0, 8 * Q, 61, 80), (0, 8 * Q, 66, 80)], tempo=120.0), 2.0, 16000)), 16000) < 0.5


def test_audio_is_refused_without_the_task_or_with_another_codec(gpt_run, gpt_audio_run, codec):
    from engines.models.codec import AudioCodec
    from engines.models.trained_autoregressive import TrainedAutoregressive, audio_codec_problem, model_audio

    melody = segment([(0, Q, 60, 80)], tempo=120.0)
    plain = TrainedAutoregressive.load(gpt_run[0] / "autoregressive.pt")
    with pytest.raises(StudioError, match="never learned to write audio tokens"):
        plain.write_audio(melody)
    engine = TrainedAutoregressive.load(gpt_audio_run[0])
    other = AudioCodec(codec.config)
    assert "another codec" in audio_codec_problem(engine, other)
    with pytest.raises(StudioError, match="another codec"):
        model_audio(engine, other, melody)
    assert "no audio codec" in audio_codec_problem(engine, None)
    with pytest.raises(StudioError, match="no notes"):
        engine.write_audio(segment([]))


def test_the_audio_task_without_a_codec_is_a_clear_error(tmp_path, corpus_cache):
    from engines.training.autoregressive_trainer import train_autoregressive
    from tests.helpers import TINY_GPT

    cfg = load_config(overrides=TINY_GPT + ["model.autoregressive.task_weights.midi_to_audio=0.5",
                                            f"model.autoregressive.codec_checkpoint={tmp_path / 'none.pt'}"])
    with pytest.raises(StudioError, match="needs a codec checkpoint; .*none.pt does not exist"):
        train_autoregressive(cfg, tmp_path / "run", limit=8, workers=0)
