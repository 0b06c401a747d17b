"""`python -m engines train --engine autoregressive`: the GPT over text + MIDI (+ audio) tokens.

    vocabulary  the text range is learned from `captions_per_segment` captions of every training segment
                (engines/data/captions.py) plus the studio's default prompts; the MIDI range is REMI's
    examples    each training segment becomes, at random by `task_weights` (drawn afresh every epoch):
                  caption_to_midi   <bos> <text> caption <midi> REMI <eos>     (a new caption every time)
                  continuation      <bos> <midi> REMI <eos>                    (any prefix can be continued)
                  midi_to_audio     <bos> <midi> REMI of the opening bars <audio> codec codes <eos>
                                    (engines/data/audio_tokens.py: a segment drawn from the rendered ones,
                                    `audio_codebooks` coarse codebooks of `audio_seconds`, frame by frame)
                loss on what the task writes and <eos> only: the text (and for audio the REMI) is given
    augment     each training example moved by a random shift of up to `transpose` semitones (its REMI pitch
                tokens, and the key its caption names), so no training segment is seen twice the same way
    validation  the same examples with fixed captions (seeded by row), never moved; `val_perplexity` =
                exp(val_loss) is the perplexity per MIDI token; then `copy_check_samples` prompted samples
                (the held-out phrasings, at the studio's sampling defaults) against the train split's copy
                index: `val_copy_rate`. best.pt is the lowest val_loss among epochs whose copy rate is at
                most `copy_target` (an epoch above it ranks after every one under it: `val_select`)
    loop        engines/training/ema_loop.py (progress, resume, JSON lines, loss plot, --max-minutes), as the
                other engines; batches are drawn from length buckets, which halves the padding's cost

Segments whose REMI does not fit `block_size` with a caption are left out (the corpus's longest 0.6 %).
The MIDI to audio task learns the tokens of one codec (`codec_checkpoint`, default the shipped codec.pt): the
checkpoint records its fingerprint, and the studio writes audio only with that codec. Its validation figures
(`val_audio_loss`, `val_audio_accuracy`) come from held-out segments of their own, so `val_perplexity` stays
the perplexity per MIDI token. `init_checkpoint` starts from a trained GPT and adds the audio range to its
vocabulary (its text and MIDI ids unchanged).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.config import Config
from engines.data.cache import FEATURE_NAMES, SegmentCache
from engines.data.captions import (ATTRIBUTE_WORDS, attribute_phrase, describe, facts_from_row, prompt_for,
                                   with_attributes)
from engines.data.prepare import ensure_corpus_cache
from engines.errors import StudioError
from engines.models.conditioning import mode_targets
from engines.models.gpt import GPT, IGNORE, checkpoint_payload
from engines.music.analyzer import MODES
from engines.tokenizers.vocabulary import AUDIO, MIDI, PAD, UnifiedVocabulary, remi_token_names
from engines.training.ema_loop import LoopSettings, train_with_ema
from engines.training.vae_trainer import _data_meta

TASKS = ("caption_to_midi", "continuation", "midi_to_audio")
CAPTION_ROOM = 48  # tokens kept free for <bos> <text> caption <midi> when choosing segments that fit


def build_vocabulary(cache: SegmentCache, indices, captions_per_segment: int, seed: int = 0,
                     attribute_captions: float = 0.0) -> UnifiedVocabulary:
    rng = np.random.default_rng(seed)
    captions = [prompt_for(m, c) for m in (*MODES, None) for c in (None, "low", "medium", "high")]
    if attribute_captions > 0:   # every attribute word and level, whatever the rows drawn
        captions.append(attribute_phrase({name: level / 9 for level, name in enumerate(ATTRIBUTE_WORDS)}))
        captions.append(" ; ".join(str(level) for level in range(10)))
    for row in cache.segments[np.asarray(indices)]:
        facts = facts_from_row(row, FEATURE_NAMES)
        captions += [describe(facts, rng) for _ in range(captions_per_segment)]
    return UnifiedVocabulary.build(captions, remi_token_names())


def fitting_indices(cache: SegmentCache, indices, block_size: int) -> np.ndarray:
    indices = np.asarray(indices)
    return indices[cache.segments["token_count"][indices] <= block_size - CAPTION_ROOM]


class SequenceDataset(Dataset):
    """Training examples (x, y) of the rows `indices` (module docstring). `fixed`: the same caption and
    task for a row every time (validation)."""

    def __init__(self, cache: SegmentCache, indices, vocabulary: UnifiedVocabulary, block_size: int,
                 task_weights: dict, fixed: bool = False, seed: int = 0, transpose: int = 0,
                 attribute_captions: float = 0.0, audio=None):
        self.cache, self.indices, self.vocabulary = cache, np.asarray(indices), vocabulary
        self.block_size, self.fixed, self.seed = block_size, fixed, seed
        self.transpose = 0 if fixed else int(transpose)
        self.attribute_captions = float(attribute_captions)
        self.shifts = pitch_shift_tables(self.transpose) if self.transpose else {}
        unknown = set(task_weights) - set(TASKS)
        if unknown:
            raise StudioError(f"unknown training task '{sorted(unknown)[0]}'; choose from {', '.join(TASKS)}")
        weights = np.array([max(float(task_weights.get(t, 0)), 0.0) for t in TASKS])
        if weights[2] > 0 and audio is None:
            raise StudioError("the midi_to_audio task needs the audio codec's tokens (model.autoregressive."
                              "codec_checkpoint); set model.autoregressive.task_weights.midi_to_audio=0 without one")
        if weights[:2].sum() <= 0:
            raise StudioError("model.autoregressive.task_weights must give caption_to_midi or continuation a "
                              "weight above 0")
        self.audio = audio if weights[2] > 0 else None   # an AudioExamples, or None: MIDI tasks only
        self.audio_p = float(weights[2] / weights.sum()) if self.audio is not None else 0.0
        self.task_p = weights[:2] / weights[:2].sum()

    def __len__(self) -> int:
        return len(self.indices)

    def example(self, i: int, rng: np.random.Generator) -> list[int]:
        if self.audio is not None and rng.random() < self.audio_p:   # an audio example in this row's place
            return self.audio.example(int(rng.integers(len(self.audio))))
        row = int(self.indices[i])
        remi = self.cache.segment_tokens(row).astype(np.int64)
        shift = int(rng.integers(-self.transpose, self.transpose + 1)) if self.transpose else 0
        if shift:
            moved = self.shifts[shift][remi]
            remi, shift = (remi, 0) if (moved < 0).any() else (moved, shift)   # a pitch off the range: unmoved
        if rng.choice(2, p=self.task_p) == 0:
            facts = facts_from_row(self.cache.segments[row], FEATURE_NAMES)
            if shift:
                facts = replace(facts, key=moved_key(facts.key, shift))
            caption = describe(facts, rng)
            if self.attribute_captions and rng.random() < self.attribute_captions:
                caption = with_attributes(caption, facts, rng)
            return self.vocabulary.encode(text=caption, midi=remi)
        return self.vocabulary.encode(midi=remi)

    def __getitem__(self, i: int) -> dict:
        seed = (self.seed, int(self.indices[i])) if self.fixed else int(torch.randint(0, 2 ** 62, ()).item())
        ids = self.example(i, np.random.default_rng(seed))[:self.block_size + 1]
        return training_pair(ids)


def training_pair(ids: list[int]) -> dict:
    """x and y (ids shifted by one) of one example; y ignores what the task is given: up to the first MIDI
    token, or for an audio example up to the first audio token."""
    x, y = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
    y[:ids.index(AUDIO) if AUDIO in ids else ids.index(MIDI)] = IGNORE
    return {"x": x, "y": y}


class AudioExamples(Dataset):
    """The midi_to_audio examples of an AudioTaskSet: <bos> <midi> REMI of the opening bars <audio> codes <eos>
    (those longer than block_size + 1 are left out)."""

    def __init__(self, cache: SegmentCache, task_set, vocabulary: UnifiedVocabulary, block_size: int):
        from engines.data.audio_tokens import opening_remi

        self.vocabulary, self.codes = vocabulary, task_set.codes
        self.remi = [opening_remi(cache.segment_tokens(int(row)), int(bars))
                     for row, bars in zip(task_set.rows, task_set.bars)]
        audio_length = task_set.codes.shape[1] * task_set.codes.shape[2]
        self.keep = np.array([i for i, remi in enumerate(self.remi) if len(remi) + audio_length + 4 <= block_size + 1],
                             np.int64)
        if not len(self.keep):
            raise StudioError("no audio-task example fits model.autoregressive.block_size; raise it or lower "
                              "audio_seconds or audio_codebooks")

    def __len__(self) -> int:
        return len(self.keep)

    def example(self, j: int) -> list[int]:
        i = int(self.keep[j])
        return self.vocabulary.encode(midi=self.remi[i], audio=self.codes[i].astype(np.int64))

    def __getitem__(self, j: int) -> dict:
        return training_pair(self.example(j))


def pitch_shift_tables(largest: int) -> dict[int, np.ndarray]:
    """{shift: (REMI vocabulary,) int64} for shifts -largest..largest: a pitch token's id moved by `shift`
    semitones (-1 where that leaves the tokenizer's range); every other token maps to itself."""
    names = remi_token_names()
    index = {name: i for i, name in enumerate(names)}
    tables = {}
    for shift in range(-largest, largest + 1):
        table = np.arange(len(names), dtype=np.int64)
        for i, name in enumerate(names):
            if name.startswith("Pitch_"):
                table[i] = index.get(f"Pitch_{int(name.split('_')[1]) + shift}", -1)
        tables[shift] = table
    return tables


def moved_key(key: str, shift: int) -> str:
    """A caption's key ("D minor") moved by `shift` semitones ("E minor" for +2)."""
    from engines.music.features import PITCH_NAMES

    tonic, _, quality = key.partition(" ")
    return f"{PITCH_NAMES[(PITCH_NAMES.index(tonic) + shift) % 12]} {quality}" if tonic in PITCH_NAMES else key


def collate(items: list[dict]) -> dict:
    """Pad to the longest example of the batch: x with <pad>, y with IGNORE."""
    length = max(len(it["x"]) for it in items)
    x = torch.full((len(items), length), PAD, dtype=torch.long)
    y = torch.full((len(items), length), IGNORE, dtype=torch.long)
    for i, it in enumerate(items):
        x[i, :len(it["x"])], y[i, :len(it["y"])] = it["x"], it["y"]
    return {"x": x, "y": y}


@torch.no_grad()
def validate(model: GPT, loader, device) -> dict:
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        x, y = batch["x"].to(device), batch["y"].to(device)
        _, loss = model(x, y)
        n = int((y != IGNORE).sum())
        total, count = total + loss.item() * n, count + n
    loss = total / max(count, 1)
    return {"val_loss": loss, "val_perplexity": float(np.exp(loss))}


@torch.no_grad()
def validate_audio(model: GPT, loader, device) -> dict:
    """Loss and top-1 accuracy per audio token of held-out audio-task examples (teacher-forced)."""
    model.eval()
    total, right, count = 0.0, 0, 0
    for batch in loader:
        x, y = batch["x"].to(device), batch["y"].to(device)
        logits, loss = model(x, y)
        n = int((y != IGNORE).sum())
        total, count = total + loss.item() * n, count + n
        right += int(((logits.argmax(-1) == y) & (y != IGNORE)).sum())
    return {"val_audio_loss": total / max(count, 1), "val_audio_accuracy": right / max(count, 1)}


def copy_check(model: GPT, vocabulary: UnifiedVocabulary, data: dict, copies, samples: int, seed: int = 0) -> float:
    """The near-copy rate of `samples` prompted samples (held-out phrasings over the modes, the studio's
    default sampling) against the train split: what best.pt selection keeps under copy_target."""
    from engines.evaluation.autoregressive_eval import mode_prompt
    from engines.generation.autoregressive import AutoregressiveSettings
    from engines.models.trained_autoregressive import FALLBACK_TEMPERATURE, TrainedAutoregressive

    defaults = AutoregressiveSettings()
    trained = TrainedAutoregressive(model, {"vocabulary": vocabulary.to_dict(), "data": data, "state_dict": {}},
                                    device=next(model.parameters()).device, precision="float32")
    was_training = model.training
    similar = []
    for i in range(samples):
        mode = MODES[i % len(MODES)]
        (generated,) = trained.generate(mode_prompt(mode, i // len(MODES)), n=1, temperature=FALLBACK_TEMPERATURE,
                                        top_k=defaults.top_k, top_p=defaults.top_p, seed=seed + i)
        if len(generated.segment.notes):
            similar.append(copies.nearest(generated.segment)[0] >= copies.threshold)
    model.train(was_training)
    return float(np.mean(similar)) if similar else 0.0


def train_autoregressive(cfg: Config, out_dir: str | Path, max_minutes: float = 0, resume: bool = False,
                         limit: int = 0, seed: int = 0, workers: int = 1, val_limit: int = 2000) -> dict:
    """Train; returns the best epoch's metrics. `limit` caps the training segments (tests, smoke runs),
    `val_limit` the validation segments measured each epoch."""
    ac = cfg.model.autoregressive
    cache = ensure_corpus_cache(cfg)
    train_rows = fitting_indices(cache, cache.split_indices("train"), ac.block_size)
    val_rows = fitting_indices(cache, cache.split_indices("validation"), ac.block_size)
    if limit:
        train_rows, val_rows = train_rows[:limit], val_rows[:max(limit // 8, 8)]
    val_rows = val_rows[:val_limit]
    if not len(train_rows) or not len(val_rows):
        raise StudioError("no training segments fit model.autoregressive.block_size; raise it")
    init = load_init(ac.init_checkpoint) if ac.init_checkpoint else None
    vocabulary = UnifiedVocabulary.from_dict(init["vocabulary"]) if init else \
        build_vocabulary(cache, train_rows, ac.captions_per_segment, seed, ac.attribute_captions)
    audio_train = audio_val = audio_task = None
    if float(ac.task_weights.get("midi_to_audio", 0)) > 0:
        audio_train, audio_val, audio_task, vocabulary = audio_task_data(cfg, cache, vocabulary, limit)
    train_set = SequenceDataset(cache, train_rows, vocabulary, ac.block_size, ac.task_weights,
                                transpose=ac.transpose, attribute_captions=ac.attribute_captions, audio=audio_train)
    val_set = SequenceDataset(cache, val_rows, vocabulary, ac.block_size, ac.task_weights, fixed=True, seed=seed,
                              attribute_captions=ac.attribute_captions, audio=audio_val)
    val_set.audio, val_set.audio_p = None, 0.0   # MIDI tasks only: val_perplexity stays per MIDI token
    checking = ac.copy_check_samples > 0
    settings = LoopSettings(ac.learning_rate, ac.weight_decay, ac.batch_size, ac.epochs, ac.ema_decay,
                            val_batch_size=64, collate=collate,
                            lengths=cache.segments["token_count"][train_rows],  # batches of similar length
                            select_on="val_select" if checking else "val_loss")
    data = _data_meta(cfg)
    copies = None
    if checking:
        from engines.generation.copies import CopyIndex

        copies = CopyIndex.build(cache, "train", threshold=cfg.generation.verify.copy_threshold)

    audio_loader = None if audio_val is None else torch.utils.data.DataLoader(audio_val, batch_size=64,
                                                                              collate_fn=collate)

    def validate_and_check(ema, loader, device) -> dict:
        row = validate(ema, loader, device)
        if audio_loader is not None:
            row.update(validate_audio(ema, audio_loader, device))
        if checking:
            row["val_copy_rate"] = copy_check(ema, vocabulary, data, copies, ac.copy_check_samples, seed)
            # an epoch over the copy target ranks after every epoch under it, then by its loss
            row["val_select"] = row["val_loss"] + (1000.0 if row["val_copy_rate"] > ac.copy_target else 0.0)
        return row
    config = replace(ac, vocab_size=len(vocabulary))

    # what a mode prompt's attribute phrase asks for: the axes inside the mode's region (conditioning.py)
    targets = mode_targets(cache.segments[np.sort(train_rows)])

    def payload(ema, row):
        extra = {"data": data, "mode_targets": targets,
                 "training": {"segments": int(len(train_rows)), "task_weights": dict(ac.task_weights),
                              "init_checkpoint": ac.init_checkpoint or None}}
        if audio_task is not None:
            extra["audio_task"] = audio_task
        return checkpoint_payload(ema, vocabulary.to_dict(), row, extra)

    return train_with_ema(lambda: build_gpt(config, init), train_set, val_set, settings,
                          loss_fn=lambda model, batch: model(batch["x"], batch["y"])[1],
                          validate_fn=validate_and_check, payload_fn=payload, out_dir=out_dir,
                          max_minutes=max_minutes,
                          resume=resume, seed=seed, workers=workers)


def load_init(path: str | Path) -> dict:
    """The GPT checkpoint a run starts from (`init_checkpoint`)."""
    from engines.training.common import load_checkpoint

    return load_checkpoint(path, engine="autoregressive")


def build_gpt(config, init: dict | None = None) -> GPT:
    """A GPT of `config`; with `init` (a checkpoint) its weights, the embedding grown to config.vocab_size (the
    rows added, for an audio range after the MIDI one, start as GPT's own initialisation draws them)."""
    model = GPT(config)
    if init is None:
        return model
    state = dict(init["state_dict"])
    grown = model.wte.weight.detach().clone()
    old = state["wte.weight"]
    if old.shape[0] > grown.shape[0] or old.shape[1] != grown.shape[1]:
        raise StudioError(f"init_checkpoint's embedding {list(old.shape)} does not fit this model "
                          f"{list(grown.shape)}; its vocabulary or width differ")
    grown[:old.shape[0]] = old
    state["wte.weight"] = grown
    state["lm_head.weight"] = grown
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise StudioError(f"init_checkpoint does not match model.autoregressive's shape (missing "
                          f"{missing[:3]}, unexpected {unexpected[:3]}); use its n_layer, n_head and n_embd")
    return model


def audio_task_data(cfg: Config, cache: SegmentCache, vocabulary: UnifiedVocabulary, limit: int = 0):
    """(train AudioExamples, validation AudioExamples, the checkpoint's `audio_task` record, the vocabulary with
    an audio range) for the midi_to_audio task, from the codec `codec_checkpoint` names."""
    from engines.data.audio_tokens import audio_task_set, codec_fingerprint, task_frames
    from engines.models.codec import load_codec

    ac = cfg.model.autoregressive
    path = Path(ac.codec_checkpoint or Path(cfg.model.checkpoints_dir) / "codec.pt")
    if not path.is_file():
        raise StudioError(f"the midi_to_audio task needs a codec checkpoint; {path} does not exist "
                          "(train one: python -m engines train --engine codec)")
    codec = load_codec(path)
    if vocabulary.audio_codebooks and (vocabulary.audio_codebooks, vocabulary.audio_bins) != \
            (ac.audio_codebooks, codec.config.bins):
        raise StudioError("init_checkpoint already has an audio range of another codec shape; start from a GPT "
                          "without one")
    vocabulary = UnifiedVocabulary(vocabulary.words, vocabulary.midi_tokens, ac.audio_codebooks, codec.config.bins)
    train = audio_task_set(cfg, codec, "train", limit or ac.audio_segments, ac.audio_seconds, ac.audio_codebooks)
    val = audio_task_set(cfg, codec, "validation", max(limit // 8, 8) if limit else 256, ac.audio_seconds,
                         ac.audio_codebooks)
    record = {"seconds": float(ac.audio_seconds), "codebooks": int(ac.audio_codebooks),
              "frames": task_frames(codec, ac.audio_seconds), "bins": int(codec.config.bins),
              "sample_rate": int(codec.config.sample_rate), "codec_fingerprint": codec_fingerprint(codec),
              "codec_checkpoint": str(path), "segments": len(train)}
    return (AudioExamples(cache, train, vocabulary, ac.block_size),
            AudioExamples(cache, val, vocabulary, ac.block_size), record, vocabulary)


FINALIZE_STEPS = ("targets", "attribute-metres", "sampling")   # `train --finalize-step NAME` runs one of them


def finalize_autoregressive(checkpoint: str | Path, cfg: Config, limit: int = 0, seed: int = 0,
                            steps: tuple[str, ...] = FINALIZE_STEPS) -> dict:
    """The step after training, written into the checkpoint: the modes' interior targets on the training split
    (a run trained before issue 19 lacks them; "targets"), the training segments' attributes and metres
    ("attribute-metres": the metre of a request that asks attributes and no mode is drawn from those nearest
    them), and the temperature and prompt guidance each mode is sampled with ("sampling",
    engines/training/autoregressive_calibration.py). `steps`: the ones to run (all by default); the others'
    entries stay as they are. `seed` is unused (the calibration has its own); with a `limit`, the calibration is
    a token one (tests, trial runs)."""
    from engines.data.torch_dataset import metre_index
    from engines.generation.autoregressive import AutoregressiveGenerator
    from engines.models.conditioning import attribute_metre_pool
    from engines.models.trained_autoregressive import TrainedAutoregressive
    from engines.training.autoregressive_calibration import calibrate_sampling
    from engines.training.common import check_finalize_steps, load_checkpoint, save_checkpoint

    check_finalize_steps(steps, FINALIZE_STEPS, "GPT")
    payload = load_checkpoint(checkpoint, engine="autoregressive")
    cache = ensure_corpus_cache(cfg)
    rows = fitting_indices(cache, cache.split_indices("train"), int(payload["config"]["block_size"]))
    rows = np.sort(rows[:limit] if limit else rows)
    if "targets" in steps:
        payload["mode_targets"] = mode_targets(cache.segments[rows])
    if "attribute-metres" in steps:
        segments = cache.segments[rows]
        payload["attribute_metres"] = attribute_metre_pool(
            segments, [metre_index(int(a), int(b)) for a, b in zip(segments["ts_num"], segments["ts_den"])])
    summary = {"steps": list(steps)}
    if "sampling" in steps:
        # every candidate is sampled at a setting of the grid, so an earlier calibration in the file changes nothing
        generator = AutoregressiveGenerator(TrainedAutoregressive.load(checkpoint))
        # with a limit (tests, trial runs) a token calibration: two modes, two settings, two candidates each
        quick = {"seeds": 1, "rows": 2, "modes": ("BLACK", "GREEN"), "grid": [(3.0, 0.8), (1.5, 0.8)]} if limit \
            else {}
        payload["sampling_calibration"] = calibrate_sampling(generator, cfg, cache, **quick)
        summary["sampling_calibration"] = payload["sampling_calibration"]
    save_checkpoint(payload, checkpoint)
    if "targets" in steps:
        summary["mode_targets"] = payload["mode_targets"]
    return summary
