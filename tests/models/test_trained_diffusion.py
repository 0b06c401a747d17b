"""TrainedDiffusion (engines/models/trained_diffusion.py): sampling in the asked metre and tonic, decoding
rolls to notes, errors, and the generate command."""
import contextlib
import io
import json

import numpy as np
import pytest
import torch

from engines.cli import main
from engines.data.torch_dataset import METRES
from engines.errors import StudioError
from engines.models.roll_decoding import DEFAULT_VELOCITY
from tests.helpers import TINY_DIFFUSION

torch.set_num_threads(1)


# ---- the wrapper and decoding -------------------------------------------------------------------------------
def test_sample_gives_segments_in_the_asked_metre_and_tonic(tiny_diffusion):
    segments = tiny_diffusion.sample("BLUE", n=2, steps=4, guidance_scale=2.0, seed=1, metre="3/4")
    assert len(segments) == 2 and all((s.ts_num, s.ts_den) == (3, 4) for s in segments)
    again = tiny_diffusion.sample("BLUE", n=2, steps=4, guidance_scale=2.0, seed=1, metre="3/4")
    assert [s.notes.tolist() for s in segments] == [s.notes.tolist() for s in again]
    drawn = tiny_diffusion.sample("RED", n=3, steps=2, seed=2, sampler="ddpm")
    assert all((s.ts_num, s.ts_den) in METRES for s in drawn)


def test_to_segments_decodes_a_known_roll(tiny_diffusion):
    x0 = torch.full((1, 2, 64, 88), -1.0)
    x0[0, 0, 4, 60 - 21] = 1.0          # onset of middle C at step 4 (beat 2 of 4/4) ...
    x0[0, 1, 4:8, 60 - 21] = 1.0        # ... held for a beat
    (segment,) = tiny_diffusion.to_segments(x0, [METRES.index((4, 4))], "BLUE")
    notes = [(int(n["pitch"]), int(n["start"]), int(n["duration"]), int(n["velocity"])) for n in segment.notes]
    assert notes == [(60, 4 * 3, 4 * 3, DEFAULT_VELOCITY)]  # 3 ticks a sixteenth step (TICKS_PER_QUARTER 12)
    (up,) = tiny_diffusion.to_segments(x0, [METRES.index((4, 4))], "BLUE", tonic="D")
    assert int(up.notes["pitch"][0]) == 62


def test_a_row_that_would_copy_a_training_segment_has_some_of_its_notes_struck(tiny_diffusion, corpus_cache):
    from engines.generation.copies import CopyIndex
    from engines.music.notes import notes_to_roll
    from engines.sampling.diffusion import sample_loop

    index = CopyIndex.build(corpus_cache)
    d, steps = tiny_diffusion.data, tiny_diffusion.model.steps
    meta = corpus_cache.segments
    row = next(int(r) for r in index.rows[::53] if (meta["ts_num"][r], meta["ts_den"][r]) == (4, 4)
               and meta["note_count"][r] >= 12 and (corpus_cache.segment(int(r)).notes["start"] % 3 == 0).all())
    theirs = corpus_cache.segment(row)
    roll = notes_to_roll(theirs.notes, theirs.bar_length, d["segment_bars"], d["steps_per_beat"], d["pitch_low"],
                         d["pitch_high"])[:, :steps]
    target = torch.from_numpy(roll > 0).float() * 2 - 1
    scheduler, metres = tiny_diffusion.scheduler, [METRES.index((4, 4))] * 2

    def memorised(x_t, t):   # a denoiser that predicts the training segment whatever the noise says
        x0 = target.expand_as(x_t).clone()
        return x0, scheduler.eps_from_x0(x0, x_t, t)

    def written(denoise):
        x0 = sample_loop(scheduler, denoise, (2, *target.shape), 12, generator=torch.Generator().manual_seed(0))
        return tiny_diffusion.to_segments(x0, metres)

    assert all(index.nearest(s)[0] == 1.0 for s in written(memorised))
    guarded = tiny_diffusion.away_from_copies(memorised, index, metres, seed=0)
    assert all(index.nearest(s)[0] < index.threshold for s in written(guarded)) and guarded.moved_notes >= 2


