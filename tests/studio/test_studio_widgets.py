"""Formatting the studio shows (studio/widgets.py): the analyzer's readout, with what was asked beside it."""
from studio.widgets import analysis_markdown

ANALYSIS = {"mode": "RED", "key": "C major", "rebracketing": 0.3, "temporal_complexity": 0.5,
            "axes": {"energy": 0.5, "valence": -0.2, "tension": 0.3, "intimacy": 0.4, "motion": 0.6}}


def test_the_readout_sets_what_was_asked_beside_what_is_heard_on_every_axis():
    table = analysis_markdown(ANALYSIS, "#c00", heading=False, asked={"energy": 0.8, "valence": 0.5,
                                                                      "rebracketing": 0.1}).splitlines()
    assert "| axis | heard | | asked |" in table
    rows = {line.split("|")[1].strip(): line for line in table if line.startswith("| ") and "---" not in line}
    assert rows["Energy"].endswith("| 0.80 |") and rows["Valence"].endswith("| +0.50 |")
    assert rows["Rebracketing"].endswith("| 0.10 |") and rows["Tension"].endswith("| – |")
    assert len(rows) == 8                                       # the header and seven attributes


def test_without_a_request_the_readout_has_no_asked_column():
    table = analysis_markdown(ANALYSIS, "#c00", heading=True)
    assert "asked" not in table and "| Valence | -0.20 |" in table and table.startswith("### ")


def test_counts_read_as_english():
    from studio.widgets import counted

    assert counted(1, "segment") == "1 segment" and counted(0, "segment") == "0 segments"
    assert counted(3, "unconditioned segment") == "3 unconditioned segments"
    assert counted(2, "copy", "copies") == "2 copies"


def test_an_evaluation_of_few_segments_says_its_frechet_distance_is_noise():
    from studio.evaluate_tab import RELIABLE_FRECHET_N, summary_markdown

    def report(n):
        return {"engine": "vae", "n": n, "suite": {
            "frechet": {"distance": 40.0, "interval": [20.0, 70.0], "real_baseline": 30.0, "embedding": "judge"},
            "analyzer": {"consistency": {"overall": 0.5}}, "judge": {"consistency": {"overall": 0.5}},
            "diversity": {"copies": {"near_copy_rate": 0.0, "duplicate_rate": 0.0},
                          "per_mode": {"overall": {"mean_pairwise_distance": 10.0}}},
            "music_stats": {"pitch_range": {"overlap": 0.8}}}}

    few = summary_markdown(report(24))
    assert few.startswith("### VAE: 24 segments") and "mostly sampling noise" in few
    assert "20 per mode" in few
    enough = summary_markdown(report(RELIABLE_FRECHET_N))
    assert "noise" not in enough and "Fréchet distance** 40.000" in enough
    assert summary_markdown(report(1)).startswith("### VAE: 1 segment\n")


def test_a_stopped_result_says_so_instead_of_blaming_the_seed():
    from engines.views import GeneratedView, NoteView
    from studio.generation_panel import result_markdown

    empty = NoteView(start=[], duration=[], pitch=[], velocity=[], bar_lines=[0, 4, 8, 12], regions=[])
    common = dict(title="DIFFUSION · RED · seed 0 · #1", requested_mode="RED", analysis=None, color="#c00",
                  notes=empty, midi_path="a.mid", wav_path=None)
    assert "try another seed" in result_markdown(GeneratedView(**common))
    stopped = result_markdown(GeneratedView(**common, stopped=True, bars_written=0))
    assert "Stopped before the model had settled on any note" in stopped and "seed" not in stopped.split("\n")[-1]


def test_a_whole_song_roll_has_one_legend_entry_per_mode_and_room_for_its_notes():
    """Issue 20, defect 6: a 41-segment song had 41 legend entries, ~50 px of notes and a legend over the axis."""
    from engines.views import NoteView
    from studio.widgets import piano_roll_figure

    modes = ["RED", "BLUE", "GREEN"]
    regions = [{"start": 16.0 * i, "end": 16.0 * (i + 1), "mode": modes[i % 3], "color": f"#00000{i % 3}",
                "label": f"bars {4 * i + 1}-{4 * i + 4}: {modes[i % 3]}"} for i in range(41)]
    starts = [16.0 * i + b for i in range(41) for b in (0.0, 4.0)]
    pitches = [36 + (k * 7) % 60 for k in range(len(starts))]     # five octaves
    notes = NoteView(start=starts, duration=[1.0] * len(starts), pitch=pitches, velocity=[80] * len(starts),
                     bar_lines=[4.0 * b for b in range(165)], regions=regions)
    figure = piano_roll_figure(notes, "song.mid · 41 segments")
    assert [trace.name for trace in figure.data] == modes                         # one per mode, not per segment
    assert sum(len(trace.y) for trace in figure.data) == len(starts)              # every note drawn once
    assert "bars 5-8: BLUE" in [row[2] for row in figure.data[1].customdata]      # hovering names the segment
    assert figure.layout.height >= 6 * (max(pitches) - min(pitches))              # a few px per semitone
    assert figure.layout.legend.y >= 1.0                                          # above the plot, not the axis
    single = piano_roll_figure(NoteView(start=[0.0], duration=[1.0], pitch=[60], velocity=[80],
                                        bar_lines=[0.0, 4.0], regions=[]), "one")
    assert len(single.data) == 1 and not single.layout.showlegend and single.layout.height == 340


def test_the_live_view_sends_each_variations_levels_from_the_top_pitch_down():
    import base64

    import numpy as np

    from studio.widgets import live_roll

    sounding = np.zeros((3, 64, 88), np.float32)
    sounding[0, 0:4, 60 - 21] = 1.0                     # variation 1: a C4 for a beat
    sounding[2, 10, 96 - 21] = 0.5                      # variation 3: a half-heard C7 (the top shown) at step 10
    sounding[1, 5, 30 - 21] = 1.0                       # below C2: not shown
    roll = live_roll(sounding, [16, 16, 12], "#3366cc")
    assert {k: roll[k] for k in ("color", "n", "steps", "pitches", "bars", "bar_steps")} == {
        "color": "#3366cc", "n": 3, "steps": 64, "pitches": 61, "bars": 4, "bar_steps": [16, 16, 12]}
    levels = np.frombuffer(base64.b64decode(roll["levels"]), np.uint8).reshape(3, 61, 64)
    assert levels[0, 96 - 60, 0:4].tolist() == [255] * 4 and levels[0].sum() == 4 * 255   # C4, 36 below C7
    assert levels[2, 0, 10] == 128 and levels[2].sum() == 128
    assert levels[1].sum() == 0
    assert len(roll["levels"]) < 4 * 3 * 61 * 64 / 3 + 4   # base64 of one byte per cell: a few kilobytes
