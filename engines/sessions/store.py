"""Storage of blinded A/B listening sessions: SQLite in WAL mode by default, any SQLAlchemy URL (PostgreSQL)
for a shared deployment, through this one repository class.

    sessions      a listening session: code (what raters type or follow a link to), title, question, the
                  modes, pairs per rater, status (open / closed), created
    systems       the systems compared in a session (name, JSON spec: engine + settings, or a MIDI folder)
    stimuli       one rendered segment of a system: mode, MIDI and audio paths (made before anyone listens)
    pairs         two stimuli of different systems, same mode
    raters        one person in one session: a random token (their resume key), a name or "" (anonymous)
    assignments   a rater's pairs in their own random order with their own random A/B placement, drawn when
                  they join: a pair appears once per rater, so it is never shown twice
    votes         a rater's answer on a pair: A, B or tie as shown, and the comment; unique per (rater, pair),
                  so a repeated submission (a retry, a double click, two tabs) stores nothing twice

Every vote is its own committed transaction before `vote` returns, and the rater's next pair is read after
it. SQLite runs in WAL mode with synchronous=FULL (a committed vote survives the process being killed) and a
busy timeout, so concurrent raters queue instead of failing. The schema is versioned: `MIGRATIONS` run in
order on open, each recorded in `schema_migrations`; a later change adds one and never edits an old one.
"""
from __future__ import annotations

import json
import secrets
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (Boolean, Column, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, event, func, insert, select, update)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from engines.errors import StudioError

CHOICES = ("A", "B", "tie")
BUSY_TIMEOUT_SECONDS = 30


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _schema_v1(metadata: MetaData) -> dict[str, Table]:
    """The tables as version 1 created them (frozen: later versions are migrations on top)."""
    return {
        "sessions": Table(
            "sessions", metadata,
            Column("code", String(32), primary_key=True),
            Column("title", Text, nullable=False),
            Column("question", Text, nullable=False),
            Column("modes", Text, nullable=False),              # JSON list
            Column("pairs_per_rater", Integer, nullable=False),
            Column("status", String(16), nullable=False),       # open | closed
            Column("created", String(32), nullable=False)),
        "systems": Table(
            "systems", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("session", String(32), ForeignKey("sessions.code"), nullable=False, index=True),
            Column("name", Text, nullable=False),
            Column("spec", Text, nullable=False),               # JSON
            UniqueConstraint("session", "name")),
        "stimuli": Table(
            "stimuli", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("session", String(32), ForeignKey("sessions.code"), nullable=False, index=True),
            Column("system", Integer, ForeignKey("systems.id"), nullable=False),
            Column("mode", String(16), nullable=False),
            Column("midi_path", Text, nullable=False),
            Column("audio_path", Text, nullable=False)),
        "pairs": Table(
            "pairs", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("session", String(32), ForeignKey("sessions.code"), nullable=False, index=True),
            Column("first", Integer, ForeignKey("stimuli.id"), nullable=False),
            Column("second", Integer, ForeignKey("stimuli.id"), nullable=False),
            Column("mode", String(16), nullable=False)),
        "raters": Table(
            "raters", metadata,
            Column("token", String(64), primary_key=True),
            Column("session", String(32), ForeignKey("sessions.code"), nullable=False, index=True),
            Column("name", Text, nullable=False),
            Column("created", String(32), nullable=False)),
        "assignments": Table(
            "assignments", metadata,
            Column("rater", String(64), ForeignKey("raters.token"), primary_key=True),
            Column("position", Integer, primary_key=True),
            Column("pair", Integer, ForeignKey("pairs.id"), nullable=False),
            Column("flipped", Boolean, nullable=False),         # True: the pair's second stimulus plays as A
            UniqueConstraint("rater", "pair")),
        "votes": Table(
            "votes", metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("rater", String(64), ForeignKey("raters.token"), nullable=False),
            Column("pair", Integer, ForeignKey("pairs.id"), nullable=False),
            Column("choice", String(8), nullable=False),        # A | B | tie, as the rater saw them
            Column("comment", Text, nullable=False),
            Column("created", String(32), nullable=False),
            UniqueConstraint("rater", "pair")),
    }