def test_decoding_starts_held_notes_and_drops_specks():
    from engines.models.roll_decoding import probabilities_to_segments

    onset, sustain = torch.zeros(1, 64, 88), torch.zeros(1, 64, 88)
    sustain[0, 0:8, 60 - 21] = 1.0           # C held two beats with no onset written
    onset[0, 4, 60 - 21] = 1.0               # ... and re-struck at step 4: two notes
    sustain[0, 10, 64 - 21] = 1.0            # E for one step, no onset: a speck
    four = [METRES.index((4, 4))]

    def notes(**options):
        (segment,) = probabilities_to_segments(onset, sustain, four, [100.0], **options)
        return [(int(n["pitch"]), int(n["start"]) // 3, int(n["duration"]) // 3) for n in segment.notes]

    assert notes() == [(60, 4, 4)]                                  # onsets only: the unstruck start is lost
    assert notes(sustain_onsets=True) == [(60, 0, 4), (60, 4, 4), (64, 10, 1)]
    assert notes(sustain_onsets=True, min_steps=2) == [(60, 0, 4), (60, 4, 4)]


def test_sample_errors_name_the_input(tiny_diffusion):
    with pytest.raises(StudioError, match="unknown metre '7/4'"):
        tiny_diffusion.sample("BLUE", steps=2, metre="7/4")
    with pytest.raises(StudioError, match="n must lie"):
        tiny_diffusion.sample("BLUE", n=0, steps=2)
    with pytest.raises(StudioError, match="unknown mode 'PURPLE'"):
        tiny_diffusion.sample("PURPLE", steps=2)
    with pytest.raises(StudioError, match="steps must lie"):
        tiny_diffusion.sample("BLUE", steps=5000)


def test_generate_command_writes_midi(diffusion_run, tmp_path):
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["generate", "--engine", "diffusion", "--mode", "GREEN", "--n", "2", "--steps", "3",
                     "--guidance", "1.5", "--checkpoint", str(diffusion_run / "best.pt"), "--out", str(tmp_path)]
                    + [arg for key in TINY_DIFFUSION for arg in ("--set", key)])
    assert code == 0
    summary = json.loads(stdout.getvalue())
    assert summary["engine"] == "diffusion" and len(summary["files"]) == 2
    assert all((tmp_path / f"diffusion-green-0-{i}.mid").is_file() for i in range(2))


def test_generate_command_inpaints_and_names_bad_bars(diffusion_run, tmp_path, capsys):
    from engines.data.midi_io import write_segment_midi
    from engines.music.notes import NOTE_DTYPE, Segment

    init = tmp_path / "init.mid"
    notes = np.array([(bar * 48 + beat * 12, 12, 60 + 2 * beat, 80, 0) for bar in range(4) for beat in range(4)],
                     dtype=NOTE_DTYPE)
    write_segment_midi(Segment(notes=notes), init)
    common = ["generate", "--engine", "diffusion", "--mode", "RED", "--n", "1", "--steps", "3", "--checkpoint",
              str(diffusion_run / "best.pt"), "--init", str(init), "--out", str(tmp_path / "out")]
    common += [arg for key in TINY_DIFFUSION for arg in ("--set", key)]
    assert main(common + ["--keep-bars", "1,4"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["files"]
    assert entry["analysis"] is not None  # bars 1 and 4 are there at least
    assert main(common + ["--keep-bars", "one"]) == 2
    assert "--keep-bars takes bar numbers" in capsys.readouterr().err
    assert main(common) == 2
    assert "needs both --init FILE.mid and --keep-bars" in capsys.readouterr().err
    plain = [arg for arg in common if arg not in ("--init", str(init))]
    assert main(plain + ["--classifier-guidance", "2", "--classifier", str(tmp_path / "none.pt")]) == 2
    assert "no guidance classifier at" in capsys.readouterr().err


def test_generate_without_a_checkpoint_says_how_to_train_one(tmp_path, capsys):
    assert main(["generate", "--engine", "diffusion", "--out", str(tmp_path),
                 "--set", f"model.checkpoints_dir={tmp_path}"]) == 2
    assert "train one with `python -m engines train --engine diffusion" in capsys.readouterr().err


def test_each_result_aims_at_a_segment_of_its_mode_drawn_for_it(tiny_diffusion, monkeypatch):
    from engines.models.conditioning import CONDITION_ATTRIBUTES
    from engines.music.analyzer import AXES

    pool = tiny_diffusion.mode_target_pool             # the finalize step's, from the training split
    mode = max(pool, key=lambda m: len(pool[m]))
    assert len(pool[mode]) > 1 and all(len(row) == len(CONDITION_ATTRIBUTES) for row in pool[mode])
    conditions = []
    denoiser = tiny_diffusion.denoiser

    def recording(modes, condition, *args):
        conditions.append(condition)
        return denoiser(modes, condition, *args)

    monkeypatch.setattr(tiny_diffusion, "denoiser", recording)
    first = tiny_diffusion.sample(mode, n=8, steps=2, seed=3)
    names = tiny_diffusion.model.config.attributes
    axes = [names.index(a) for a in AXES]
    values, given = conditions[0]
    assert given[:, axes].eq(1).all() and given[:, names.index("rebracketing")].eq(0).all()   # rhythm free
    pooled = np.array([[row[CONDITION_ATTRIBUTES.index(a)] for a in AXES] for row in pool[mode]])
    drawn = values[:, axes].numpy()
    # each result its own segment's axes (float32 and the valence scale round trip: to 1e-3), all of the mode
    assert all(np.abs(pooled - row).max(axis=1).min() < 1e-3 for row in drawn)
    assert len({tuple(np.round(row, 3)) for row in drawn}) > 1
    again = tiny_diffusion.sample(mode, n=8, steps=2, seed=3)
    assert torch.equal(conditions[1][0], values)        # a request repeats itself
    assert [s.notes.tolist() for s in again] == [s.notes.tolist() for s in first]


def test_a_fade_mixes_two_modes_guidance_step_by_step_along_the_roll(tiny_diffusion):
    """Regional guidance: the share of the asked mode per roll step; all of it is plain guidance toward that
    mode, none of it plain guidance toward the mode faded from."""
    from engines.models.trained_diffusion import FADE_START
    from engines.music.analyzer import MODES
    from tests.conftest import segment

    model = tiny_diffusion
    init = segment([(i * 12, 12, 60 + i % 5, 80) for i in range(16)], bars=4)
    weights = model.fade_weights(init, [1, 2])
    bar = model.model.steps // 4
    assert weights.shape == (model.model.steps,) and torch.all(weights[:2 * bar] == FADE_START)
    assert weights[-1] == 1 and torch.all(weights[2 * bar:].diff() >= 0) and weights[3 * bar] > FADE_START
    x_t = torch.randn(2, 2, model.model.steps, model.model.pitches)
    t = torch.tensor([50, 50])
    mode, start = torch.tensor([MODES.index("RED")] * 2), MODES.index("BLUE")
    metre = torch.zeros(2, dtype=torch.long)

    def denoised(fade, asked=mode):
        return model.denoiser(asked, None, metre, 3.0, fade=fade)(x_t, t)[0]

    ones, zeros = torch.ones(model.model.steps), torch.zeros(model.model.steps)
    assert torch.allclose(denoised((start, ones)), denoised(None), atol=1e-5)
    assert torch.allclose(denoised((start, zeros)), denoised(None, torch.full_like(mode, start)), atol=1e-5)
    # step by step: the first half of the roll guided toward RED, the second toward BLUE
    split = torch.cat([ones[:2 * bar], zeros[2 * bar:]])
    red, blue = denoised(None), denoised(None, torch.full_like(mode, start))
    assert torch.allclose(denoised((start, split)), torch.cat([red[:, :, :2 * bar], blue[:, :, 2 * bar:]], 2), atol=1e-5)
    kept = model.inpaint(init, [1, 2], mode="RED", n=2, steps=4, seed=1, fade_from="BLUE")
    for result in kept:   # the kept bars stay exactly as they were
        assert np.array_equal(result.notes[result.notes["start"] < 2 * init.bar_length], init.notes[:8])


# ---- the metre of a request that asks attributes --------------------------------------------------------------
def test_finalize_keeps_every_training_segments_attributes_and_metre(diffusion_run, corpus_cache, diffusion_cfg):
    from engines.data.torch_dataset import metre_index
    from engines.models.conditioning import CONDITION_ATTRIBUTES, cache_attributes
    from engines.models.conditioning import METRE_NEIGHBOURS
    from engines.training.diffusion_trainer import _datasets
    from tests.helpers import DIFFUSION_LIMIT

    pool = torch.load(diffusion_run / "best.pt", weights_only=True)["attribute_metres"]
    rows = corpus_cache.segments[_datasets(diffusion_cfg, DIFFUSION_LIMIT)[0].indices]
    assert pool["names"] == list(CONDITION_ATTRIBUTES) and pool["neighbours"] == METRE_NEIGHBOURS
    np.testing.assert_allclose(pool["attributes"].float().numpy(), cache_attributes(rows), atol=1e-3)   # float16
    assert pool["metres"].tolist() == [metre_index(int(a), int(b)) for a, b in zip(rows["ts_num"], rows["ts_den"])]


def _with_pool(engine, energies, metres):
    """The engine with a made-up pool: one training segment per (energy, metre index), nothing else asked."""
    from engines.models.trained_diffusion import TrainedDiffusion

    attributes = torch.full((len(energies), 7), 0.5)
    attributes[:, 2] = torch.tensor(energies)   # CONDITION_ATTRIBUTES: rebracketing, temporal complexity, energy...
    pool = {"attributes": attributes.half(), "metres": torch.tensor(metres, dtype=torch.uint8),
            "names": list(engine.attribute_metres["names"]), "neighbours": 4}
    return TrainedDiffusion(engine.model, dict(engine.payload, attribute_metres=pool))


def test_asked_attributes_and_no_mode_draw_the_metre_of_the_nearest_segments(tiny_diffusion):
    from engines.data.torch_dataset import WHITE_INDEX
    from engines.music.analyzer import MODES

    waltz, common = METRES.index((3, 4)), METRES.index((4, 4))
    engine = _with_pool(tiny_diffusion, [0.9, 0.92, 0.95, 0.97, 0.1, 0.12, 0.15, 0.2], [waltz] * 4 + [common] * 4)
    lively = engine.metre_weights(WHITE_INDEX, {"energy": 0.9})
    assert lively[waltz] == 4 and lively.sum() == 4
    assert engine.metre_weights(WHITE_INDEX, {"energy": 0.1, "tension": None})[common] == 4
    assert set(engine.metre_names("WHITE", 6, seed=3, attributes={"energy": 0.95})) == {"3/4"}
    assert set(engine.metre_names("", 6, seed=3, attributes={"energy": 0.05})) == {"4/4"}
    # a mode keeps its own metres, and nothing asked (or only unknown or unset attributes) the corpus's
    red = MODES.index("RED")
    assert torch.equal(engine.metre_weights(red, {"energy": 0.9}), tiny_diffusion.metre_weights(red))
    for asked in (None, {}, {"energy": None, "loudness": 0.9}):
        assert torch.equal(engine.metre_weights(WHITE_INDEX, asked), engine.metre_counts[WHITE_INDEX])
    older = _with_pool(tiny_diffusion, [0.9], [waltz])
    older.attribute_metres = {}   # a checkpoint from before the pool
    assert torch.equal(older.metre_weights(WHITE_INDEX, {"energy": 0.9}), engine.metre_counts[WHITE_INDEX])
    # what sample writes is what metre_names says, the metre drawn before the noise from the request's seed
    segments = engine.sample("WHITE", n=2, steps=2, seed=3, attributes={"energy": 0.95})
    assert [(s.ts_num, s.ts_den) for s in segments] == [(3, 4)] * 2
