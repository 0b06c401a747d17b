"""Captions of corpus segments (engines/data/captions.py): varied, reproducible and true to the cache row."""
from __future__ import annotations


import numpy as np

from engines.data.cache import FEATURE_NAMES
from engines.data.captions import SegmentFacts, complexity_level, describe, facts_from_row, mode_named, prompt_for


# ---- captions ---------------------------------------------------------------------------------------------
def _facts(**kw) -> SegmentFacts:
    values = dict(mode="BLUE", axes={"energy": 0.1, "valence": 0.2, "tension": 0.5, "intimacy": 0.9, "motion": 0.2},
                  temporal_complexity=0.7, rebracketing=0.9, key="D minor", metre="3/4", notes_per_bar=3,
                  register=50.0)
    values.update(kw)
    return SegmentFacts(**values)


def test_captions_vary_but_are_reproducible_and_say_true_things():
    captions = [describe(_facts(), np.random.default_rng(i)) for i in range(60)]
    assert captions == [describe(_facts(), np.random.default_rng(i)) for i in range(60)]
    assert len(set(captions)) > 30
    joined = " ".join(captions)
    for word in ("BLUE", "high temporal complexity", "D minor", "3/4", "intimate"):
        assert word in joined
    for wrong in ("RED", "low temporal complexity", "energetic", "E major"):
        assert wrong not in joined
    assert 0.6 < np.mean(["BLUE" in c for c in captions]) < 1.0  # the mode is sometimes left out
    assert not any(" a excerpt" in c or " a intimate" in c for c in captions)


def test_caption_facts_come_from_the_cache_row(corpus_cache):
    row = corpus_cache.segments[10]
    facts = facts_from_row(row, FEATURE_NAMES)
    assert facts.metre == f"{row['ts_num']}/{row['ts_den']}" and 0 <= facts.axes["valence"] <= 1
    assert complexity_level(0.2) == "low" and complexity_level(0.5) == "medium" and complexity_level(0.9) == "high"
    assert prompt_for("RED", "high") == "generate a RED segment with high temporal complexity"
    assert prompt_for("ORANGE") == "generate an ORANGE segment" and prompt_for(None) == "generate a segment"
    assert mode_named("a calm, intimate Blue phrase") == "BLUE" and mode_named("a calm phrase") is None
