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
    invitations   one-use joining links of a session (stored hashed): which rater used each
    organiser_keys  keys that may create sessions when the studio's creation is not open (stored hashed)

Roles (schema version 2): a session's organiser key (shown once, stored as its SHA-256) is needed for its
results, its votes, closing or reopening it and adding raters. Keys and invitations are 128-bit random
tokens, so a plain SHA-256 is enough: there is no password to brute-force. Joining is either open (with an
optional cap on raters, counted by one conditional UPDATE so two raters joining at once never pass it) or by
invitation only (each link joins one rater, once).

Every vote is its own committed transaction before `vote` returns, and the rater's next pair is read after
it. SQLite runs in WAL mode with synchronous=FULL (a committed vote survives the process being killed) and a
busy timeout, so concurrent raters queue instead of failing. The schema is versioned: `MIGRATIONS` run in
order on open, each recorded in `schema_migrations`; a later change adds one and never edits an old one.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (Boolean, Column, ForeignKey, Integer, MetaData, String, Table, Text, UniqueConstraint,
                        create_engine, event, func, insert, select, update)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from engines.errors import StudioError

CHOICES = ("A", "B", "tie")
JOINING = ("open", "invite")   # open: anyone with the code (up to max_raters); invite: one-use links only
BUSY_TIMEOUT_SECONDS = 30
LOG = logging.getLogger(__name__)
# What a rater (or anyone) reads when the database fails: no URL, host, user or path; the log has the detail.
UNAVAILABLE = "the listening database is not available right now; please try again in a minute"


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


# Version 2: organiser keys, joining policies and invitations. Added to the live tables here (queries use
# TABLES), and by `_migration_2` to a version-1 database.
V2_SESSION_COLUMNS = (
    ("organiser_key_hash", "VARCHAR(64)", lambda: Column("organiser_key_hash", String(64))),  # NULL: made before keys
    ("joining", "VARCHAR(16) NOT NULL DEFAULT 'open'",                                       # open | invite
     lambda: Column("joining", String(16), nullable=False, server_default="open")),
    ("max_raters", "INTEGER", lambda: Column("max_raters", Integer)),                         # NULL: no cap
    ("raters_joined", "INTEGER NOT NULL DEFAULT 0",
     lambda: Column("raters_joined", Integer, nullable=False, server_default="0")),
)


def _schema_v2_tables(metadata: MetaData) -> dict[str, Table]:
    return {
        "invitations": Table(
            "invitations", metadata,
            Column("token_hash", String(64), primary_key=True),
            Column("session", String(32), ForeignKey("sessions.code"), nullable=False, index=True),
            Column("rater", String(64), ForeignKey("raters.token")),   # NULL until used
            Column("created", String(32), nullable=False)),
        "organiser_keys": Table(
            "organiser_keys", metadata,
            Column("key_hash", String(64), primary_key=True),
            Column("created", String(32), nullable=False)),
    }


for _name, _sql, _column in V2_SESSION_COLUMNS:
    TABLES["sessions"].append_column(_column())
TABLES.update(_schema_v2_tables(METADATA))


def _migration_1(conn: Connection) -> None:
    frozen = MetaData()
    _schema_v1(frozen)
    frozen.create_all(conn)


def _migration_2(conn: Connection) -> None:
    for name, sql, _column in V2_SESSION_COLUMNS:
        conn.exec_driver_sql(f"ALTER TABLE sessions ADD COLUMN {name} {sql}")
    conn.exec_driver_sql("UPDATE sessions SET raters_joined = "
                         "(SELECT count(*) FROM raters WHERE raters.session = sessions.code)")
    frozen = MetaData()
    _schema_v1(frozen)   # the foreign keys' targets, as they are in the database
    new_tables = _schema_v2_tables(frozen)
    frozen.create_all(conn, tables=list(new_tables.values()))


MIGRATIONS = [(1, "sessions, systems, stimuli, pairs, raters, assignments, votes", _migration_1),
              (2, "organiser keys, joining policies (open with a cap, or invitations)", _migration_2)]
SCHEMA_VERSION = MIGRATIONS[-1][0]


