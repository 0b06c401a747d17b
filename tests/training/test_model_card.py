"""Model cards (engines/training/model_card.py): the bars a card reads from an evaluate report."""
from engines.training.model_card import conditioning_bars, diffusion_bars


def report(raw_overall, per_mode, mae, near_copies) -> dict:
    return {"consistency": {"overall": 0.99, "per_mode": {},   # the checked figure: not what the raw bars read
                            "raw": {"overall": raw_overall, "per_mode": per_mode}},
            "axes": {"mae": mae, "mae_unconditioned": 0.31},
            "copies": {"raw": {"near_copy_rate": near_copies}, "verified": {"near_copy_rate": 0.0}},
            "frechet": {"distance": 25.0, "real_baseline": 12.2}, "latency_ms": {"raw": 300.0}}


def test_the_raw_conditioning_bars_read_the_raw_figures_and_say_which_hold():
    rows = conditioning_bars(report(0.9, {"RED": 0.95, "BLUE": 0.55}, 0.11, 0.02), consistency=0.88, axes_mae=0.12)
    assert [(name.split(",")[0], measured, met) for name, _, measured, met in rows] == [
        ("raw consistency (analyzer)", "90.0%", True),
        ("raw consistency", "55%", False),                                     # its worst mode is under 60 %
        ("asked vs heard axes", "0.110 (0.310)", True),
        ("near copies of training segments", "2.0%", False)]
    # a report without verification has the raw figures at the top level
    plain = {"consistency": {"overall": 0.8, "per_mode": {"RED": 0.8}}, "copies": {"near_copy_rate": 0.0}}
    assert [met for *_, met in conditioning_bars(plain, 0.88, 0.12)] == [False, True, True]


def test_the_diffusion_card_holds_the_raw_bars_then_its_own():
    rows = diffusion_bars(report(0.9, {"RED": 0.9}, 0.11, 0.0))
    assert [r[1] for r in rows[:4]] == [">= 88 %", ">= 60 %", "<= 0.12", "<= 1 %"]
    assert rows[4][0].startswith("Fréchet distance") and rows[4][2] == "25.00 (12.20)"


def test_a_card_of_a_run_started_from_another_gives_the_whole_chain_its_total_and_both_curves():
    from engines.training.model_card import codec_bars, render_card

    payload = {"engine": "codec", "state_dict": {}, "config": {}, "metrics": {"epoch": 2}}
    rows = [{"epoch": e, "minutes": m, "train_loss": 1.0, "val_loss": 1.0, "val_si_snr": snr, "val_mel_l1": 1.8}
            for e, m, snr in ((1, 5.0, 5.1), (2, 10.0, 6.2))]
    command = {"argv": ["engines", "train", "--engine", "codec", "--set", "model.codec.init_checkpoint=A.pt"],
               "preceded_by": [{"command": "python -m engines train --engine codec --out first", "minutes": 35.0,
                                "rows": [dict(rows[0], val_si_snr=3.8)]}]}
    card = render_card("codec", payload, command, rows, None, 12.0)
    assert "`python -m engines train --engine codec --out first`, then `python -m engines train --engine codec " \
           "--set model.codec.init_checkpoint=A.pt`, then `python -m engines ship" in card
    assert "10.0 min on" in card and "45.0 min in all with the step before it" in card
    assert card.index("| 1 | 5.0 | 1.0000 | 1.0000 | 3.80 |") < card.index("This run:") \
        < card.index("| 2 | 10.0 | 1.0000 | 1.0000 | 6.20 |")
    bars = codec_bars({"token_rate": 200, "n": 100, "si_snr_db": 6.1, "si_snr_db_median": 5.9, "log_mel_l1": 1.6,
                       "bitrate_kbps": 2.0})
    assert [(name.split(",")[0], met) for name, _, _, met in bars][1:3] == [("SI-SNR of the round trip", True),
                                                                            ("the same", False)]


def test_the_card_names_the_machine_the_run_trained_on_not_the_one_that_ships_it():
    from engines.training.common import device_name
    from engines.training.model_card import render_card

    payload = {"engine": "diffusion", "state_dict": {}, "config": {}, "metrics": {"epoch": 1}}
    rows = [{"epoch": 1, "step": 224, "minutes": 6.6, "train_loss": 1.0, "val_loss": 1.0}]
    card = render_card("diffusion", payload, {"argv": ["engines", "train"], "device": "CUDA (NVIDIA H200)"}, rows,
                       None, 13.0)
    assert "6.6 min on CUDA (NVIDIA H200)" in card
    older = render_card("diffusion", payload, {"argv": ["engines", "train"]}, rows, None, 13.0)   # before the record
    assert f"6.6 min on {device_name()}" in older


def test_the_copies_among_asked_axes_results_are_a_bar_of_their_own_where_measured():
    measured = report(0.9, {"RED": 0.9}, 0.18, 0.0)
    measured["axes"]["copies"] = {"near_copy_rate": 0.0125}
    rows = conditioning_bars(measured, 0.70, 0.15)
    assert [(name, target, value, met) for name, target, value, met in rows[2:4]] == [
        ("asked vs heard axes, mean absolute error (nothing asked)", "<= 0.15", "0.180 (0.310)", False),
        ("near copies among those results", "<= 1 %", "1.2%", False)]
    assert len(rows) == 5 and rows[4][0] == "near copies of training segments, raw"


def test_the_vae_card_adds_the_raw_conditioning_bars_to_its_own():
    from engines.training.model_card import vae_bars

    measured = {**report(0.6, {"RED": 0.6}, 0.18, 0.0), "reconstruction": {"f1": 0.91}, "active_units": 1.0,
                "interpolation": {"paths_with_every_step_smaller": 1.0}}
    measured["consistency"]["per_mode"] = {"RED": 0.99}   # the prior samples' (the VAE issue's own bars)
    rows = vae_bars(measured)
    assert [r[1] for r in rows[-4:]] == [">= 70 %", ">= 60 %", "<= 0.15", "<= 1 %"]
    assert rows[-4][2:] == ("60.0%", False)
