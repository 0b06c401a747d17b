"""The audio codec: encodec's modules without torchaudio, encode/decode shapes, official weights from disk,
the round-trip metrics on signals with known answers, training on FluidSynth renders, and its evaluation."""
from __future__ import annotations

import json
import math
import sys

import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.evaluation.audio_metrics import log_mel, log_mel_l1, mel_filterbank, si_snr
from engines.models.codec import OFFICIAL_24KHZ, AudioCodec, codec_from_checkpoint, load_official_encodec
from engines.models.codec_config import CodecConfig

TINY_CODEC = CodecConfig(n_filters=4, dimension=8, lstm=0, n_q=2, bins=16)
TINY_OVERRIDES = ["model.codec.n_filters=4", "model.codec.dimension=8", "model.codec.lstm=0", "model.codec.n_q=2",
                  "model.codec.bins=16", "model.codec.epochs=1", "model.codec.batch_size=4",
                  "model.codec.crop_seconds=0.25", "model.codec.crops_per_segment=2"]


def test_encodec_modules_load_without_torchaudio():
    AudioCodec(TINY_CODEC)
    assert "torchaudio" not in sys.modules


def test_encode_gives_codes_per_frame_and_decode_gives_audio_back():
    torch.manual_seed(0)
    codec = AudioCodec(TINY_CODEC).eval()
    assert codec.hop_length == 320 and codec.frame_rate == 50
    wave = torch.randn(16000) * 0.1
    codes = codec.encode(wave)
    assert codes.shape == (2, 50) and codes.dtype == torch.long and 0 <= int(codes.min()) and int(codes.max()) < 16
    audio = codec.decode(codes)
    assert audio.shape == (16000,) and torch.isfinite(audio).all()
    with pytest.raises(StudioError, match="shorter than one codec frame"):
        codec.encode(torch.zeros(100))
    with pytest.raises(StudioError, match="must lie in 0..15"):
        codec.decode(torch.full((2, 4), 16))
    with pytest.raises(StudioError, match=r"shaped \[n_q <= 2, frames\]"):
        codec.decode(torch.zeros(3, 4, dtype=torch.long))


def test_encode_works_at_the_trained_level_and_the_round_trip_keeps_the_loudness():
    from engines.models.codec import loudness_gain

    quiet = torch.randn(2, 16000) * torch.tensor([[0.01], [0.5]])
    assert torch.allclose((quiet * loudness_gain(quiet, 0.1)).pow(2).mean(-1).sqrt(), torch.tensor([0.1, 0.1]),
                          rtol=1e-4)
    assert float(loudness_gain(torch.zeros(100), 0.1)) == 1.0      # silence is not blown up
    assert float(loudness_gain(quiet[0], 0.0)) == 1.0              # input_rms 0: as given (the official model)
    torch.manual_seed(0)
    codec = AudioCodec(TINY_CODEC).eval()
    wave = torch.randn(16000) * 0.01
    assert torch.equal(codec.encode(wave), codec.encode(wave * 30))  # the level does not change the codes
    codes, back = codec.round_trip(wave)
    assert torch.equal(codes, codec.encode(wave)) and back.shape == wave.shape
    assert torch.allclose(back, codec.decode(codes)[:16000] / float(loudness_gain(wave, 0.1)))


def test_official_encodec_weights_load_from_disk_at_the_asked_bandwidth(tmp_path):
    official = AudioCodec(CodecConfig(**{k: v for k, v in OFFICIAL_24KHZ.items() if k != "causal"}), causal=True)
    keys = set(official.state_dict())
    assert "encoder.model.0.conv.conv.weight_g" in keys and "quantizer.vq.layers.31._codebook.embed" in keys
    path = tmp_path / "encodec_24khz-d7cc33bc.th"
    torch.save(official.state_dict(), path)
    loaded = load_official_encodec(path, bandwidth=1.5)
    assert loaded.n_q_used == 2 and loaded.frame_rate == 75 and loaded.causal
    assert loaded.encode(torch.zeros(24000)).shape == (2, 75)
    with pytest.raises(StudioError, match="nothing is downloaded"):
        load_official_encodec(tmp_path / "missing.th")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.th")
    with pytest.raises(StudioError, match="not the EnCodec 24 kHz state dict"):
        load_official_encodec(tmp_path / "other.th")


