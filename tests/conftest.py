"""What the tests share: hand-made segments, small MIDI files, one prepared MIDI cache, the corpus cache, the
tiny VAE, diffusion model and GPT (each trained once per test run by the project's own trainer, from the settings
in tests/helpers.py) and the listening store's two back ends.

Times in `rows` are ticks on the project grid (12 to the quarter note); MIDI files are written at 480.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines.music.notes import Segment, make_notes

MIDI_TPQ = 480
SCALE = MIDI_TPQ // 12  # MIDI ticks per project tick


def pytest_collection_modifyitems(config, items):
    """The slow and browser tests first (a stable sort: within each group the files keep their order). Under
    pytest-xdist (`make test`) the long ones then start at once and the quick ones fill in around them, instead
    of one long test at the end keeping a worker busy after the other has finished."""
    items.sort(key=lambda item: not (item.get_closest_marker("slow") or item.get_closest_marker("browser")))


def segment(rows, ts=(4, 4), bars=4, tempo=100.0, **kw) -> Segment:
    """Rows of (start, duration, pitch, velocity) in project ticks -> a Segment."""
    return Segment(notes=make_notes(rows), ts_num=ts[0], ts_den=ts[1], num_bars=bars, tempo_qpm=tempo, **kw)


def note_tuples(notes: np.ndarray, velocity: bool = False) -> list[tuple]:
    """NOTE_DTYPE array -> sorted [(start, duration, pitch[, velocity])] of plain ints, for exact comparison."""
    fields = ("start", "duration", "pitch") + (("velocity",) if velocity else ())
    return sorted(tuple(int(n[f]) for f in fields) for n in notes)


def write_midi(path, rows, signatures=((0, 4, 4),), tempo: float | None = 120.0, drum_rows=(),
               tpq: int = MIDI_TPQ) -> Path:
    """Write a one-track MIDI file with symusic. `rows` and signature times are in project ticks (12/quarter),
    scaled to `tpq`; `drum_rows` go on a drum track."""
    from symusic import Note, Score, Tempo, TimeSignature, Track

    scale = tpq // 12
    score = Score(tpq)
    for time, num, den in signatures:
        score.time_signatures.append(TimeSignature(time * scale, num, den))
    if tempo is not None:
        score.tempos.append(Tempo(0, float(tempo)))
    track = Track(name="piano", program=0)
    for start, duration, pitch, velocity in rows:
        track.notes.append(Note(start * scale, duration * scale, pitch, velocity))
    score.tracks.append(track)
    if drum_rows:
        drums = Track(name="drums", program=0, is_drum=True)
        for start, duration, pitch, velocity in drum_rows:
            drums.notes.append(Note(start * scale, duration * scale, pitch, velocity))
        score.tracks.append(drums)
    path = Path(path)
    score.dump_midi(str(path))
    return path


def scale_melody(bars: int, bar_length: int = 48, step: int = 12, low: int = 60, velocity: int = 80) -> list:
    """A stepwise C major line filling `bars` bars with notes `step` ticks long."""
    degrees = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2]
    count = bars * bar_length // step
    return [(i * step, step, low + degrees[i % len(degrees)], velocity) for i in range(count)]


# The small MIDI folder `prepare` is tested on: four pieces written four different ways, plus one garbage file.
def corpus_folder(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    # 8 bars of 4/4 quarter notes.
    files["quarters"] = write_midi(root / "quarters.mid", scale_melody(8))
    # A pickup beat, then 10 bars of 3/4 in eighths with a chord per bar.
    rows = [(0, 12, 67, 70)]
    for bar in range(10):
        start = 12 + bar * 36
        rows += [(start + i * 6, 6, 72 + (i % 5), 90) for i in range(6)]
        rows += [(start, 36, p, 60) for p in (48, 52, 55)]
    files["waltz"] = write_midi(root / "waltz.mid", rows, signatures=((0, 3, 4),), tempo=150)
    # 12 bars of 6/8 at 96 ticks per quarter, with a drum track that must be ignored.
    rows = [(i * 6, 6, 62 + (i * 5) % 12, 75) for i in range(12 * 6)]
    drums = [(i * 18, 3, 36, 100) for i in range(24)]
    (root / "sub").mkdir(exist_ok=True)
    files["jig"] = write_midi(root / "sub" / "jig.mid", rows, signatures=((0, 6, 8),), tempo=110, drum_rows=drums,
                              tpq=96)
    # 4 bars of 4/4 then 8 bars of 2/2 with no tempo event, in half-note chords.
    rows = [(i * 12, 12, 64 + i % 5, 85) for i in range(16)]
    for i in range(16):
        rows += [(192 + i * 24, 24, p, 70) for p in (57 + i % 3, 60 + i % 3, 64 + i % 3)]
    files["hymn"] = write_midi(root / "hymn.mid", rows, signatures=((0, 4, 4), (192, 2, 2)), tempo=None)
    garbage = root / "garbage.mid"
    garbage.write_bytes(bytes(range(256)) * 4)
    files["garbage"] = garbage
    return files


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """One `prepare` run over corpus_folder: (cfg, files, report, cache directory, manifest path)."""
    from engines.config import load_config
    from engines.data.prepare import prepare

    base = tmp_path_factory.mktemp("prepared")
    files = corpus_folder(base / "songs")
    manifest = base / "labels.csv"
    manifest.write_text("path,mode,rebracketing,valence\nwaltz.mid,INDIGO,0.9,-0.5\n")
    cfg = load_config(overrides=[f"data.cache_dir={base / 'cache'}"])
    out = base / "cache" / "songs"
    report = prepare(cfg, midi_dir=str(base / "songs"), manifest=str(manifest), out=str(out), workers=1)
    return cfg, files, report, out, manifest


# ---- the corpus cache and the tiny models, once per run ----------------------------------------------------
def built_once(tmp_path_factory, name: str, build) -> tuple[Path, object]:
    """(a folder, what `build(folder)` returned), built once per test run: under pytest-xdist the first worker to
    ask builds it in the run's shared temporary folder while the others wait on a lock, then every worker reads
    it. `build` fills the empty folder and returns a JSON-able summary."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, summary = shared / name, shared / f"{name}.json"
    with FileLock(str(shared / f"{name}.lock")):
        if not summary.is_file():
            shutil.rmtree(folder, ignore_errors=True)   # a worker that failed half-way left it
            folder.mkdir()
            summary.write_text(json.dumps(build(folder), default=float))
    return folder, json.loads(summary.read_text())