METADATA = MetaData()
TABLES = _schema_v1(METADATA)
MIGRATION_TABLE = Table("schema_migrations", MetaData(), Column("version", Integer, primary_key=True),
                        Column("applied", String(32), nullable=False))


def _migration_1(conn: Connection) -> None:
    frozen = MetaData()
    _schema_v1(frozen)
    frozen.create_all(conn)


MIGRATIONS = [(1, "sessions, systems, stimuli, pairs, raters, assignments, votes", _migration_1)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def database_url(path_or_url: str | Path) -> str:
    """A SQLAlchemy URL as given (postgresql://…, sqlite:///…), or a file path made into a SQLite URL."""
    text = str(path_or_url)
    if "://" in text:
        return text
    Path(text).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(text).expanduser()}"


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_SECONDS * 1000}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


class SessionStore:
    """The repository: every method is one transaction. Raises StudioError on what a user can get wrong."""

    def __init__(self, path_or_url: str | Path):
        self.url = database_url(path_or_url)
        sqlite = self.url.startswith("sqlite")
        self.engine: Engine = create_engine(self.url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS} if sqlite else {})
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self.migrate()

    def migrate(self) -> int:
        """Run the migrations not yet applied; returns the schema version."""
        with self.engine.begin() as conn:
            MIGRATION_TABLE.create(conn, checkfirst=True)
            done = set(conn.execute(select(MIGRATION_TABLE.c.version)).scalars())
            for version, _description, apply in MIGRATIONS:
                if version not in done:
                    apply(conn)
                    conn.execute(insert(MIGRATION_TABLE).values(version=version, applied=_now()))
            newest = conn.execute(select(func.max(MIGRATION_TABLE.c.version))).scalar()
        if newest > SCHEMA_VERSION:
            raise StudioError(f"the listening database '{self.url}' has schema version {newest}; this studio "
                              f"knows up to {SCHEMA_VERSION}: update the studio")
        return int(newest)

    def journal_mode(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.exec_driver_sql("PRAGMA journal_mode").scalar())

    def close(self) -> None:
        self.engine.dispose()

    # ---- organiser ------------------------------------------------------------------------------------
    def new_code(self) -> str:
        """A session code not in use yet (8 hex digits, what raters type)."""
        with self.engine.connect() as conn:
            while True:
                code = secrets.token_hex(4).upper()
                if conn.execute(select(TABLES["sessions"].c.code).where(TABLES["sessions"].c.code == code)).first() is None:
                    return code

    def create_session(self, title: str, question: str, modes: list[str], pairs_per_rater: int,
                       systems: dict[str, dict], stimuli: list[dict], pairs: list[tuple[int, int]],
                       code: str | None = None) -> str:
        """A session with its systems ({name: spec}), stimuli ([{system, mode, midi_path, audio_path}]) and
        pairs (indices into stimuli, two different systems of one mode); returns its code (`code`, or a new one)."""
        if len(systems) < 2:
            raise StudioError("a listening session compares at least two systems")
        if not pairs:
            raise StudioError("a listening session needs at least one pair of stimuli")
        if pairs_per_rater < 1:
            raise StudioError(f"pairs per rater must be at least 1, got {pairs_per_rater}")
        for a, b in pairs:
            if stimuli[a]["system"] == stimuli[b]["system"] or stimuli[a]["mode"] != stimuli[b]["mode"]:
                raise StudioError("each pair holds two different systems' stimuli of the same mode")
        code = (code or self.new_code()).upper()
        t = TABLES
        with self.engine.begin() as conn:
            conn.execute(insert(t["sessions"]).values(
                code=code, title=title, question=question, modes=json.dumps(list(modes)),
                pairs_per_rater=int(pairs_per_rater), status="open", created=_now()))
            system_ids = {}
            for name, spec in systems.items():
                system_ids[name] = conn.execute(insert(t["systems"]).values(
                    session=code, name=name, spec=json.dumps(spec, sort_keys=True))).inserted_primary_key[0]
            stimulus_ids = [conn.execute(insert(t["stimuli"]).values(
                session=code, system=system_ids[s["system"]], mode=s["mode"], midi_path=str(s["midi_path"]),
                audio_path=str(s["audio_path"]))).inserted_primary_key[0] for s in stimuli]
            for a, b in pairs:
                conn.execute(insert(t["pairs"]).values(session=code, first=stimulus_ids[a], second=stimulus_ids[b],
                                                       mode=stimuli[a]["mode"]))
        return code

    def session(self, code: str) -> dict:
        code = (code or "").strip().upper()
        with self.engine.connect() as conn:
            row = conn.execute(select(TABLES["sessions"]).where(TABLES["sessions"].c.code == code)).mappings().first()
            if row is None:
                raise StudioError(f"no listening session with code '{code}'")
            systems = conn.execute(select(TABLES["systems"].c.name, TABLES["systems"].c.spec)
                                   .where(TABLES["systems"].c.session == code)
                                   .order_by(TABLES["systems"].c.id)).all()
            pairs = conn.execute(select(func.count()).select_from(TABLES["pairs"])
                                 .where(TABLES["pairs"].c.session == code)).scalar()
        return {**dict(row), "modes": json.loads(row["modes"]), "pairs": int(pairs),
                "systems": {name: json.loads(spec) for name, spec in systems}}

    def sessions(self) -> list[dict]:
        with self.engine.connect() as conn:
            codes = conn.execute(select(TABLES["sessions"].c.code).order_by(TABLES["sessions"].c.created.desc())).scalars()
            codes = list(codes)
        return [self.session(c) for c in codes]

    def set_status(self, code: str, status: str) -> None:
        if status not in ("open", "closed"):
            raise StudioError(f"session status must be open or closed, got '{status}'")
        with self.engine.begin() as conn:
            done = conn.execute(update(TABLES["sessions"]).where(TABLES["sessions"].c.code == code.upper())
                                .values(status=status)).rowcount
        if not done:
            raise StudioError(f"no listening session with code '{code}'")

    # ---- raters ---------------------------------------------------------------------------------------
    def join(self, code: str, name: str = "") -> str:
        """A new rater in session `code` with their own random order and A/B placement of pairs_per_rater
        pairs (fewer when the session has fewer); returns the rater's token."""
        info = self.session(code)
        if info["status"] != "open":
            raise StudioError(f"listening session '{info['code']}' is closed")
        rng = secrets.SystemRandom()
        token = secrets.token_urlsafe(16)
        with self.engine.begin() as conn:
            pair_ids = list(conn.execute(select(TABLES["pairs"].c.id).where(TABLES["pairs"].c.session == info["code"])
                                         .order_by(TABLES["pairs"].c.id)).scalars())
            chosen = rng.sample(pair_ids, min(info["pairs_per_rater"], len(pair_ids)))  # random order, no repeats
            conn.execute(insert(TABLES["raters"]).values(token=token, session=info["code"],
                                                         name=(name or "").strip()[:80], created=_now()))
            conn.execute(insert(TABLES["assignments"]), [
                {"rater": token, "position": i, "pair": p, "flipped": rng.random() < 0.5} for i, p in enumerate(chosen)])
        return token

    def rater(self, token: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(TABLES["raters"]).where(TABLES["raters"].c.token == (token or "").strip())
                               ).mappings().first()
        if row is None:
            raise StudioError("unknown rater key; join the session again with its code")
        return dict(row)

    def progress(self, token: str) -> tuple[int, int]:
        """(pairs answered, pairs assigned) of a rater."""
        a, v = TABLES["assignments"], TABLES["votes"]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(a).where(a.c.rater == token)).scalar()
            answered = conn.execute(select(func.count()).select_from(v).where(v.c.rater == token)).scalar()
        return int(answered), int(total)

    def next_pair(self, token: str) -> dict | None:
        """The rater's first unanswered pair in their order, as they hear it: {pair, position, total, mode,
        a: {midi_path, audio_path}, b: …}; None when they have answered all."""
        self.rater(token)
        a, v, p, s = TABLES["assignments"], TABLES["votes"], TABLES["pairs"], TABLES["stimuli"]
        with self.engine.connect() as conn:
            answered = select(v.c.pair).where(v.c.rater == token)
            row = conn.execute(select(a.c.position, a.c.pair, a.c.flipped, p.c.first, p.c.second, p.c.mode)
                               .join(p, p.c.id == a.c.pair)
                               .where(a.c.rater == token, a.c.pair.not_in(answered))
                               .order_by(a.c.position).limit(1)).mappings().first()
            if row is None:
                return None
            stimuli = {r.id: {"midi_path": r.midi_path, "audio_path": r.audio_path}
                       for r in conn.execute(select(s).where(s.c.id.in_([row["first"], row["second"]])))}
        shown = (row["second"], row["first"]) if row["flipped"] else (row["first"], row["second"])
        done, total = self.progress(token)
        return {"pair": int(row["pair"]), "position": done + 1, "total": total, "mode": row["mode"],
                "a": stimuli[shown[0]], "b": stimuli[shown[1]]}

    def vote(self, token: str, pair: int, choice: str, comment: str = "") -> bool:
        """Store the rater's answer on `pair`, committed before returning. True when stored, False when that
        rater had already answered that pair (nothing is stored twice)."""
        if choice not in CHOICES:
            raise StudioError(f"answer must be one of {', '.join(CHOICES)}, got '{choice}'")
        rater = self.rater(token)
        a = TABLES["assignments"]
        try:
            with self.engine.begin() as conn:
                assigned = conn.execute(select(a.c.pair).where(a.c.rater == token, a.c.pair == int(pair))).first()
                if assigned is None:
                    raise StudioError(f"pair {pair} is not one of this rater's pairs")
                if self._session_status(conn, rater["session"]) != "open":
                    raise StudioError(f"listening session '{rater['session']}' is closed")
                conn.execute(insert(TABLES["votes"]).values(rater=token, pair=int(pair), choice=choice,
                                                            comment=(comment or "").strip()[:2000], created=_now()))
        except IntegrityError:
            return False
        return True

    @staticmethod
    def _session_status(conn: Connection, code: str) -> str:
        return conn.execute(select(TABLES["sessions"].c.status).where(TABLES["sessions"].c.code == code)).scalar()

    # ---- results --------------------------------------------------------------------------------------
    def votes(self, code: str) -> list[dict]:
        """Every vote of a session with what it means: {rater, pair, mode, choice, comment, created, shown_a,
        shown_b (system names as heard), preferred (a system name, or None for a tie)}."""
        code = code.upper()
        v, a, p, s, y, r = (TABLES[k] for k in ("votes", "assignments", "pairs", "stimuli", "systems", "raters"))
        first, second = s.alias("first_stimulus"), s.alias("second_stimulus")
        first_system, second_system = y.alias("first_system"), y.alias("second_system")
        query = (select(v.c.rater, r.c.name.label("rater_name"), v.c.pair, p.c.mode, v.c.choice, v.c.comment,
                        v.c.created, a.c.flipped, first_system.c.name.label("first"),
                        second_system.c.name.label("second"))
                 .join(r, r.c.token == v.c.rater)
                 .join(a, (a.c.rater == v.c.rater) & (a.c.pair == v.c.pair))
                 .join(p, p.c.id == v.c.pair)
                 .join(first, first.c.id == p.c.first).join(second, second.c.id == p.c.second)
                 .join(first_system, first_system.c.id == first.c.system)
                 .join(second_system, second_system.c.id == second.c.system)
                 .where(p.c.session == code).order_by(v.c.id))
        rows = []
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                shown_a, shown_b = (row["second"], row["first"]) if row["flipped"] else (row["first"], row["second"])
                preferred = {"A": shown_a, "B": shown_b}.get(row["choice"])
                rows.append({"rater": row["rater"], "rater_name": row["rater_name"], "pair": int(row["pair"]),
                             "mode": row["mode"], "choice": row["choice"], "comment": row["comment"],
                             "created": row["created"], "shown_a": shown_a, "shown_b": shown_b,
                             "first": row["first"], "second": row["second"], "preferred": preferred})
        return rows