def test_si_snr_has_the_known_values():
    torch.manual_seed(0)
    x = torch.randn(8000)
    noise = torch.randn(8000)
    noise = noise - noise.mean()
    x0 = x - x.mean()
    noise = noise - (noise @ x0) / (x0 @ x0) * x0            # orthogonal to the signal
    noise = noise * (x0.norm() / noise.norm()) / math.sqrt(10)  # 10 dB below it
    assert float(si_snr(x, x + noise)) == pytest.approx(10.0, abs=0.01)
    assert float(si_snr(x, 3 * x + 0.5)) > 60                   # scale and offset do not count
    assert float(si_snr(x, -x)) > 60                        # nor the sign (a projection)
    assert float(si_snr(x, torch.randn(8000))) < -10         # unrelated noise


def test_mel_filterbank_and_log_mel_distance():
    bank = mel_filterbank(16000, 512, 40)
    assert bank.shape == (40, 257) and float(bank.max()) <= 1.0 + 1e-6 and (bank.sum(1) > 0).all()
    t = torch.arange(16000) / 16000
    low, high = torch.sin(2 * math.pi * 220 * t), torch.sin(2 * math.pi * 3000 * t)
    spec = log_mel(low, 16000, 1024, 40)
    assert spec.shape[0] == 40 and int(spec.mean(1).argmax()) < int(log_mel(high, 16000, 1024, 40).mean(1).argmax())
    assert float(log_mel_l1(low, low, 16000)) == 0.0 and float(log_mel_l1(low, high, 16000)) > 1.0


def test_codec_trains_on_renders_and_evaluates(tmp_path):
    from engines.evaluation.codec_eval import evaluate_codec
    from engines.training.codec_trainer import train_codec

    cfg = load_config(overrides=TINY_OVERRIDES + [f"data.cache_dir={load_config().data.cache_dir}"])
    best = train_codec(cfg, tmp_path / "run", limit=4, workers=0)
    assert set(best) >= {"val_loss", "val_si_snr", "val_mel_l1"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["epoch"] == 1
    payload = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    assert payload["engine"] == "codec" and payload["data"]["render_segments"] == 4
    assert codec_from_checkpoint(payload).config.n_q == 2
    report = evaluate_codec(str(tmp_path / "run" / "best.pt"), cfg, n=3)
    assert report["n"] == 3 and report["token_rate"] == 100 and report["bitrate_kbps"] == 0.4
    assert math.isfinite(report["si_snr_db"]) and report["log_mel_l1"] > 0 and report["x_realtime"] > 0
    from engines.training.model_card import ship

    (tmp_path / "eval.json").write_text(json.dumps(report))
    ship("codec", tmp_path / "run", tmp_path / "out", str(tmp_path / "eval.json"))
    card = (tmp_path / "out" / "codec.md").read_text()
    assert "| tokens per second of audio | <= 200 | 100 | yes |" in card and "val SI-SNR dB" in card


def test_studio_plays_a_segment_through_the_codec_when_one_is_installed(tmp_path):
    import soundfile

    from engines.api import StudioEngine
    from engines.models.codec import codec_payload
    from engines.training.common import save_checkpoint
    from tests.conftest import scale_melody, segment

    melody = segment(scale_melody(2), bars=2)
    without = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), out_dir=tmp_path / "a")
    assert without.codec_render(melody, "x") == (None, 0)
    save_checkpoint(codec_payload(AudioCodec(TINY_CODEC), {}), tmp_path / "codec.pt")
    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), out_dir=tmp_path / "b")
    path, tokens = engine.codec_render(melody, "x")
    audio, rate = soundfile.read(path)
    assert rate == 16000 and tokens == 2 * math.ceil(len(audio) / 320)
    (tmp_path / "codec.pt").write_bytes(b"broken")
    broken = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), out_dir=tmp_path / "c")
    assert broken.codec_render(melody, "x") == (None, 0)  # logged; the studio goes on


