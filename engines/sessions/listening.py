"""Blinded A/B listening sessions end to end: stimuli made ahead of time, raters' pairs, and the results.

    service = ListeningService(studio_engine, SessionStore(cfg.sessions.database), cfg.sessions.stimuli_dir,
                               serve_dir=studio_engine.out_dir / "listening")
    made = service.create(SessionPlan(title="RED?", question="Which one sounds more RED?",
                                      systems=[SystemSpec("VAE", "vae"), SystemSpec("GPT", "autoregressive")],
                                      modes=["RED", "BLUE"], stimuli_per_mode=4, pairs_per_rater=8,
                                      joining=Joining(open=True, max_raters=20)))
    made.code, made.organiser_key    # the key is shown once: results, the CSV, closing and adding raters need it
    view = service.join(made.code, "Ada"); service.vote(view.token, view.pair, "A")
    service.results(made.code, made.organiser_key)     # win rates, Bradley-Terry, per mode, agreement
    service.votes_csv(made.code, made.organiser_key)   # every vote, one row each

A system is an engine with its settings (generated through the same StudioEngine the Generate tab uses) or
a folder of MIDI files (their segments, grouped by the mode the analyzer hears). For every mode and every
system, `stimuli_per_mode` segments are rendered with FluidSynth and copied under the session's folder, so
a session keeps its audio whatever happens to the studio's render cache (the folder is named by the
session's code and complete before the session is stored). Pairs: for each mode, each pair of
systems, the k-th stimulus of one against the k-th of the other.

What raters can reach: the stimuli folder is not served. A rater's view carries copies of the two
files of the pair they are answering, staged under `serve_dir` as A.wav and B.wav in a fresh random folder,
so no name or URL tells a system, its settings or another pair; a folder system reads only the upload area
(<stimuli_dir>/uploads) or a folder listed in `sessions.allowed_folders`.
"""
from __future__ import annotations

import csv
import hashlib
import io
import itertools
import secrets
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from engines.errors import StudioError
from engines.generation import GENERATORS, Request
from engines.evaluation.preference import bradley_terry_bootstrap, fleiss_kappa, head_to_head
from engines.music.analyzer import MODES
from engines.sessions.store import SessionStore, new_key

ENGINE_KINDS = tuple(GENERATORS) + ("folder",)
MIDI_SUFFIXES = (".mid", ".midi")  # the files a folder system reads
# Request fields a system may set besides its engine's settings (mode and n are the session's)
REQUEST_SETTINGS = ("seed", "attributes", "tonic", "candidates")
MAX_STIMULI_PER_MODE = 16
STAGED_SECONDS = 600   # a staged pair is copied into Gradio's cache when served; older stagings are removed


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
class Joining:
    """Who may join: anyone with the code (open, up to max_raters; None: no cap), or only through invitation
    links, one per rater, each usable once (open False; `invitations` links are made with the session)."""

    open: bool = True
    max_raters: int | None = None
    invitations: int = 0


@dataclass
class SessionPlan:
    title: str
    question: str
    systems: list[SystemSpec]
    modes: list[str]
    stimuli_per_mode: int = 4
    pairs_per_rater: int = 8
    seed: int = 0
    joining: Joining = field(default_factory=Joining)


@dataclass
class CreatedSession:
    """What the organiser gets once: the code, the organiser key (stored hashed; not shown again), the pair
    count and the invitations (one-use tokens; empty for open joining)."""

    code: str
    organiser_key: str
    pairs: int
    invitations: list[str] = field(default_factory=list)

    def rater_links(self, base_url: str) -> list[str]:
        """The links raters open: one per invitation, or the session's one link when joining is open."""
        return [rater_link(base_url, self.code, token) for token in self.invitations] or [
            rater_link(base_url, self.code)]


def rater_link(base_url: str, code: str, invitation: str = "") -> str:
    """The studio page with the Rate tab open and the code (and invitation) filled in."""
    base = (base_url or "").split("?")[0].split("#")[0]
    return f"{base}?session={code}" + (f"&invite={invitation}" if invitation else "")


