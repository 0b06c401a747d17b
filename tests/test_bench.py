"""`python -m engines bench`: each row turns the seconds it measures into the rate it reports (speed itself is never
asserted: the clock is replaced where a rate is checked)."""
import pytest

from engines import bench
from engines.bench import bench_analyzer, bench_corpus, bench_render, bench_tokenization
from engines.config import load_config


def test_the_median_of_the_timed_runs_is_what_a_row_measures(monkeypatch):
    ticks = iter([0.0, 3.0, 10.0, 11.0, 20.0, 22.0])   # runs of 3, 1 and 2 seconds
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(ticks))
    calls = []
    assert bench._median_seconds(lambda: calls.append(1), 3) == 2.0 and len(calls) == 3


def test_rows_divide_what_they_did_by_the_seconds_it_took(monkeypatch):
    cfg = load_config()
    monkeypatch.setattr(bench, "_median_seconds", lambda func, repeats: (func(), 0.5)[1])   # every run: 0.5 s
    tokens = bench_tokenization(cfg, repeats=1, n_files=5)
    assert tokens["files"] == 5
    for kind in ("remi", "cpword"):
        for what in ("midi_files_per_second", "segments_per_second", "decodes_per_second"):
            assert tokens[f"{kind}_{what}"] == 10.0   # 5 files in 0.5 s
    assert bench_analyzer(cfg, repeats=1, n=5) == {"segments": 5, "ms_per_segment": 100.0}


def test_render_and_corpus_rows_report_what_they_rendered_and_opened(monkeypatch):
    from pathlib import Path

    cfg = load_config()
    render = bench_render(cfg, repeats=1)
    assert render["segments"] == 5 and render["x_realtime_min"] <= render["x_realtime_median"]
    assert 4 <= render["audio_seconds_median"] <= 30   # four bars and the release tail, at the corpus' tempi
    monkeypatch.setattr(bench, "_median_seconds", lambda func, repeats: (func(), 0.25)[1])
    corpus = bench_corpus(cfg, repeats=1)
    archive_mb = Path(cfg.data.shipped_cache).stat().st_size / 2**20
    assert corpus == {"open_seconds": 0.25, "unpack_shipped_seconds": 0.25,
                      "shipped_archive_mb": pytest.approx(archive_mb, abs=0.01)}


def test_vae_bench_row_is_absent_without_a_checkpoint_and_positive_with_one(tiny_checkpoints, tmp_path):
    from engines.bench import bench_vae

    assert bench_vae(load_config(overrides=[f"model.checkpoints_dir={tmp_path}"]), repeats=1) is None
    row = bench_vae(load_config(overrides=[f"model.checkpoints_dir={tiny_checkpoints['vae'].parent}"]), repeats=1)
    assert row["ms_per_segment_batch1"] > 0 and row["ms_per_segment_batch8"] > 0

@pytest.mark.slow
def test_the_arrange_rows_time_an_8_bar_section_per_engine_and_a_32_bar_piece(tiny_checkpoints, tmp_path):
    import shutil

    from engines.bench import bench_arrange

    folder = tiny_checkpoints["vae"].parent
    fast = ["generation.arrange.diffusion_steps=4", "generation.verify.candidates=2",
            "generation.arrange.section_tries=1"]
    row = bench_arrange(load_config(overrides=[f"model.checkpoints_dir={folder}", *fast]), repeats=1)
    assert set(row) == {"seconds_8_bars_diffusion", "seconds_8_bars_autoregressive", "seconds_32_bars_4_sections"}
    assert all(seconds > 0 for seconds in row.values())
    only_vae = tmp_path / "only-vae"
    only_vae.mkdir()
    shutil.copyfile(tiny_checkpoints["vae"], only_vae / "vae.pt")
    assert bench_arrange(load_config(overrides=[f"model.checkpoints_dir={only_vae}", *fast]), repeats=1) == {}
