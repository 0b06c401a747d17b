"""A throwaway PostgreSQL server for the listening-store tests: Debian's `postgresql` package (the Makefile
installs it), a cluster made by `initdb` in a temporary folder and started by `pg_ctl` on a free port of
127.0.0.1, with trust authentication for local connections only. initdb refuses to run as root, so as root
the cluster belongs to the `postgres` system user the package creates (through `runuser`).

    server = PostgresServer.start(); url = server.new_database(); ...; server.stop()
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def postgres_bin() -> Path | None:
    """The newest PostgreSQL server binaries Debian installed (/usr/lib/postgresql/<version>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    def __init__(self, bin_dir: Path, folder: Path, port: int, user: str | None):
        self.bin_dir, self.folder, self.port, self.user = bin_dir, folder, port, user
        self._databases = 0

    def _run(self, *args, **kwargs) -> subprocess.CompletedProcess:
        command = [str(self.bin_dir / args[0]), *map(str, args[1:])]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, **kwargs)

    @classmethod
    def start(cls) -> "PostgresServer":
        bin_dir = postgres_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed: run `make sysdeps` (Debian's postgresql package)")
        user = "postgres" if os.geteuid() == 0 else None
        folder = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        if user:
            os.chown(folder, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = cls(bin_dir, folder, port, user)
        done = server._run("initdb", "-D", folder / "data", "-U", "postgres", "--auth=trust", "-E", "UTF8",
                           "--no-sync", timeout=120)
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
        done = server._run("pg_ctl", "-D", folder / "data", "-l", folder / "server.log", "-o", options, "-w",
                           "start", timeout=120)
        if done.returncode:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {server.log()}")
        return server

    def log(self) -> str:
        try:
            return (self.folder / "server.log").read_text()[-2000:]
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database on this server: its SQLAlchemy URL."""
        import psycopg

        self._databases += 1
        name = f"studio_test_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.folder / "data", "-m", "immediate", "-w", "stop", timeout=60)
        for _ in range(20):   # the postmaster may take a moment to let go of its files
            try:
                shutil.rmtree(self.folder)
                return
            except OSError:
                time.sleep(0.2)