class ListeningService:
    def __init__(self, engine, store: SessionStore, stimuli_dir: str | Path, serve_dir: str | Path | None = None,
                 allowed_folders: list[str] | tuple[str, ...] = (), open_creation: bool = True):
        self.engine, self.store, self.stimuli_dir = engine, store, Path(stimuli_dir)
        # where a rater's current pair is staged for serving (the studio serves it; never the stimuli folder)
        self.serve_dir = Path(serve_dir) if serve_dir else Path(tempfile.mkdtemp(prefix="chromatic-pairs-"))
        self.allowed_folders = [Path(f).expanduser() for f in allowed_folders]
        self.open_creation = open_creation   # False: creating a session needs a creator key

    @property
    def upload_dir(self) -> Path:
        return self.stimuli_dir / "uploads"

    def check_creator(self, creator_key: str = "") -> None:
        """Creating a session is open, or needs one of the studio's creator keys (`listen key` makes one)."""
        if self.open_creation or self.store.is_creator_key(creator_key):
            return
        raise StudioError("creating sessions on this studio needs an organiser key: the one printed when the studio "
                          "started, or one from `python -m engines listen key` on its machine"
                          if not (creator_key or "").strip() else "that organiser key cannot create sessions here")

    def check_folder(self, folder: str) -> Path:
        """A folder system's folder, when it lies in the upload area or a folder of sessions.allowed_folders."""
        path = Path(folder or "").expanduser().resolve()
        roots = [self.upload_dir.resolve()] + [f.resolve() for f in self.allowed_folders]
        if not any(path == root or root in path.parents for root in roots):
            raise StudioError(f"folder '{folder}' is not in the upload area or in sessions.allowed_folders; upload "
                              "the files here, or list the folder under sessions.allowed_folders in the config")
        return path

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
            if s.kind == "folder":
                try:
                    self.check_folder(s.folder)
                except StudioError as exc:
                    raise StudioError(f"system '{s.name}': {exc}") from None
                if not _midi_files(s.folder):
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
        joining = plan.joining
        if joining.open and joining.max_raters is not None and not 1 <= joining.max_raters <= 10_000:
            raise StudioError(f"the cap on raters must lie in 1..10000 (or none), got {joining.max_raters}")
        if not joining.open and not 1 <= joining.invitations <= 1000:
            raise StudioError(f"a session by invitation needs 1..1000 invitations, got {joining.invitations}")

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
        folder = self.upload_dir / f"{_slug(name)}-{digest.hexdigest()[:10]}"
        staged = folder.with_name(f".{folder.name}.tmp")
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
        for k, path in enumerate(paths):   # numbered: two uploads may share a name
            shutil.copyfile(path, staged / f"{k:03d}-{_slug(path.stem)}{path.suffix.lower()}")
        shutil.rmtree(folder, ignore_errors=True)
        staged.rename(folder)
        return str(folder)

    def create(self, plan: SessionPlan, progress=None, creator_key: str = "") -> CreatedSession:
        """Generate and render every stimulus, then store the session with a new organiser key; returns its
        code, key and invitations. `progress(done, total, what)` is called as stimuli are made."""
        self.check_creator(creator_key)
        self.validate(plan)
        total = len(plan.systems) * len(plan.modes)
        self.stimuli_dir.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.stimuli_dir))  # this session's alone
        organiser_key = new_key()
        try:
            code = self._create(plan, staged, total, progress, organiser_key)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        invitations = [] if plan.joining.open else self.store.add_raters(code, plan.joining.invitations)
        if progress is not None:
            progress(total, total, "ready")
        return CreatedSession(code=code, organiser_key=organiser_key, pairs=self.store.session(code)["pairs"],
                              invitations=invitations)

    def _create(self, plan: SessionPlan, staged: Path, total: int, progress, organiser_key: str) -> str:
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
                [{k: v for k, v in s.items() if k != "index"} for s in stimuli], pairs, code=code,
                organiser_key=organiser_key, joining="open" if plan.joining.open else "invite",
                max_raters=plan.joining.max_raters if plan.joining.open else None)
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
            views = [{"midi_path": v.midi_path, "wav_path": v.wav_path}
                     for v in self.engine.generate(request, codec=False)]
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
    def join(self, code: str, name: str = "", invitation: str = "") -> RaterView:
        return self.rater_view(self.store.join(code, name, invitation))

    def rater_view(self, token: str) -> RaterView:
        """Where rater `token` stands (also how a paused rater resumes); the current pair's audio staged for
        serving as A.wav and B.wav."""
        rater = self.store.rater(token)
        info = self.store.session(rater["session"])
        shown = self.store.next_pair(token)
        answered, total = self.store.progress(token)
        view = RaterView(token=token, session=info["code"], title=info["title"], question=info["question"],
                         answered=answered, total=total)
        if shown is not None:
            view.pair = shown["pair"]
            view.audio_a, view.audio_b = self._stage(shown["a"]["audio_path"], shown["b"]["audio_path"])
        return view

    def _stage(self, audio_a: str, audio_b: str) -> tuple[str, str]:
        """Copies of a pair's two files under a fresh random folder of serve_dir, named A.wav and B.wav."""
        self.serve_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        for old in self.serve_dir.iterdir():   # served long ago: Gradio has its own copy by now
            try:
                if now - old.stat().st_mtime > STAGED_SECONDS:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        folder = self.serve_dir / secrets.token_hex(12)
        folder.mkdir()
        staged = []
        for side, source in (("A", audio_a), ("B", audio_b)):
            target = folder / f"{side}{Path(source).suffix.lower() or '.wav'}"
            try:
                shutil.copyfile(source, target)
            except OSError as exc:
                raise RuntimeError(f"stimulus {source} cannot be read: {exc}") from exc   # the organiser's log
            staged.append(str(target))
        return staged[0], staged[1]

    def vote(self, token: str, pair: int, choice: str, comment: str = "") -> RaterView:
        """Store the answer (committed), then the rater's next pair. A repeated answer stores nothing."""
        self.store.vote(token, pair, choice, comment)
        return self.rater_view(token)

    # ---- the organiser's, with the session's organiser key -------------------------------------------------
    def close(self, code: str, organiser_key: str) -> dict:
        """Close the session: no one joins or votes any more (what was stored stays)."""
        self.store.set_status(self.store.check_organiser(code, organiser_key), "closed")
        return self.store.session(code)

    def reopen(self, code: str, organiser_key: str) -> dict:
        self.store.set_status(self.store.check_organiser(code, organiser_key), "open")
        return self.store.session(code)

    def add_raters(self, code: str, organiser_key: str, count: int) -> list[str]:
        """Room for `count` more raters (see SessionStore.add_raters); new invitations are returned."""
        return self.store.add_raters(self.store.check_organiser(code, organiser_key), int(count))

    # ---- results --------------------------------------------------------------------------------------
    def results(self, code: str, organiser_key: str, bootstrap: int = 500) -> dict:
        """{session, raters, votes, joining, head_to_head, bradley_terry, per_mode, agreement}."""
        code = self.store.check_organiser(code, organiser_key)
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
        joining = {"open": info["joining"] == "open", "max_raters": info["max_raters"],
                   "raters_joined": info["raters_joined"]}
        if info["joining"] == "invite":
            joining["invitations"] = self.store.invitations(code)
        return {"session": {k: info[k] for k in ("code", "title", "question", "modes", "status", "pairs")},
                "raters": len({v["rater"] for v in votes}), "votes": len(votes), "joining": joining,
                "head_to_head": head_to_head(outcomes),
                "bradley_terry": bradley_terry_bootstrap(outcomes, systems, samples=bootstrap),
                "per_mode": per_mode,
                "agreement": {"fleiss_kappa": fleiss_kappa(table), "pairs_rated_twice": rated_twice}}

    def votes_csv(self, code: str, organiser_key: str) -> str:
        """Every vote as CSV: rater, name, pair, mode, heard as A, heard as B, answer, preferred, comment, time."""
        code = self.store.check_organiser(code, organiser_key)
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


