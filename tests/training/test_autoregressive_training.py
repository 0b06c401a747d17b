"""Training the GPT (engines/training/autoregressive_trainer.py): the checkpoint, the copy check that picks
best.pt, transposed examples, attribute phrases and the finalize step's mode targets."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from engines.config import load_config
from engines.models.conditioning import CONDITION_ATTRIBUTES
from engines.models.gpt import model_from_checkpoint
from engines.tokenizers.vocabulary import (UnifiedVocabulary, remi_token_names)
from tests.helpers import TINY_GPT


# ---- training, generation, CLI, API, evaluation, bench ------------------------------------------------------
@pytest.mark.slow
def test_training_writes_a_checkpoint_that_rebuilds_itself(gpt_run):
    folder, best = gpt_run
    assert best["val_perplexity"] == pytest.approx(np.exp(best["val_loss"]), rel=1e-6)
    rows = [json.loads(line) for line in (folder / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and "val_perplexity" in rows[0] and (folder / "run" / "loss.png").is_file()
    # each epoch's copy check: best.pt is chosen among epochs at or under the copy target, by loss
    assert 0 <= rows[0]["val_copy_rate"] <= 1
    assert rows[0]["val_select"] == pytest.approx(rows[0]["val_loss"] + (1000 if rows[0]["val_copy_rate"] > 0.01 else 0))
    payload = torch.load(folder / "autoregressive.pt", weights_only=True)
    assert payload["engine"] == "autoregressive" and "lm_head.weight" not in payload["state_dict"]
    vocab = UnifiedVocabulary.from_dict(payload["vocabulary"])
    assert "blue" in vocab.words and "temporal" in vocab.words
    assert model_from_checkpoint(payload).config.vocab_size == len(vocab)


def test_training_examples_are_moved_by_a_few_semitones_with_the_key_their_caption_names():
    from engines.training.autoregressive_trainer import moved_key, pitch_shift_tables

    names = remi_token_names()
    tables = pitch_shift_tables(5)
    assert set(tables) == set(range(-5, 6))
    c4, d4 = names.index("Pitch_60"), names.index("Pitch_62")
    assert tables[2][c4] == d4 and tables[-2][d4] == c4 and tables[0][c4] == c4
    bar = names.index("Bar_None")
    assert all(tables[s][bar] == bar for s in tables)                     # only pitches move
    top = max(i for i, n in enumerate(names) if n.startswith("Pitch_"))
    assert tables[1][top] == -1                                            # off the range: not moved at all
    assert moved_key("D minor", 2) == "E minor" and moved_key("B major", 1) == "C major"
    assert moved_key("A minor", -2) == "G minor"


def test_a_transposed_example_keeps_its_intervals_and_validation_is_never_moved(corpus_cache, vocabulary):
    from engines.training.autoregressive_trainer import SequenceDataset

    rows = corpus_cache.split_indices("train")[:40]
    moving = SequenceDataset(corpus_cache, rows, vocabulary, 384, {"continuation": 1.0}, transpose=5)
    still = SequenceDataset(corpus_cache, rows, vocabulary, 384, {"continuation": 1.0}, fixed=True, transpose=5)

    def pitches(ids):
        return [int(vocabulary.name(t).split("_")[1]) for t in ids
                if vocabulary.modality_of(t) == "midi" and vocabulary.name(t).startswith("Pitch_")]

    moved = 0
    for i in range(len(rows)):
        original = pitches(vocabulary.encode(midi=corpus_cache.segment_tokens(int(rows[i])).astype(np.int64)))
        example = pitches(moving.example(i, np.random.default_rng(i)))
        assert np.all(np.diff(example) == np.diff(original))                # the same intervals, maybe elsewhere
        moved += example != original
        assert pitches(still.example(i, np.random.default_rng(i))) == original
    assert moved > 20


def test_attribute_phrases_teach_the_gpt_the_sliders_and_a_first_checkpoint_is_not_given_them(gpt_run):
    from engines.data.captions import SegmentFacts, attribute_phrase, with_attributes
    from engines.generation import GENERATORS

    assert attribute_phrase({"energy": 0.8, "valence": 0.0, "temporal_complexity": 1.0}) == \
        "energy 7 valence 0 complexity 9"
    facts = SegmentFacts(mode="RED", axes={"energy": 0.9, "valence": 0.2, "tension": 0.5, "intimacy": 0.1,
                                           "motion": 0.6}, temporal_complexity=0.3, rebracketing=0.7, key="C major",
                         metre="4/4", notes_per_bar=6, register=60)
    captions = [with_attributes("a RED phrase", facts, np.random.default_rng(i)) for i in range(40)]
    assert all(c.startswith("a RED phrase ; ") for c in captions)
    assert len(set(captions)) > 10 and any("energy 8" in c for c in captions)       # random subsets
    assert all(c.split(" ; ")[1] for c in captions)                                # never an empty phrase
    trained = GENERATORS["autoregressive"].load(gpt_run[0] / "autoregressive.pt")
    assert trained.takes_attributes                                                  # trained with them
    assert trained.prompt_with_attributes("a calm phrase", {"energy": 0.2, "valence": -1.0}) == \
        "a calm phrase ; energy 2 valence 0"
    shipped = GENERATORS["autoregressive"].load("assets/checkpoints/autoregressive.pt")
    assert not shipped.takes_attributes
    assert shipped.prompt_with_attributes("a calm phrase", {"energy": 0.2}) == "a calm phrase"


def test_a_mode_prompt_asks_for_the_axes_inside_the_mode_and_finalize_restores_them(gpt_run, tmp_path):
    from engines.generation import GENERATORS
    from engines.music.analyzer import AXES, MODES
    from engines.training.autoregressive_trainer import finalize_autoregressive
    from engines.training.common import load_checkpoint, save_checkpoint

    trained = GENERATORS["autoregressive"].load(gpt_run[0] / "autoregressive.pt")
    targets = trained.model.mode_targets
    assert targets and set(targets) <= set(MODES)                                    # stored by the trainer
    mode = next(iter(targets))
    asked = trained.asked_attributes(mode, {"energy": 0.9, "rebracketing": None})
    assert set(asked) == set(AXES) and asked["energy"] == 0.9                        # the slider wins
    assert asked["valence"] == pytest.approx(2 * targets[mode]["valence"] - 1)       # the analyzer's scale
    assert trained.asked_attributes("WHITE", None) == {}                             # no mode, nothing added
    phrase = trained.prompt_with_attributes(f"a {mode} phrase", trained.asked_attributes(mode, None))
    assert phrase.startswith(f"a {mode} phrase ; energy ")
    # a run from before the targets gets them from finalize, the same medians the trainer stores
    payload = load_checkpoint(gpt_run[0] / "autoregressive.pt")
    del payload["mode_targets"]
    save_checkpoint(payload, tmp_path / "best.pt")
    assert GENERATORS["autoregressive"].load(tmp_path / "best.pt").asked_attributes(mode, None) == {}
    summary = finalize_autoregressive(tmp_path / "best.pt", load_config(overrides=TINY_GPT), limit=64)
    finalized = load_checkpoint(tmp_path / "best.pt")
    assert finalized["mode_targets"] == targets
    # and the sampling each mode gets (a small calibration with a limit): a setting of the grid per mode
    from engines.training.autoregressive_calibration import GUIDANCE, TEMPERATURES

    calibration = finalized["sampling_calibration"]
    assert summary["sampling_calibration"] == calibration and set(calibration["modes"]) == {"BLACK", "GREEN"}
    assert finalized["attribute_metres"]["metres"].shape == (64,)   # the same 64 rows' metres
    assert calibration["grid"] == [[3.0, 0.8], [1.5, 0.8]] and calibration["candidates_per_setting"] == 2
    for m in calibration["modes"].values():
        assert (m["prompt_guidance"], m["temperature"]) in {(g, t) for g in GUIDANCE for t in TEMPERATURES}
        assert 0 <= m["heard_new"] <= m["heard"] <= 1 and m["heard_new"] >= m["default"]["heard_new"]
        assert (m["default"]["temperature"], m["default"]["prompt_guidance"]) == (0.8, 3.0)


def test_asked_attributes_and_no_mode_write_in_a_metre_of_the_nearest_segments(gpt_run):
    from engines.data.torch_dataset import METRES
    from engines.generation import GENERATORS, Request

    gpt = GENERATORS["autoregressive"].load(gpt_run[0] / "autoregressive.pt")
    attributes = torch.full((8, 7), 0.5)
    attributes[:, 2] = torch.tensor([0.9, 0.92, 0.95, 0.97, 0.1, 0.12, 0.15, 0.2])   # energy
    waltz, common = METRES.index((3, 4)), METRES.index((4, 4))
    gpt.model.attribute_metres = {"attributes": attributes.half(), "names": list(CONDITION_ATTRIBUTES),
                                  "metres": torch.tensor([waltz] * 4 + [common] * 4, dtype=torch.uint8),
                                  "neighbours": 4}
    lively = Request("autoregressive", mode="WHITE", n=1, seed=5, attributes={"energy": 0.95})
    assert gpt._metre(lively, "WHITE") == (3, 4)
    assert gpt._metre(Request("autoregressive", mode="WHITE", seed=6, attributes={"energy": 0.1}), "WHITE") == (4, 4)
    assert gpt._metre(Request("autoregressive", mode="WHITE", seed=5, attributes={"energy": 0.95}, metre="6/8"),
                      "WHITE") == (6, 8)                                      # a metre asked for wins
    assert gpt._metre(Request("autoregressive", mode="RED", attributes={"energy": 0.95}), "RED") is None
    assert gpt._metre(Request("autoregressive", mode="WHITE", attributes={"tension": None}), "WHITE") is None
    (segment,) = gpt.run(dataclasses.replace(lively, settings={"max_bars": 2}))
    assert (segment.ts_num, segment.ts_den) == (3, 4)
