"""Blinded A/B listening sessions end to end: stimuli made ahead of time, raters' pairs, and the results.

    service = ListeningService(studio_engine, SessionStore(cfg.sessions.database), cfg.sessions.stimuli_dir)
    code = service.create(SessionPlan(title="RED?", question="Which one sounds more RED?",
                                      systems=[SystemSpec("VAE", "vae"), SystemSpec("GPT", "autoregressive")],
                                      modes=["RED", "BLUE"], stimuli_per_mode=4, pairs_per_rater=8))
    token = service.store.join(code, "Ada"); service.store.next_pair(token); service.store.vote(token, pair, "A")
    service.results(code)            # win rates, Bradley-Terry, per mode, agreement
    service.votes_csv(code)          # every vote, one row each

A system is an engine with its settings (generated through the same StudioEngine the Generate tab uses) or
a folder of MIDI files (their segments, grouped by the mode the analyzer hears). For every mode and every
system, `stimuli_per_mode` segments are rendered with FluidSynth and copied under the session's folder, so
a session keeps its audio whatever happens to the studio's render cache (the folder is named by the
session's code and complete before the session is stored). Pairs: for each mode, each pair of
systems, the k-th stimulus of one against the k-th of the other.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import secrets
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import StudioError
from engines.generation import GENERATORS, Request
from engines.evaluation.preference import bradley_terry_bootstrap, fleiss_kappa, head_to_head
from engines.music.analyzer import MODES
from engines.sessions.store import SessionStore

ENGINE_KINDS = tuple(GENERATORS) + ("folder",)
MIDI_SUFFIXES = (".mid", ".midi")  # the files a folder system reads
# Request fields a system may set besides its engine's settings (mode and n are the session's)
REQUEST_SETTINGS = ("seed", "attributes", "tonic", "candidates")
MAX_STIMULI_PER_MODE = 16


@dataclass
class SystemSpec:
    name: str                                    # what results call it (raters never see it)
    kind: str                                    # an engine, or "folder"
    settings: dict = field(default_factory=dict)  # its engine's settings (steps, ...) and REQUEST_SETTINGS
    folder: str = ""                             # kind "folder": a directory of .mid / .midi files


@dataclass
class RaterView:
    """What a rater sees now: the next pair as A and B, or that they are done."""

    token: str                       # their resume key
    session: str
    title: str
    question: str
    answered: int
    total: int
    pair: int | None = None          # None: every pair answered
    audio_a: str | None = None
    audio_b: str | None = None

    @property
    def done(self) -> bool:
        return self.pair is None


@dataclass
class SessionPlan:
    title: str
    question: str
    systems: list[SystemSpec]
    modes: list[str]
    stimuli_per_mode: int = 4
    pairs_per_rater: int = 8
    seed: int = 0


class ListeningService:
    def __init__(self, engine, store: SessionStore, stimuli_dir: str | Path):
        self.engine, self.store, self.stimuli_dir = engine, store, Path(stimuli_dir)

    # ---- organiser ------------------------------------------------------------------------------------
    def validate(self, plan: SessionPlan) -> None:
        names = [s.name.strip() for s in plan.systems]
        if len(names) < 2:
            raise StudioError("a listening session compares at least two systems")
        if any(not n for n in names) or len(set(names)) != len(names):
            raise StudioError("every system needs its own, non-empty name")
        for s in plan.systems:
            if s.kind not in ENGINE_KINDS:
                raise StudioError(f"system '{s.name}': kind must be one of {', '.join(ENGINE_KINDS)}, got '{s.kind}'")
            if s.kind == "folder" and not _midi_files(s.folder):
                raise StudioError(f"system '{s.name}': no .mid files in folder '{s.folder}'")
            if s.kind != "folder" and s.kind not in self.engine.engines_available():
                raise StudioError(f"system '{s.name}': the {s.kind} engine has no checkpoint installed")
            if s.kind != "folder":
                try:
                    _request_for(s, "WHITE", 1, 0, self.engine.cfg)
                except StudioError as exc:
                    raise StudioError(f"system '{s.name}': {exc}") from None
        if not plan.modes or any(m not in MODES for m in plan.modes):
            raise StudioError(f"modes must be chosen from {', '.join(MODES)}")
        if not 1 <= plan.stimuli_per_mode <= MAX_STIMULI_PER_MODE:
            raise StudioError(f"stimuli per mode must lie in 1..{MAX_STIMULI_PER_MODE}, got {plan.stimuli_per_mode}")
        if plan.pairs_per_rater < 1:
            raise StudioError(f"pairs per rater must be at least 1, got {plan.pairs_per_rater}")
        if not plan.question.strip():
            raise StudioError("give raters a question, e.g. 'Which one sounds more RED?'")

    def import_midi(self, name: str, paths: list[str | Path]) -> str:
        """Uploaded MIDI files -> a folder of their own under <stimuli_dir>/uploads (named by the system and
        the files' digest), for a "folder" system; returns the folder. Every file must be a MIDI file with at
        least one whole bar; the first that is not is named in the error and nothing is kept."""
        from engines.analysis import midi_file_segments

        name = (name or "").strip()
        if not name:
            raise StudioError("name the uploaded system first (e.g. 'my pieces')")
        paths = [Path(p) for p in paths or []]
        if not paths:
            raise StudioError("upload one or more .mid files for the system")
        digest = hashlib.sha1()
        for path in paths:
            if path.suffix.lower() not in MIDI_SUFFIXES:
                raise StudioError(f"'{path.name}' is not a .mid or .midi file")
            midi_file_segments(path, self.engine.cfg)   # raises, naming the file, when it cannot be read
            digest.update(path.name.encode() + path.read_bytes())
        folder = self.stimuli_dir / "uploads" / f"{_slug(name)}-{digest.hexdigest()[:10]}"
        staged = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for k, path in enumerate(paths):   # numbered: two uploads may share a name
            shutil.copyfile(path, staged / f"{k:03d}-{_slug(path.stem)}{path.suffix.lower()}")
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)
        return str(folder)

    def create(self, plan: SessionPlan, progress=None) -> str:
        """Generate and render every stimulus, then store the session; returns its code. `progress(done,
        total, what)` is called as stimuli are made."""
        self.validate(plan)
        total = len(plan.systems) * len(plan.modes)
        self.stimuli_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.stimuli_dir))  # this session's alone
        try:
            code = self._create(plan, staged, total, progress)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        if progress is not None:
            progress(total, total, "ready")
        return code

    def _create(self, plan: SessionPlan, staged: Path, total: int, progress) -> str:
        made: dict[tuple[str, str], list[dict]] = {}
        for done, (system, mode) in enumerate(itertools.product(plan.systems, plan.modes)):
            if progress is not None:
                progress(done, total, f"{system.name} · {mode}")
            made[(system.name, mode)] = self._stimuli(system, mode, plan.stimuli_per_mode, plan.seed, staged)
        stimuli, pairs = [], []
        for mode in plan.modes:
            for a, b in itertools.combinations(plan.systems, 2):
                left, right = made[(a.name, mode)], made[(b.name, mode)]
                for x, y in zip(left, right):
                    for item in (x, y):
                        if "index" not in item:
                            item["index"] = len(stimuli)
                            stimuli.append(item)
                    pairs.append((x["index"], y["index"]))
        if not pairs:
            raise StudioError("no pair of stimuli could be made: the systems wrote no notes in these modes")
        code = self.store.new_code()
        folder = self.stimuli_dir / code
        staged.rename(folder)  # the session's audio in its own folder before the session exists
        for item in stimuli:
            for key in ("midi_path", "audio_path"):
                item[key] = str(folder / Path(item[key]).name)
        try:
            return self.store.create_session(
                plan.title.strip() or plan.question.strip(), plan.question.strip(), list(plan.modes),
                plan.pairs_per_rater, {s.name: asdict(s) for s in plan.systems},
                [{k: v for k, v in s.items() if k != "index"} for s in stimuli], pairs, code=code)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _stimuli(self, system: SystemSpec, mode: str, n: int, seed: int, staged: Path) -> list[dict]:
        """Up to n rendered stimuli of `system` in `mode`, copied into `staged`: [{system, mode, midi_path,
        audio_path}]."""
        if system.kind == "folder":
            views = self._folder_segments(system.folder, mode, n)
        else:
            request = _request_for(system, mode, n, seed, self.engine.cfg)
            views = [{"midi_path": v.midi_path, "wav_path": v.wav_path} for v in self.engine.generate(request)]
        out = []
        for i, v in enumerate(views):
            if not v["wav_path"]:
                continue  # no notes: nothing to listen to
            stem = secrets.token_hex(8)   # opaque: a file name tells a rater neither the system nor its settings
            midi, wav = staged / f"{stem}.mid", staged / f"{stem}.wav"
            shutil.copyfile(v["midi_path"], midi)
            shutil.copyfile(v["wav_path"], wav)
            out.append({"system": system.name, "mode": mode, "midi_path": str(midi), "audio_path": str(wav)})
        return out

    def _folder_segments(self, folder: str, mode: str, n: int) -> list[dict]:
        """The first n segments of the folder's files that the analyzer hears in `mode` (files in name order)."""
        from engines.analysis import analyze_segments, midi_file_segments

        views = []
        for path in _midi_files(folder):
            try:
                _, segments = midi_file_segments(path, self.engine.cfg)
            except StudioError:
                continue  # a broken file in the folder: the others still count
            for k, (segment, info) in enumerate(zip(segments, analyze_segments(segments, self.engine.cfg))):
                if info["mode"] == mode:
                    midi, wav = self.engine.export_segments([segment], f"folder-{_slug(path.stem)}-{k}")
                    views.append({"midi_path": midi, "wav_path": wav})
                    if len(views) == n:
                        return views
        return views

    # ---- raters ---------------------------------------------------------------------------------------
    def join(self, code: str, name: str = "") -> RaterView:
        return self.rater_view(self.store.join(code, name))

    def rater_view(self, token: str) -> RaterView:
        """Where rater `token` stands (also how a paused rater resumes)."""
        rater = self.store.rater(token)
        info = self.store.session(rater["session"])
        shown = self.store.next_pair(token)
        answered, total = self.store.progress(token)
        view = RaterView(token=token, session=info["code"], title=info["title"], question=info["question"],
                         answered=answered, total=total)
        if shown is not None:
            view.pair, view.audio_a, view.audio_b = shown["pair"], shown["a"]["audio_path"], shown["b"]["audio_path"]
        return view

    def vote(self, token: str, pair: int, choice: str, comment: str = "") -> RaterView:
        """Store the answer (committed), then the rater's next pair. A repeated answer stores nothing."""
        self.store.vote(token, pair, choice, comment)
        return self.rater_view(token)

    # ---- results --------------------------------------------------------------------------------------
    def results(self, code: str, bootstrap: int = 500) -> dict:
        """{session, raters, votes, head_to_head, bradley_terry, per_mode, agreement}."""
        info = self.store.session(code)
        votes = self.store.votes(code)
        outcomes = [_outcome(v) for v in votes]
        systems = list(info["systems"])
        per_mode = {mode: head_to_head([o for o, v in zip(outcomes, votes) if v["mode"] == mode])
                    for mode in info["modes"]}
        # agreement: per pair, how many raters said first / second / tie (the pair's canonical order)
        counts: dict[int, np.ndarray] = {}
        for v in votes:
            row = counts.setdefault(v["pair"], np.zeros(3))
            row[0 if v["preferred"] == v["first"] else 1 if v["preferred"] == v["second"] else 2] += 1
        table = np.array(list(counts.values())) if counts else np.zeros((0, 3))
        rated_twice = int((table.sum(1) >= 2).sum()) if len(table) else 0
        return {"session": {k: info[k] for k in ("code", "title", "question", "modes", "status", "pairs")},
                "raters": len({v["rater"] for v in votes}), "votes": len(votes),
                "head_to_head": head_to_head(outcomes),
                "bradley_terry": bradley_terry_bootstrap(outcomes, systems, samples=bootstrap),
                "per_mode": per_mode,
                "agreement": {"fleiss_kappa": fleiss_kappa(table), "pairs_rated_twice": rated_twice}}

    def votes_csv(self, code: str) -> str:
        """Every vote as CSV: rater, name, pair, mode, heard as A, heard as B, answer, preferred, comment, time."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["rater", "rater_name", "pair", "mode", "shown_a", "shown_b", "choice", "preferred",
                         "comment", "created"])
        for v in self.store.votes(code):
            writer.writerow([v["rater"][:8], _cell(v["rater_name"]), v["pair"], v["mode"], v["shown_a"], v["shown_b"],
                             v["choice"], v["preferred"] or "tie", _cell(v["comment"]), v["created"]])
        return out.getvalue()


def _cell(text) -> str:
    """A rater's text for a CSV cell: one starting with = + - @ (a formula to a spreadsheet) is quoted with '."""
    text = "" if text is None else str(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _outcome(vote: dict) -> tuple[str, str, str]:
    """A stored vote as (system_x, system_y, "x" | "y" | "tie") for engines/evaluation/preference.py."""
    x, y = vote["first"], vote["second"]
    return x, y, "tie" if vote["preferred"] is None else ("x" if vote["preferred"] == x else "y")


def _midi_files(folder: str) -> list[Path]:
    path = Path(folder or "").expanduser()
    if not folder or not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.suffix.lower() in MIDI_SUFFIXES)


def _request_for(system: SystemSpec, mode: str, n: int, seed: int, cfg) -> Request:
    """The Request a system's stimuli are generated with; its settings are checked by its engine."""
    given = dict(system.settings)
    request = {k: given.pop(k) for k in REQUEST_SETTINGS if k in given}
    settings = GENERATORS[system.kind].settings_for(cfg, given)
    try:
        offset = int(request.get("seed", 0))
    except (TypeError, ValueError):
        raise StudioError(f"setting 'seed' must be a whole number, got {request['seed']!r}") from None
    return Request(engine=system.kind, mode=mode, n=n, settings=settings, **{**request, "seed": seed + offset})


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text)[:40] or "system"