def plan_from_spec(spec: dict, source: str = "spec") -> SessionPlan:
    """A study's spec (a mapping, e.g. from YAML; assets/configs/studies/mode_test.yaml) -> SessionPlan. Keys
    this version does not know are allowed and ignored; a missing or malformed one is named."""
    if not isinstance(spec, dict):
        raise StudioError(f"{source} must be a mapping of keys (title, question, systems, modes, ...)")

    def whole(key, value, low=1):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise StudioError(f"{source}: '{key}' must be a whole number >= {low}, got {value!r}")
        return value

    systems = []
    for i, item in enumerate(spec.get("systems") or [], start=1):
        if not isinstance(item, dict) or not str(item.get("name", "")).strip():
            raise StudioError(f"{source}: systems[{i}] needs a name, e.g. {{name: vae, engine: vae}}")
        settings = item.get("settings") or {}
        if not isinstance(settings, dict):
            raise StudioError(f"{source}: systems[{i}] ('{item['name']}'): settings must be a mapping")
        if item.get("folder"):
            systems.append(SystemSpec(str(item["name"]), "folder", folder=str(item["folder"])))
        elif item.get("engine"):
            systems.append(SystemSpec(str(item["name"]), str(item["engine"]), dict(settings)))
        else:
            raise StudioError(f"{source}: systems[{i}] ('{item['name']}') needs an engine "
                              f"({', '.join(GENERATORS)}) or a folder")
    joining = spec.get("joining") or {}
    if not isinstance(joining, dict):
        raise StudioError(f"{source}: 'joining' must be a mapping, e.g. {{open: true, max_raters: 12}}")
    is_open = joining.get("open", True)
    if not isinstance(is_open, bool):
        raise StudioError(f"{source}: 'joining.open' must be true or false, got {is_open!r}")
    cap = joining.get("max_raters")
    modes = spec.get("modes") or []
    if isinstance(modes, str):
        modes = [modes]
    return SessionPlan(
        title=str(spec.get("title") or ""), question=str(spec.get("question") or ""), systems=systems,
        modes=[str(m).upper() for m in modes],
        stimuli_per_mode=whole("stimuli_per_mode", spec.get("stimuli_per_mode", 4)),
        pairs_per_rater=whole("pairs_per_rater", spec.get("pairs_per_rater", 8)),
        seed=whole("seed", spec.get("seed", 0), low=0),
        joining=Joining(open=is_open, max_raters=None if cap is None else whole("joining.max_raters", cap),
                        invitations=0 if is_open else whole("joining.invitations", joining.get("invitations", 0))))
