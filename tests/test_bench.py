"""`python -m engines bench` runs end to end and reports sane, positive numbers (speed is never asserted)."""
from engines.bench import bench_analyzer, bench_corpus, bench_render, bench_tokenization
from engines.config import load_config


def test_bench_rows_have_their_keys_and_positive_values():
    cfg = load_config()
    tokens = bench_tokenization(cfg, repeats=1, n_files=5)
    assert tokens["files"] == 5
    for kind in ("remi", "cpword"):
        for what in ("midi_files_per_second", "segments_per_second", "decodes_per_second"):
            assert tokens[f"{kind}_{what}"] > 0
    assert bench_analyzer(cfg, repeats=1, n=5)["ms_per_segment"] > 0
    render = bench_render(cfg, repeats=1)
    assert render["segments"] == 5 and render["x_realtime_min"] > 0 and render["audio_seconds_median"] > 1
    corpus = bench_corpus(cfg, repeats=1)
    assert corpus["open_seconds"] > 0 and corpus["unpack_shipped_seconds"] > 0 and corpus["shipped_archive_mb"] > 0


def test_vae_bench_row_is_absent_without_a_checkpoint_and_positive_with_one(tmp_path):
    import shutil

    from engines.bench import bench_vae
    from engines.training.vae_trainer import train_vae

    cfg = load_config(overrides=[f"model.checkpoints_dir={tmp_path}", "model.vae.latent_dim=8",
                                 "model.vae.hidden_dim=16", "model.vae.batch_size=16", "model.vae.epochs=1"])
    assert bench_vae(cfg, repeats=1) is None
    train_vae(cfg, tmp_path / "run", limit=32, workers=0)
    shutil.copyfile(tmp_path / "run" / "best.pt", tmp_path / "vae.pt")
    row = bench_vae(cfg, repeats=1)
    assert row["ms_per_segment_batch1"] > 0 and row["ms_per_segment_batch8"] > 0
