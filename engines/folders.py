"""Folders the studio writes to, checked before use: a folder it cannot write ends a command (or the studio's
start) with one line naming the path and the config key that set it, not a traceback halfway through."""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from engines.errors import StudioError


def check_writable(folder: str | Path, key: str) -> Path:
    """Make `folder` if needed and prove a file can be written in it; a StudioError naming `key` otherwise."""
    path = Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise StudioError(f"{key} '{folder}' is not a writable folder ({reason}); set {key} to one the studio "
                          "can write, e.g. --set " + f"{key}=/tmp/studio") from None
    return path


def write_atomically(path: str | Path, write) -> Path:
    """`write(temporary Path)` then rename it onto `path`: a reader sees the old file or the whole new one, never
    half of one, and two processes filling the same cache at once (the studio and a command, or test workers)
    each write their own temporary file. The temporary file keeps `path`'s suffix (np.savez needs .npz)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