@pytest.fixture(scope="session")
def corpus_cache():
    """The segment cache of the default corpus (unpacked from the shipped archive on a fresh clone)."""
    from engines.config import load_config
    from engines.data.prepare import ensure_corpus_cache

    return ensure_corpus_cache(load_config())


@pytest.fixture(scope="session")
def vae_cfg():
    from engines.config import load_config
    from tests.helpers import TINY_VAE

    return load_config(overrides=TINY_VAE)


@pytest.fixture(scope="session")
def vae_run(tmp_path_factory, vae_cfg, corpus_cache):
    """The tiny VAE's 2-epoch run on 64 training segments: (run directory, what train_vae returned). Tests
    that change a run copy it first."""
    from engines.training.vae_trainer import train_vae
    from tests.helpers import VAE_LIMIT

    return built_once(tmp_path_factory, "vae-run", lambda out: train_vae(vae_cfg, out, limit=VAE_LIMIT, workers=0))


@pytest.fixture(scope="session")
def vae_checkpoint(vae_run, vae_cfg, tmp_path_factory):
    """The tiny run's best.pt with its latent vectors, prior and map (finalized on 64 segments): (path, norms)."""
    from engines.training.vae_finalize import finalize_vae
    from tests.helpers import VAE_LIMIT

    def build(folder):
        shutil.copy(vae_run[0] / "best.pt", folder / "vae.pt")
        return finalize_vae(str(folder / "vae.pt"), vae_cfg, limit=VAE_LIMIT)

    folder, norms = built_once(tmp_path_factory, "vae-final", build)
    return folder / "vae.pt", norms


@pytest.fixture(scope="session")
def tiny_vae(vae_checkpoint):
    from engines.models.trained_vae import TrainedVAE

    return TrainedVAE.load(vae_checkpoint[0])


@pytest.fixture(scope="session")
def vae_rows(corpus_cache):
    """Cache rows of the first 2/4, 6/8 and 4/4 segments."""
    segments = corpus_cache.segments
    rows = []
    for num, den in ((2, 4), (6, 8), (4, 4)):
        found = np.nonzero((segments["ts_num"] == num) & (segments["ts_den"] == den))[0]
        assert len(found), f"the corpus cache holds no {num}/{den} segment"
        rows.append(int(found[0]))
    return rows


@pytest.fixture(scope="session")
def vae_batch(corpus_cache, vae_rows):
    """Those three segments as the VAE reads them."""
    from torch.utils.data import DataLoader

    from engines.data.torch_dataset import RollDataset

    return next(iter(DataLoader(RollDataset(corpus_cache, vae_rows), batch_size=len(vae_rows))))


@pytest.fixture(scope="session")
def diffusion_cfg():
    from engines.config import load_config
    from tests.helpers import TINY_DIFFUSION

    return load_config(overrides=TINY_DIFFUSION)


@pytest.fixture(scope="session")
def diffusion_run(tmp_path_factory, diffusion_cfg, corpus_cache):
    """The tiny denoiser's 2-epoch run on 48 training segments (finalized): its directory."""
    from engines.training.diffusion_trainer import train_diffusion
    from tests.helpers import DIFFUSION_LIMIT

    return built_once(tmp_path_factory, "diffusion-run",
                      lambda out: train_diffusion(diffusion_cfg, out, limit=DIFFUSION_LIMIT, workers=0))[0]


