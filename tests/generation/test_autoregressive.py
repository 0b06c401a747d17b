"""The GPT generating (engines/models/trained_autoregressive.py and the generation interface): prompts, beam
search, reduced precision, continuation, the CLI, the streaming API, evaluation, bench, the model card,
prompt guidance and writing past 4 bars window by window."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.errors import StudioError
from engines.models.gpt import GPT
from engines.models.gpt_config import GPTConfig
from engines.sampling.autoregressive import RowGroup
from engines.tokenizers.vocabulary import MIDI
from tests.conftest import note_tuples


def test_generate_from_a_prompt_and_by_beam_search(gpt_run):
    from engines.models.trained_autoregressive import TrainedAutoregressive

    engine = TrainedAutoregressive.load(gpt_run[0] / "autoregressive.pt")
    seen = []
    results = engine.generate("a calm, intimate BLUE phrase", n=2, seed=3, max_bars=2,
                              on_token=lambda step, rows: seen.append(len(rows)))
    assert len(results) == 2 and seen and set(seen) == {2}
    for r in results:
        assert r.segment.num_bars <= 2 and all(engine.vocabulary.modality_of(t) == "midi" for t in r.tokens)
    again = engine.generate("a calm, intimate BLUE phrase", n=2, seed=3, max_bars=2)
    assert [r.tokens for r in again] == [r.tokens for r in results]
    (beam,) = engine.generate(mode="RED", beam_width=2, max_bars=1)
    assert beam.segment.num_bars <= 1
    with pytest.raises(StudioError, match="one segment"):
        engine.generate("x", n=2, beam_width=2)


@pytest.mark.parametrize("precision", ["int8", "bfloat16"])
def test_reduced_precision_on_cpu_follows_the_float_model(gpt_run, precision):
    from engines.models.trained_autoregressive import TrainedAutoregressive

    path = gpt_run[0] / "autoregressive.pt"
    reduced, exact = TrainedAutoregressive.load(path, precision=precision), \
        TrainedAutoregressive.load(path, precision="float32")
    assert reduced.precision == precision and exact.precision == "float32"
    if precision == "int8":
        assert reduced.model.blocks[0].attn.qkv.weight().dtype == torch.qint8
        assert type(reduced.model.lm_head) is torch.nn.Linear  # the output layer stays float
    else:
        assert reduced.model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert reduced.parameter_count == exact.parameter_count == exact.model.num_parameters()
    ids = torch.tensor([reduced.prompt_ids("a calm, intimate BLUE phrase")])
    with torch.no_grad():
        q, _ = reduced.model(ids, torch.zeros_like(ids))
        f, _ = exact.model(ids, torch.zeros_like(ids))
    assert q.dtype == torch.float32   # logits in float32 whatever the weights (prompt guidance subtracts them)
    assert (q - f).abs().max() < 0.05 * f.abs().max()
    assert (q.argmax(-1) == f.argmax(-1)).float().mean() > 0.9
    with pytest.raises(StudioError, match="precision must be"):
        TrainedAutoregressive.load(path, precision="half")


def test_wide_shared_batches_run_in_bfloat16_only_where_the_cpu_computes_it(gpt_run, monkeypatch):
    from engines.models import trained_autoregressive
    from engines.models.trained_autoregressive import WIDE_ROWS, TrainedAutoregressive

    path = gpt_run[0] / "autoregressive.pt"
    monkeypatch.setattr(trained_autoregressive, "native_bfloat16", lambda: True)
    engine = TrainedAutoregressive.load(path)
    assert engine.precision == "int8" and engine.wide.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert engine.batch_model(WIDE_ROWS - 1) is engine.model and engine.batch_model(WIDE_ROWS) is engine.wide
    groups = [RowGroup(WIDE_ROWS // 2, 1.0, 0, 1.0, torch.Generator().manual_seed(i), 2.0) for i in range(2)]
    rows = engine.sample_groups(None, "BLUE", groups, max_bars=1)
    assert len(rows) == WIDE_ROWS and all(engine.to_generated(r, 1).segment.num_bars <= 1 for r in rows)
    assert TrainedAutoregressive.load(path, precision="int8").wide is None   # one precision when one is named
    monkeypatch.setattr(trained_autoregressive, "native_bfloat16", lambda: False)
    engine = TrainedAutoregressive.load(path)
    assert engine.wide is None and engine.batch_model(4 * WIDE_ROWS) is engine.model


def test_continuation_keeps_the_given_bars(gpt_run, corpus_cache):
    from engines.models.trained_autoregressive import TrainedAutoregressive, bars_prefix

    engine = TrainedAutoregressive.load(gpt_run[0] / "autoregressive.pt")
    source = corpus_cache.segment(7)
    (out,) = engine.generate("continue", continue_from=source, keep_bars=2, max_bars=4, seed=1)
    kept = engine.vocabulary.encode_midi(bars_prefix(source, 2))
    assert out.tokens[:len(kept)] == kept
    end = 2 * source.bar_length
    original = note_tuples(source.notes[source.notes["start"] < end])
    continued = note_tuples(out.segment.notes[out.segment.notes["start"] < end])
    assert [n[0::2] for n in continued] == [n[0::2] for n in original]  # same onsets and pitches
    # kept off copies, the given bars are still read as they are, though they are a training segment's
    from engines.generation.copies import CopyIndex

    (guarded,) = engine.generate("continue", continue_from=source, keep_bars=2, max_bars=4, seed=1,
                                 copies=CopyIndex.build(corpus_cache))
    assert guarded.tokens[:len(kept)] == kept
    with pytest.raises(StudioError, match="bars to keep"):
        engine.generate("x", continue_from=source, keep_bars=4, max_bars=4)


def test_sampling_is_kept_off_copies_of_the_corpus_it_is_checked_against(gpt_run, corpus_cache):
    from engines.generation import GENERATORS, Request
    from engines.generation.copies import CopyIndex
    from engines.generation.verify import Verifier, draw

    generator = GENERATORS["autoregressive"].load(gpt_run[0] / "autoregressive.pt")
    assert generator.copy_index() is None                                   # no corpus given: nothing to avoid
    keys = [generator.batch_key(Request(engine="autoregressive", mode="RED", settings={"avoid_copies": avoid}))
            for avoid in (True, False)]
    assert None not in keys and keys[0] != keys[1]                           # guarded rows batch together
    verifier = Verifier.for_config(load_config(), cache=corpus_cache, judge=None)
    request = Request(engine="autoregressive", mode="RED", n=1, seed=0, candidates=1,
                      settings={"max_bars": 1})
    draw(generator, request, generator.settings_of(request), verifier)
    assert isinstance(generator.copy_index(), CopyIndex) and generator.copy_index() is verifier.copies


def test_a_continuation_that_moves_from_another_mode_leans_half_as_hard_on_its_prompt(gpt_run, corpus_cache):
    from engines.generation import GENERATORS, Request

    generator = GENERATORS["autoregressive"].load(gpt_run[0] / "autoregressive.pt")
    settings = generator.settings_for(load_config(), {"prompt_guidance": 3.0})
    asked = []
    plain = generator.model.generate
    generator.model.generate = lambda **kw: asked.append(kw["guidance_scale"]) or plain(**kw)
    source = corpus_cache.segment(7)
    for fade_from in (None, "BLUE", "RED"):    # RED fades from itself: nothing moves
        generator.run(Request("autoregressive", mode="RED", n=1, seed=1, settings=settings, init_midi=source,
                              keep_bars=[1, 2], fade_from=fade_from))
    generator.run(Request("autoregressive", mode="RED", n=1, seed=1, settings=settings, fade_from="BLUE"))
    assert asked == [3.0, 2.0, 3.0, 3.0]       # and a fresh segment (no continuation) does not fade


def test_cli_generates_midi_from_a_prompt(gpt_run, tmp_path, capsys):
    from engines.cli import main

    code = main(["generate", "--engine", "autoregressive", "--checkpoint", str(gpt_run[0] / "autoregressive.pt"),
                 "--prompt", "a fiery RED segment", "--n", "2", "--max-bars", "2", "--top-p", "0.9",
                 "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["engine"] == "autoregressive" and len(list(tmp_path.glob("*.mid"))) == 2
    assert main(["generate", "--engine", "autoregressive", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path)]) == 2
    assert main(["generate", "--engine", "autoregressive", "--checkpoint", str(gpt_run[0] / "autoregressive.pt"),
                 "--keep-bars", "1,2", "--out", str(tmp_path)]) == 2
    assert "give it with --init" in capsys.readouterr().err


def test_api_streams_the_growing_roll_and_stops_on_request(gpt_run, tmp_path):
    from engines.api import GenerationProgress, GenerationResult, Request, StudioEngine

    folder = gpt_run[0]
    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={folder}"]), out_dir=tmp_path)
    assert "autoregressive" in engine.engines_available()
    params = Request(engine="autoregressive", mode="BLUE", n=2, seed=0, settings={"max_bars": 2, "top_k": 50})
    items = list(engine.generate_stream(params, every=0.0001))
    progress = [i for i in items if isinstance(i, GenerationProgress)]
    assert progress and progress[-1].sounding.shape == (2, 32, 88)
    assert progress[-1].sounding.sum() >= progress[0].sounding.sum()  # the roll only grows
    views = items[-1].views
    assert len(views) == 2 and views[0].title.startswith("AUTOREGRESSIVE · BLUE")
    named = engine.generate(Request(engine="autoregressive", mode="RED", n=1, settings={"prompt": "a GREEN phrase",
                                                                                           "max_bars": 1}))
    assert named[0].requested_mode == "GREEN"  # the prompt, not the mode picker, says what was asked
    stream = engine.generate_stream(params, run_id="r1", every=0.0001)
    first = next(stream)
    assert isinstance(first, GenerationProgress) and engine.request_stop("r1")
    stopped = list(stream)[-1]
    assert isinstance(stopped, GenerationResult) and stopped.stopped
    for view in stopped.views:   # said to be stopped, with the bars it had written (issue 20, defect 4)
        assert view.stopped and view.title.endswith(" · stopped") and view.bars == 2
        if view.analysis is None:
            assert view.bars_written == 0
        else:   # the bar of its last note
            assert view.bars_written == sum(b <= max(view.notes.start) for b in view.notes.bar_lines[:view.bars])
    assert not any(v.stopped or v.bars_written is not None for v in views)   # a run that ended by itself
    with pytest.raises(StudioError, match="continuation needs a MIDI file"):
        list(engine.generate_stream(Request(engine="autoregressive", keep_bars=[1, 2])))


def test_results_are_analysed_and_rendered_on_the_requests_own_thread(gpt_run, tmp_path):
    """Not on the caller's: a server's worker threads that ran torch (the audio codec's preview) each kept an
    OpenMP team, and every later request paid for them (engines/api/generation.py)."""
    import threading

    from engines.api import Request, StudioEngine

    engine = StudioEngine(load_config(overrides=[f"model.checkpoints_dir={gpt_run[0]}"]), out_dir=tmp_path)
    made_on = []
    views = engine._views

    def recorded(*args, **kwargs):
        made_on.append(threading.current_thread())
        return views(*args, **kwargs)
    engine._views = recorded
    results = engine.generate(Request(engine="autoregressive", mode="BLUE", n=1, settings={"max_bars": 1}))
    assert len(results) == 1 and results[0].midi_path
    assert len(made_on) == 1 and made_on[0] is not threading.current_thread()
    assert made_on[0].name == "autoregressive-sampling"
    made_on[0].join(timeout=10)   # ... and it ends with the request, and its OpenMP team with it
    assert not made_on[0].is_alive()


def test_evaluate_reports_the_issue_keys(gpt_run):
    from engines.evaluation.autoregressive_eval import evaluate_autoregressive

    result = evaluate_autoregressive(str(gpt_run[0] / "autoregressive.pt"), load_config(), n_per_mode=1,
                                     test_limit=16, max_new_tokens=60)
    assert result["engine"] == "autoregressive" and result["n"] == 1 and result["outputs"] == 24
    assert 0 <= result["valid_rate"] <= 1 and set(result["consistency"]["per_mode"]) == {
        "BLACK", "RED", "ORANGE", "YELLOW", "GREEN", "BLUE", "INDIGO", "VIOLET"}
    assert result["perplexity"] > 1 and result["perplexity_unconditioned"] > 1 and result["latency_ms"] > 0
    assert result["pairs"] == 8 and 0 <= result["complexity_pairs"] <= 1
    assert "audio_task" not in result      # this GPT never learned the audio task


def test_evaluate_measures_the_gpts_own_audio_against_the_render_of_its_midi(gpt_audio_run):
    from engines.evaluation.autoregressive_eval import evaluate_autoregressive

    result = evaluate_autoregressive(str(gpt_audio_run[0]), load_config(), n_per_mode=1, test_limit=16,
                                     max_new_tokens=60)
    audio = result["audio_task"]
    assert audio["segments"] + audio["too_long"] <= 3 and audio["segments"] >= 1
    assert (audio["seconds"], audio["codebooks"], audio["codec_codebooks"]) == (2.0, 1, 4)
    assert audio["guidance"] == 4.0   # written as the studio writes it: against the same bars a tritone off
    for figures in (audio, audio["codec_round_trip"], audio["codec_round_trip_coarse"]):
        assert -1 <= figures["chroma_correlation"] <= 1 and figures["log_mel_l1"] > 0
    # the codec's own round trip is the floor: it hears the render far better than an untrained GPT does
    assert audio["codec_round_trip"]["log_mel_l1"] < audio["log_mel_l1"]


def test_evaluate_keeps_the_midi_figures_when_the_codec_the_gpt_learned_is_not_installed(gpt_audio_run, tmp_path):
    from engines.evaluation.autoregressive_eval import evaluate_autoregressive

    no_codec = load_config(overrides=[f"model.checkpoints_dir={tmp_path}"])
    result = evaluate_autoregressive(str(gpt_audio_run[0]), no_codec, n_per_mode=1, test_limit=16, max_new_tokens=40)
    assert result["perplexity"] > 1 and "no audio codec is installed" in result["audio_task"]["skipped"]


@pytest.mark.slow
def test_bench_row_compares_with_hf_gpt2(gpt_run, tmp_path):
    from engines.bench import bench_autoregressive

    assert bench_autoregressive(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), 1) is None
    row = bench_autoregressive(load_config(overrides=[f"model.checkpoints_dir={gpt_run[0]}"]), 1, new_tokens=20)
    assert row["new_tokens"] == 20 and row["tokens_per_second_kv_cache"] > 0 and row["hf_gpt2_tokens_per_second"] > 0
    assert row["ratio_to_hf"] == pytest.approx(row["tokens_per_second_kv_cache"] / row["hf_gpt2_tokens_per_second"],
                                               rel=0.05)
    assert row["seconds_one_segment_from_prompt"] > 0 and row["precision"] == "int8"
    assert row["ratio_float32_to_hf"] == pytest.approx(
        row["tokens_per_second_float32"] / row["hf_gpt2_tokens_per_second"], rel=0.05)


def test_model_card_records_the_bars_from_an_evaluation(gpt_run, tmp_path):
    from engines.training.model_card import ship

    report = {"engine": "autoregressive", "n": 2, "valid_rate": 1.0, "consistency": {"overall": 0.5, "per_mode": {}},
              "complexity_pairs": 0.9, "perplexity": 4.2, "latency_ms": 800.0}
    (tmp_path / "eval.json").write_text(json.dumps(report))
    shipped = ship("autoregressive", gpt_run[0] / "run", tmp_path / "out", str(tmp_path / "eval.json"))
    assert shipped["size_mb"] < 40
    card = (tmp_path / "out" / "autoregressive.md").read_text()
    assert "# Model card: autoregressive" in card and "val perplexity per MIDI token" in card
    assert "| mode named in the prompt heard by the analyzer, mean of modes | >= 80 % | 50% | no |" in card
    assert "| validation perplexity per MIDI token | < 5 | 4.20 | yes |" in card
    # measured again later: `ship --evaluation` without --run re-renders the evaluation, keeps the training part
    (tmp_path / "eval.json").write_text(json.dumps({**report, "consistency": {"overall": 0.85, "per_mode": {}}}))
    from engines.cli import main

    assert main(["ship", "--engine", "autoregressive", "--evaluation", str(tmp_path / "eval.json"),
                 "--set", f"model.checkpoints_dir={tmp_path / 'out'}"]) == 0
    again = (tmp_path / "out" / "autoregressive.md").read_text()
    assert again.split("\n## Quality bars")[0] == card.split("\n## Quality bars")[0]
    assert "| mode named in the prompt heard by the analyzer, mean of modes | >= 80 % | 85% | yes |" in again
    assert again.count("## Evaluation") == 1 and '"overall": 0.85' in again
    assert main(["ship", "--engine", "vae", "--evaluation", str(tmp_path / "eval.json"),
                 "--set", f"model.checkpoints_dir={tmp_path / 'out'}"]) == 2   # no shipped VAE there


def test_prompt_guidance_mixes_the_conditional_and_unconditional_streams(vocabulary):
    from engines.sampling.autoregressive import ClassifierFreeGuidance

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocabulary), block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    prompt = vocabulary.encode(text="a calm phrase", eos=False) + [MIDI]
    plain = vocabulary.encode(eos=False) + [MIDI]
    guided = ClassifierFreeGuidance(model, plain, 2.5)
    cache = guided.new_cache()
    first, _ = guided(torch.tensor([prompt]), cache)
    conditional, _ = model(torch.tensor([prompt]))
    unconditional, _ = model(torch.tensor([plain]))
    assert torch.allclose(first, unconditional + 2.5 * (conditional - unconditional), atol=1e-5)
    token = torch.tensor([[vocabulary.midi_start + 4]])
    step, _ = guided(token, cache)  # the next token goes to both streams
    c2, _ = model(torch.tensor([prompt + [int(token)]]))
    u2, _ = model(torch.tensor([plain + [int(token)]]))
    assert torch.allclose(step, u2 + 2.5 * (c2 - u2), atol=1e-5) and cache.length == len(prompt) + 1


def test_a_segment_longer_than_the_model_learned_is_written_window_by_window():
    """Issue 20, defect 3: 'bars to write = 8' gave at most 4 bars. The shipped GPT learned 4-bar segments;
    8 bars are written as windows that each keep the last 2 bars of the one before."""
    from engines.models.trained_autoregressive import TrainedAutoregressive, bars_window
    from engines.music.notes import Segment

    gpt = TrainedAutoregressive.load("assets/checkpoints/autoregressive.pt")
    four = gpt.generate("a calm BLUE phrase", n=2, temperature=0.8, top_p=0.95, max_bars=4, seed=3)
    eight = gpt.generate("a calm BLUE phrase", n=2, temperature=0.8, top_p=0.95, max_bars=8, seed=3)
    for short, long in zip(four, eight):
        assert short.segment.num_bars <= 4 and long.segment.num_bars == 8
        bar = long.segment.bar_length
        assert long.segment.notes["start"].max() >= 6 * bar                      # notes in the last two bars
        assert (long.segment.notes["start"] + long.segment.notes["duration"]).max() <= 8 * bar
        first = long.segment.notes[long.segment.notes["start"] < 4 * bar]       # the first window as written
        assert first.tolist() == short.segment.notes.tolist()
    # a window: bars 2-3 of a segment as a segment of its own, cut at its end
    notes = np.array([(0, 12, 60, 80, 0), (96, 60, 62, 80, 0), (120, 100, 64, 80, 0), (200, 12, 65, 80, 0)],
                     dtype=eight[0].segment.notes.dtype)                 # 4/4: 48 ticks a bar
    window = bars_window(Segment(notes=notes, num_bars=5), 2, 2)
    assert window.num_bars == 2 and window.bar_start == 2
    assert window.notes.tolist() == [(0, 60, 62, 80, 0), (24, 72, 64, 80, 0)]   # held past its end: cut
    # Stop during the first window ends the windows after it too
    calls = []
    (stopped,) = gpt.generate("a calm BLUE phrase", n=1, max_bars=8, seed=3,
                              on_token=lambda step, rows: calls.append(step) or len(calls) > 20)
    assert stopped.segment.num_bars < 4 and len(calls) == 21


def test_silent_bars_at_the_end_of_what_is_kept_are_kept_as_empty_bars():
    from engines.models.trained_autoregressive import bars_prefix
    from engines.tokenizers.vocabulary import remi_token_names
    from tests.conftest import segment

    names = remi_token_names()
    bar, four_four = names.index("Bar_None"), names.index("TimeSig_4/4")
    sounding = segment([(0, 12, 60, 80), (12, 12, 64, 80)], bars=2)       # notes in bar 1 only
    ids = bars_prefix(sounding, 2)
    assert ids.count(bar) == 3 and ids[-3:] == [bar, four_four, bar]     # bar 1, an empty bar 2, the next
    with pytest.raises(StudioError, match="has 1 bar"):
        bars_prefix(segment([(0, 12, 60, 80)], bars=1), 2)
