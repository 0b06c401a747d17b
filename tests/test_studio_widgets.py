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