def key_hash(key: str) -> str:
    """What the database keeps of a key or an invitation: its SHA-256 (the key itself is 128-bit random)."""
    return hashlib.sha256((key or "").strip().encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(16)


def shown_url(url: str) -> str:
    """A database URL for the organiser's messages and log: the password hidden."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (a malformed URL: say nothing of it)
        return url.split("://", 1)[0] + "://…"


def _database_errors(method):
    """A failing database (gone, locked past the timeout, disk full) reaches callers as a StudioError that
    names no host, user or path (raters read it); the log keeps the detail for the organiser."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError):
                raise
            LOG.error("listening database %s failed in %s: %s", shown_url(self.url), method.__name__, exc.orig)
            raise StudioError(UNAVAILABLE) from None
    return run


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

    def __init__(self, path_or_url: str | Path, key: str = "sessions.database"):
        """Open (and migrate) the database; one that cannot be opened raises a StudioError naming `key` and
        the path or URL (password hidden): that message is for the organiser starting the studio."""
        try:
            self.url = database_url(path_or_url)
        except OSError as exc:
            raise StudioError(f"{key} '{path_or_url}': its folder cannot be made ({exc.strerror})") from None
        sqlite = self.url.startswith("sqlite")
        try:
            self.engine: Engine = create_engine(
                self.url, connect_args={"timeout": BUSY_TIMEOUT_SECONDS} if sqlite else {})
        except Exception as exc:  # noqa: BLE001  (a malformed URL, a driver not installed)
            raise StudioError(f"{key} '{shown_url(str(path_or_url))}' is not a usable database: {exc}") from None
        if sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self.migrate()
        except DBAPIError as exc:
            self.engine.dispose()
            raise StudioError(f"{key} '{shown_url(self.url)}' cannot be opened: {exc.orig}") from None

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
    @_database_errors
    def new_code(self) -> str:
        """A session code not in use yet (8 hex digits, what raters type)."""
        with self.engine.connect() as conn:
            while True:
                code = secrets.token_hex(4).upper()
                if conn.execute(select(TABLES["sessions"].c.code).where(TABLES["sessions"].c.code == code)).first() is None:
                    return code

    @_database_errors
    def create_session(self, title: str, question: str, modes: list[str], pairs_per_rater: int,
                       systems: dict[str, dict], stimuli: list[dict], pairs: list[tuple[int, int]],
                       code: str | None = None, organiser_key: str | None = None, joining: str = "open",
                       max_raters: int | None = None) -> str:
        """A session with its systems ({name: spec}), stimuli ([{system, mode, midi_path, audio_path}]) and
        pairs (indices into stimuli, two different systems of one mode); returns its code (`code`, or a new one).
        `organiser_key` is stored hashed; `joining` is "open" (at most `max_raters` raters, None: no cap) or
        "invite" (only through `invite`'s links)."""
        if len(systems) < 2:
            raise StudioError("a listening session compares at least two systems")
        if not pairs:
            raise StudioError("a listening session needs at least one pair of stimuli")
        if pairs_per_rater < 1:
            raise StudioError(f"pairs per rater must be at least 1, got {pairs_per_rater}")
        if joining not in JOINING:
            raise StudioError(f"joining must be one of {', '.join(JOINING)}, got '{joining}'")
        if max_raters is not None and max_raters < 1:
            raise StudioError(f"the cap on raters must be at least 1, got {max_raters}")
        for a, b in pairs:
            if stimuli[a]["system"] == stimuli[b]["system"] or stimuli[a]["mode"] != stimuli[b]["mode"]:
                raise StudioError("each pair holds two different systems' stimuli of the same mode")
        code = (code or self.new_code()).upper()
        t = TABLES
        with self.engine.begin() as conn:
            conn.execute(insert(t["sessions"]).values(
                code=code, title=title, question=question, modes=json.dumps(list(modes)),
                pairs_per_rater=int(pairs_per_rater), status="open", created=_now(),
                organiser_key_hash=key_hash(organiser_key) if organiser_key else None, joining=joining,
                max_raters=max_raters, raters_joined=0))
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

    @_database_errors
    def session(self, code: str) -> dict:
        """A session as plain data (its organiser key hash left out)."""
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
        row = {k: v for k, v in dict(row).items() if k != "organiser_key_hash"}
        return {**row, "modes": json.loads(row["modes"]), "pairs": int(pairs),
                "systems": {name: json.loads(spec) for name, spec in systems}}

    @_database_errors
    def sessions(self) -> list[dict]:
        with self.engine.connect() as conn:
            codes = conn.execute(select(TABLES["sessions"].c.code).order_by(TABLES["sessions"].c.created.desc())).scalars()
            codes = list(codes)
        return [self.session(c) for c in codes]

    @_database_errors
    def check_organiser(self, code: str, organiser_key: str) -> str:
        """The session's code when `organiser_key` is its organiser key; a StudioError otherwise."""
        code = (code or "").strip().upper()
        with self.engine.connect() as conn:
            row = conn.execute(select(TABLES["sessions"].c.organiser_key_hash)
                               .where(TABLES["sessions"].c.code == code)).first()
        if row is None:
            raise StudioError(f"no listening session with code '{code}'")
        if row[0] is None:
            raise StudioError(f"session '{code}' was made before organiser keys; on the studio's machine, run "
                              f"`python -m engines listen rekey {code}` for one")
        if not (organiser_key or "").strip():
            raise StudioError(f"session '{code}': give its organiser key (shown once when it was created)")
        if not hmac.compare_digest(row[0], key_hash(organiser_key)):
            raise StudioError(f"that is not the organiser key of session '{code}'")
        return code

    @_database_errors
    def rekey(self, code: str) -> str:
        """A new organiser key for session `code` (the old one stops working); for whoever holds the database."""
        key = new_key()
        with self.engine.begin() as conn:
            done = conn.execute(update(TABLES["sessions"]).where(TABLES["sessions"].c.code == code.strip().upper())
                                .values(organiser_key_hash=key_hash(key))).rowcount
        if not done:
            raise StudioError(f"no listening session with code '{code.strip().upper()}'")
        return key

    @_database_errors
    def add_raters(self, code: str, count: int) -> list[str]:
        """Room for `count` more raters: an open session's cap goes up by `count` (none when it has no cap),
        an invitation session gets `count` new one-use invitations, returned (the only time they are seen)."""
        if not 1 <= count <= 1000:
            raise StudioError(f"add 1 to 1000 raters at a time, got {count}")
        info = self.session(code)
        if info["joining"] == "invite":
            tokens = [new_key() for _ in range(count)]
            with self.engine.begin() as conn:
                conn.execute(insert(TABLES["invitations"]), [
                    {"token_hash": key_hash(t), "session": info["code"], "rater": None, "created": _now()}
                    for t in tokens])
            return tokens
        if info["max_raters"] is not None:
            s = TABLES["sessions"]
            with self.engine.begin() as conn:
                conn.execute(update(s).where(s.c.code == info["code"]).values(max_raters=s.c.max_raters + count))
        return []

    @_database_errors
    def invitations(self, code: str) -> dict:
        """{made, used} invitations of a session."""
        i = TABLES["invitations"]
        with self.engine.connect() as conn:
            made = conn.execute(select(func.count()).select_from(i).where(i.c.session == code.upper())).scalar()
            used = conn.execute(select(func.count()).select_from(i)
                                .where(i.c.session == code.upper(), i.c.rater.is_not(None))).scalar()
        return {"made": int(made), "used": int(used)}

    # ---- keys that may create sessions (when the studio's creation is not open) -------------------------------
    @_database_errors
    def add_creator_key(self) -> str:
        key = new_key()
        with self.engine.begin() as conn:
            conn.execute(insert(TABLES["organiser_keys"]).values(key_hash=key_hash(key), created=_now()))
        return key

    @_database_errors
    def has_creator_keys(self) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(TABLES["organiser_keys"])).scalar() > 0

    @_database_errors
    def is_creator_key(self, key: str) -> bool:
        if not (key or "").strip():
            return False
        k = TABLES["organiser_keys"]
        with self.engine.connect() as conn:
            return conn.execute(select(k.c.key_hash).where(k.c.key_hash == key_hash(key))).first() is not None

    @_database_errors
    def set_status(self, code: str, status: str) -> None:
        if status not in ("open", "closed"):
            raise StudioError(f"session status must be open or closed, got '{status}'")
        with self.engine.begin() as conn:
            done = conn.execute(update(TABLES["sessions"]).where(TABLES["sessions"].c.code == code.upper())
                                .values(status=status)).rowcount
        if not done:
            raise StudioError(f"no listening session with code '{code}'")

    # ---- raters ---------------------------------------------------------------------------------------
    @_database_errors
    def join(self, code: str, name: str = "", invitation: str = "") -> str:
        """A new rater in session `code` with their own random order and A/B placement of pairs_per_rater
        pairs (fewer when the session has fewer); returns the rater's token. An open session takes raters up
        to its cap; an invitation session takes one rater per unused `invitation`."""
        info = self.session(code)
        if info["status"] != "open":
            raise StudioError(f"listening session '{info['code']}' is closed")
        invitation = (invitation or "").strip()
        if info["joining"] == "invite" and not invitation:
            raise StudioError(f"listening session '{info['code']}' is by invitation: open the link the organiser "
                              "sent you")
        rng = secrets.SystemRandom()
        token = secrets.token_urlsafe(16)
        s, invitations = TABLES["sessions"], TABLES["invitations"]
        with self.engine.begin() as conn:
            # The counter first: one conditional UPDATE, so raters joining at once never pass the cap, and the
            # transaction holds the write lock from its first statement.
            counted = conn.execute(update(s).where(s.c.code == info["code"], s.c.status == "open",
                                                   (s.c.max_raters.is_(None)) | (s.c.raters_joined < s.c.max_raters))
                                   .values(raters_joined=s.c.raters_joined + 1)).rowcount
            if not counted:
                if self._session_status(conn, info["code"]) != "open":
                    raise StudioError(f"listening session '{info['code']}' is closed")
                raise StudioError(f"listening session '{info['code']}' is full; ask its organiser to add raters")
            pair_ids = list(conn.execute(select(TABLES["pairs"].c.id).where(TABLES["pairs"].c.session == info["code"])
                                         .order_by(TABLES["pairs"].c.id)).scalars())
            chosen = rng.sample(pair_ids, min(info["pairs_per_rater"], len(pair_ids)))  # random order, no repeats
            conn.execute(insert(TABLES["raters"]).values(token=token, session=info["code"],
                                                         name=(name or "").strip()[:80], created=_now()))
            if info["joining"] == "invite":
                used = conn.execute(update(invitations).where(
                    invitations.c.token_hash == key_hash(invitation), invitations.c.session == info["code"],
                    invitations.c.rater.is_(None)).values(rater=token)).rowcount
                if not used:   # the whole join rolls back: no rater, no count
                    raise StudioError("this invitation has been used already or is not for this session; ask the "
                                      "organiser for a new link")
            conn.execute(insert(TABLES["assignments"]), [
                {"rater": token, "position": i, "pair": p, "flipped": rng.random() < 0.5} for i, p in enumerate(chosen)])
        return token

    @_database_errors
    def rater(self, token: str) -> dict:
        with self.engine.connect() as conn:
            row = conn.execute(select(TABLES["raters"]).where(TABLES["raters"].c.token == (token or "").strip())
                               ).mappings().first()
        if row is None:
            raise StudioError("unknown rater key; join the session again with its code")
        return dict(row)

    @_database_errors
    def progress(self, token: str) -> tuple[int, int]:
        """(pairs answered, pairs assigned) of a rater."""
        a, v = TABLES["assignments"], TABLES["votes"]
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(a).where(a.c.rater == token)).scalar()
            answered = conn.execute(select(func.count()).select_from(v).where(v.c.rater == token)).scalar()
        return int(answered), int(total)

    @_database_errors
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

    @_database_errors
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
    @_database_errors
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
