"""Real servers for tests, on 127.0.0.1 only: a private PostgreSQL cluster in a temp folder."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    exe = shutil.which("initdb")
    if exe:
        return Path(exe).resolve().parent
    raise RuntimeError("PostgreSQL server binaries not found; install Debian's 'postgresql' "
                       "package (.ci/run does)")


class Postgres:
    """initdb + pg_ctl start on 127.0.0.1:<free port>; as the postgres user when run as root
    (the server refuses to run as root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="netrace-pg-"))
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        os.chmod(self.dir, 0o755)
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-A", "trust",
                  "-U", "postgres", "--no-sync", "-E", "UTF8")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-w", "-t", "60",
                  "-l", str(self.dir / "log"), "-o",
                  f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} "
                  "-c max_connections=50", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        if self.as_root:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def new_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast",
                      "-w", "stop")
        finally:
            time.sleep(0.1)
            shutil.rmtree(self.dir, ignore_errors=True)
