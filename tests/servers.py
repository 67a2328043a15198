"""Real servers for tests, on 127.0.0.1 only: a private PostgreSQL cluster in a temp folder."""

from __future__ import annotations

import glob
import os
import shutil
import signal
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


RAY_ENV = {
    # keep the head, its processes and the drivers on 127.0.0.1: without this, Ray on Linux
    # swaps a loopback node address for the machine's routable one
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def ray_env(address: str) -> dict[str, str]:
    """The environment of a ``netrace run --backend ray`` on the head at ``address``, as a
    user's: RAY_ADDRESS set, and netrace left to set the loopback variable itself."""
    env = {**os.environ, "RAY_ADDRESS": address, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # netrace sets it for a loopback head
    return env


class RayHead:
    """``ray start --head`` on 127.0.0.1:<free port>, its files in a temp folder; ``stop``
    ends its processes, and only its: not a cluster of the user's own (``ray stop`` would end
    every Ray process of the user on the machine)."""

    def __init__(self, cpus: int = 2) -> None:
        import sys

        self.exe = str(Path(sys.executable).parent / "ray")
        self.dir = Path(tempfile.mkdtemp(prefix="nrray-", dir="/tmp"))  # short socket paths
        self.port = free_port()
        self.env = {**os.environ, **RAY_ENV}
        self.env.pop("RAY_ADDRESS", None)
        subprocess.run([self.exe, "start", "--head", "--node-ip-address=127.0.0.1",
                        f"--port={self.port}", "--include-dashboard=false",
                        "--disable-usage-stats", f"--num-cpus={cpus}",
                        f"--temp-dir={self.dir}"],
                       check=True, capture_output=True, timeout=180, env=self.env)
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        """SIGKILL (as ``ray stop --force``) to every process whose command line names this
        head's folder (GCS, raylet, dashboard, monitors) and to their descendants (the
        raylet's workers and agents, which rename themselves ``ray::...``); waits until they
        are gone."""
        pids = processes_under(str(self.dir))
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_running(p) for p in pids):
            time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)


def processes_under(marker: str) -> list[int]:
    """Processes whose command line contains ``marker``, and all their descendants (Linux)."""
    parent, roots = {}, []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:  # gone meanwhile
            continue
        pid = int(entry)
        parent[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if marker in cmdline and pid != os.getpid():
            roots.append(pid)
    found, todo = set(roots), list(roots)
    while todo:
        p = todo.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                found.add(child)
                todo.append(child)
    return sorted(found)


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening(names: tuple[str, ...]) -> list[tuple[str, str]]:
    """(local address, process) of every listening TCP socket whose process name contains
    one of ``names`` (from ``ss -ltnpH``)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 6 and any(n in parts[5] for n in names):
            rows.append((parts[3], parts[5]))
    return rows
