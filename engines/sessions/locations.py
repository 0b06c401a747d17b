"""Where the listening sessions keep their data: the database never lies in the stimuli folder the studio
serves to raters (it holds every rater's key and every system's name). Checked when the studio starts, before
anything is served; torch- and SQLAlchemy-free so that the check costs nothing at start-up."""
from __future__ import annotations

import shutil
from pathlib import Path

from engines.errors import StudioError
from engines.folders import check_writable


def check_private_database(database: str, stimuli_dir: str) -> None:
    """Refuse a SQLite database inside the stimuli folder: the studio serves that folder to raters, and the
    database holds every rater's key and every system's name (issue 18)."""
    path = database.split(":///", 1)[1] if database.startswith("sqlite:///") else database
    if "://" in path:
        return   # a server (PostgreSQL): nothing on disk to serve
    db, served = Path(path).resolve(), Path(stimuli_dir).resolve()
    if db == served or served in db.parents:
        raise StudioError(f"sessions.database '{database}' lies inside sessions.stimuli_dir '{stimuli_dir}', which "
                          "the studio serves to raters; put the database elsewhere (default "
                          "data/private/sessions.sqlite)")


LEGACY_DATABASE = "data/listening/sessions.sqlite"   # the first default, inside the served stimuli folder


def move_legacy_database(database: str, stimuli_dir: str) -> bool:
    """Move a database left at the first default (inside the served stimuli folder) to `database`, with its
    WAL files, when `database` does not exist yet, so no session is lost to the new default. True if moved."""
    old, new = Path(LEGACY_DATABASE), Path(database)
    if "://" in database or new.exists() or not old.is_file() or old.resolve() == new.resolve():
        return False
    if Path(stimuli_dir).resolve() not in old.resolve().parents:
        return False
    new.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{old}{suffix}").exists():
            shutil.move(f"{old}{suffix}", f"{new}{suffix}")
    return True


def check_session_folders(database: str, stimuli_dir: str) -> None:
    """The folders listening sessions write to, checked at start: the SQLite database's folder and the stimuli
    folder (a server database is checked by opening it)."""
    path = database.split(":///", 1)[1] if database.startswith("sqlite:///") else database
    if "://" not in path:
        check_writable(Path(path).expanduser().parent, "sessions.database")
    check_writable(stimuli_dir, "sessions.stimuli_dir")