def test_chroma_correlation_hears_the_same_pitch_classes_and_not_others():
    from engines.evaluation.audio_metrics import chroma, chroma_correlation

    t = torch.arange(32000) / 16000
    c_major = torch.sin(2 * math.pi * 261.63 * t) + 0.5 * torch.sin(2 * math.pi * 329.63 * t)
    octave_up = torch.sin(2 * math.pi * 523.25 * t) + 0.5 * torch.sin(2 * math.pi * 659.26 * t)
    c_sharp = torch.sin(2 * math.pi * 277.18 * t)
    assert chroma(c_major, 16000).shape == (32, 12) and int(chroma(c_major, 16000)[5].argmax()) == 0
    assert chroma_correlation(octave_up, c_major, 16000) > 0.99        # chroma ignores the octave
    assert chroma_correlation(0.01 * c_major, c_major, 16000) == pytest.approx(1.0)   # and the loudness
    assert chroma_correlation(c_sharp, c_major, 16000) < 0.1
    assert math.isnan(chroma_correlation(c_major, torch.zeros(32000), 16000))        # nothing to compare with


def test_the_studio_plays_the_gpts_own_audio_when_its_checkpoint_learned_the_codec(tmp_path, gpt_audio_run, gpt_run):
    import shutil

    import soundfile

    from engines.api import StudioEngine
    from tests.conftest import scale_melody, segment

    shutil.copyfile(load_config().model.checkpoints_dir + "/codec.pt", tmp_path / "codec.pt")
    shutil.copyfile(gpt_audio_run[0], tmp_path / "autoregressive.pt")
    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), out_dir=tmp_path / "out")
    melody = segment(scale_melody(2), bars=2)
    path, tokens, seconds = engine.model_audio_render(melody, "x", "autoregressive", seed=1)
    audio, rate = soundfile.read(path)
    assert rate == 16000 and audio.shape == (32000, 2) and (tokens, seconds) == (100, 2.0)
    assert engine.model_audio_render(segment([]), "x", "autoregressive") is None
    (tmp_path / "plain").mkdir()
    shutil.copyfile(gpt_run[0] / "autoregressive.pt", tmp_path / "plain" / "autoregressive.pt")
    shutil.copyfile(tmp_path / "codec.pt", tmp_path / "plain" / "codec.pt")
    plain = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={tmp_path / 'plain'}"]),
                         out_dir=tmp_path / "out2")
    assert plain.model_audio_render(melody, "x", "autoregressive") is None   # no audio task: no third player


def test_a_codec_trains_on_from_a_checkpoint_with_its_weights_and_codebooks(tmp_path):
    from dataclasses import replace

    from engines.models.codec import codec_payload
    from engines.training.codec_trainer import build_codec
    from engines.training.common import save_checkpoint

    torch.manual_seed(3)
    first = AudioCodec(TINY_CODEC)
    first.quantizer.vq.layers[0]._codebook.embed.normal_()     # codebooks as a trained codec has them
    save_checkpoint(codec_payload(first, {}), tmp_path / "codec.pt")
    again = build_codec(replace(TINY_CODEC, init_checkpoint=str(tmp_path / "codec.pt")))
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    assert not torch.equal(build_codec(TINY_CODEC).encoder.model[0].conv.conv.weight_v,
                           first.encoder.model[0].conv.conv.weight_v)      # without it: a fresh codec
    with pytest.raises(StudioError, match="init_checkpoint has another bins \\(16\\) than the config \\(32\\)"):
        build_codec(replace(TINY_CODEC, bins=32, init_checkpoint=str(tmp_path / "codec.pt")))
