"""Training the denoiser (engines/training/diffusion_trainer.py, diffusion_finalize.py): metrics, the EMA
checkpoint, resume, metre statistics and the onset threshold the finalize step calibrates."""
import json
import math
import shutil

import pytest
import torch

from engines.config import load_config
from engines.data.prepare import ensure_corpus_cache
from engines.data.torch_dataset import METRES, WHITE_INDEX, RollDataset
from engines.training.diffusion_trainer import mode_statistics, train_diffusion
from tests.helpers import DIFFUSION_LIMIT, TINY_DIFFUSION

torch.set_num_threads(1)


# ---- training ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_writes_metrics_checkpoints_and_resumes(diffusion_run, tmp_path):
    rows = [json.loads(line) for line in (diffusion_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"]) for r in rows)
    assert (diffusion_run / "loss.png").stat().st_size > 0
    payload = torch.load(diffusion_run / "best.pt", weights_only=True)
    assert payload["engine"] == "diffusion" and payload["metrics"]["val_loss"] == min(r["val_loss"] for r in rows)
    assert payload["metre_counts"].shape == (WHITE_INDEX + 1, len(METRES)) and payload["tempo"].shape == (WHITE_INDEX + 1,)
    resumed = tmp_path / "run"   # a copy: the run is shared by the whole test session
    shutil.copytree(diffusion_run, resumed)
    more = load_config(overrides=TINY_DIFFUSION + ["model.diffusion.epochs=3"])
    train_diffusion(more, resumed, resume=True, limit=DIFFUSION_LIMIT, workers=0)
    rows = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["step"] > rows[1]["step"]


def test_mode_statistics_count_metres_per_mode(diffusion_cfg):
    cache = ensure_corpus_cache(diffusion_cfg)
    data = RollDataset.for_config(cache, cache.split_indices("train")[:200], diffusion_cfg.data)
    stats = mode_statistics(data)
    counts = stats["metre_counts"]
    assert counts[WHITE_INDEX].sum() == 200 and torch.equal(counts[:WHITE_INDEX].sum(0), counts[WHITE_INDEX])
    assert (stats["tempo"] > 20).all()


def test_training_calibrates_the_onset_threshold(diffusion_run):
    from engines.training.diffusion_finalize import CANDIDATES

    payload = torch.load(diffusion_run / "best.pt", weights_only=True)
    calibration = payload["onset_calibration"]
    assert payload["config"]["onset_threshold"] == calibration["onset_threshold"] in CANDIDATES
    counts = [calibration["notes_by_threshold"][str(c)] for c in CANDIDATES]
    assert all(a >= b for a, b in zip(counts, counts[1:]))  # a stricter threshold never sounds more notes
    best = abs(calibration["notes_per_segment"] - calibration["corpus_notes_per_segment"])
    assert all(best <= abs(c - calibration["corpus_notes_per_segment"]) for c in counts)


def test_a_finalize_step_runs_alone_and_is_on_record_after_the_whole_finalize(diffusion_run, tmp_path, monkeypatch):
    import contextlib
    import io

    from engines.cli import main
    from engines.training.model_card import render_card

    run = tmp_path / "run"   # a copy: the run is shared by the whole test session
    shutil.copytree(diffusion_run, run)
    before = torch.load(run / "best.pt", weights_only=True)
    before.pop("attribute_metres")   # as a checkpoint finalized before the step existed
    torch.save(before, run / "best.pt")
    (run / "command.json").write_text(json.dumps({"argv": ["engines", "train", "--engine", "diffusion"],
                                                  "finalize_argv": ["engines", "train", "--finalize-only"]}))
    overrides = sum((["--set", o] for o in TINY_DIFFUSION), [])
    argv = ["train", "--engine", "diffusion", "--finalize-only", "--finalize-step", "attribute-metres",
            "--out", str(run), "--limit", str(DIFFUSION_LIMIT), *overrides]
    monkeypatch.setattr("sys.argv", ["engines", *argv])   # what the command records (python -m engines ...)
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    after = torch.load(run / "best.pt", weights_only=True)
    assert after["attribute_metres"]["metres"].shape == (DIFFUSION_LIMIT,)
    for key, value in before.items():   # everything else as it was: no statistics, targets or threshold refitted
        if isinstance(value, torch.Tensor):
            assert torch.equal(after[key], value), key
        elif key != "state_dict":
            assert after[key] == value, key
    command = json.loads((run / "command.json").read_text())
    assert command["finalize_argv"] == ["engines", "train", "--finalize-only"]   # the whole finalize stays on record
    assert [step["argv"] for step in command["finalize_steps"]] == [["engines", *argv]]
    card = render_card("diffusion", after, command, [], None, 1.0)
    assert "--finalize-only`, then `python -m engines train --engine diffusion --finalize-only --finalize-step " \
           "attribute-metres" in card
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        assert main(["train", "--engine", "diffusion", "--finalize-only", "--finalize-step", "tempo",
                     "--out", str(run)]) == 2
        assert main(["train", "--engine", "vae", "--finalize-only", "--finalize-step", "targets",
                     "--out", str(run)]) == 2
    assert "unknown finalize step 'tempo'; the diffusion's are statistics, targets" in errors.getvalue()
    assert "--finalize-step applies to the diffusion's and the GPT's finalize" in errors.getvalue()