@pytest.fixture(scope="session")
def tiny_diffusion(diffusion_run):
    from engines.models.trained_diffusion import TrainedDiffusion

    return TrainedDiffusion.load(diffusion_run / "best.pt")


@pytest.fixture(scope="session")
def diffusion_batch(diffusion_cfg, corpus_cache):
    """The first 8 training rolls as the diffusion networks see them."""
    from tests.helpers import first_rolls

    return first_rolls(diffusion_cfg)


@pytest.fixture(scope="session")
def vocabulary():
    """A small unified vocabulary: three captions' words, every REMI token, and 2 codebooks of 4 audio bins."""
    from engines.tokenizers.vocabulary import UnifiedVocabulary, remi_token_names

    return UnifiedVocabulary.build(["a calm, intimate BLUE phrase", "generate a RED segment in 3/4", "a calm one"],
                                   remi_token_names(), audio_codebooks=2, audio_bins=4)


@pytest.fixture(scope="session")
def gpt_cfg():
    from engines.config import load_config
    from tests.helpers import TINY_GPT

    return load_config(overrides=TINY_GPT)


@pytest.fixture(scope="session")
def gpt_run(tmp_path_factory, gpt_cfg, corpus_cache):
    """The one-layer GPT trained for an epoch on 64 segments: (folder, what train_autoregressive returned); the
    run is folder/run, its finalized checkpoint folder/autoregressive.pt."""
    from engines.training.autoregressive_trainer import train_autoregressive
    from tests.helpers import GPT_LIMIT

    def build(folder):
        best = train_autoregressive(gpt_cfg, folder / "run", limit=GPT_LIMIT, workers=0)
        shutil.copyfile(folder / "run" / "best.pt", folder / "autoregressive.pt")
        return best

    return built_once(tmp_path_factory, "gpt", build)


@pytest.fixture(scope="session")
def gpt_audio_run(tmp_path_factory, gpt_cfg, gpt_run, corpus_cache):
    """The tiny GPT trained on further on all three tasks, the MIDI -> audio task with the shipped codec's tokens
    (started from gpt_run's weights: init_checkpoint): (its best.pt, what train_autoregressive returned)."""
    from engines.config import load_config
    from engines.training.autoregressive_trainer import train_autoregressive
    from tests.helpers import GPT_LIMIT, TINY_GPT

    cfg = load_config(overrides=TINY_GPT + ["model.autoregressive.task_weights.midi_to_audio=0.5",
                                            f"model.autoregressive.init_checkpoint={gpt_run[0] / 'autoregressive.pt'}"])
    folder, best = built_once(tmp_path_factory, "gpt-audio",
                              lambda folder: train_autoregressive(cfg, folder / "run", limit=GPT_LIMIT // 2, workers=0))
    return folder / "run" / "best.pt", best


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory, vae_run, diffusion_run, gpt_run):
    """A checkpoints folder of the three tiny engines and the shipped judge (which ranks verified candidates):
    {engine: path}. Tests that change a file copy the folder first."""
    from engines.config import load_config

    folder = tmp_path_factory.mktemp("tiny-checkpoints")
    sources = {"vae": vae_run[0] / "best.pt", "diffusion": diffusion_run / "best.pt",
               "autoregressive": gpt_run[0] / "autoregressive.pt"}
    out = {}
    for name, source in sources.items():
        out[name] = folder / f"{name}.pt"
        shutil.copyfile(source, out[name])
    shutil.copyfile(Path(load_config().model.checkpoints_dir) / "judge.pt", folder / "judge.pt")
    return out


@pytest.fixture(scope="session")
def classifier_run(tmp_path_factory, diffusion_cfg, corpus_cache):
    """The tiny guidance classifier trained for 2 epochs on 48 segments: (directory, what its trainer returned)."""
    from engines.training.guidance_trainer import train_guidance_classifier
    from tests.helpers import DIFFUSION_LIMIT

    return built_once(tmp_path_factory, "classifier-run",
                      lambda out: train_guidance_classifier(diffusion_cfg, out, limit=DIFFUSION_LIMIT, workers=0))


@pytest.fixture(scope="session")
def guided_diffusion(diffusion_run, classifier_run):
    """The tiny denoiser with the tiny guidance classifier attached (its own copy: tiny_diffusion has none)."""
    from engines.models.guidance_classifier import TrainedGuidanceClassifier
    from engines.models.trained_diffusion import TrainedDiffusion

    engine = TrainedDiffusion.load(diffusion_run / "best.pt")
    engine.classifier = TrainedGuidanceClassifier.load(classifier_run[0] / "best.pt")
    return engine


# ---- the listening store's two back ends ------------------------------------------------------------------
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def postgres_server():
    """One throwaway PostgreSQL server for the whole run (tests/postgres.py); each test gets its own database."""
    from tests.postgres import PostgresServer

    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """A fresh listening database on each back end: a SQLite file, then a database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return str(tmp_path / "private" / "sessions.sqlite")
    return request.getfixturevalue("postgres_server").new_database()
