"""One contract for every backend, run on local processes and on Ray actors (a head on
127.0.0.1): run a worker function, report clean ends, errors and kills; in a race, a worker
killed from outside loses at most its epoch in training, and its networks continue on another."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from netrace.backends import Backend, LocalBackend, threads_per_worker
from tests import _workers
from tests.servers import ray_env
from tests.test_race import (
    _finished_before,
    _freeze_victim,
    _wait_epochs,
    check_continued_elsewhere,
    start,
    write,
)

pytestmark = pytest.mark.slow  # every test starts worker processes (or a Ray head)

# three one-CPU actors at once (an error among others); a race of two workers still gets one
# thread per worker, as on two CPUs
RAY_HEAD_CPUS = 3


@dataclass(frozen=True)
class Kind:
    """A backend as these tests run it, and what differs in how it reports a worker killed
    from outside (a local process ends by the signal; a Ray actor's process just dies)."""

    name: str
    killed_signal: int | None  # WorkerExit.signal of a killed worker
    killed: str  # how WorkerExit.describe() says it
    address: str | None = None  # Ray: the head's

    def make(self) -> Backend:
        if self.name == "local":
            return LocalBackend()
        from netrace.backends._ray import RayBackend

        return RayBackend(self.address)

    def race(self, cfg: Path, workers: int) -> subprocess.Popen:
        """`netrace run` on this backend, in the background."""
        if self.name == "local":
            return start(cfg, workers)
        return start(cfg, workers, "--backend", "ray", env=ray_env(self.address))


@pytest.fixture(params=["local", "ray"])
def kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Kind:
    if request.param == "local":
        return Kind("local", signal.SIGKILL, "was killed by SIGKILL")
    head = request.getfixturevalue("ray_head")
    # this process is a driver: netrace's Ray settings for a loopback head, set before Ray is
    # imported (it reads them then), undone after the test
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    import ray.cloudpickle
    from ray._private import ray_constants

    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False):  # imported here before, without it
        pytest.fail("Ray was imported in this process before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 "
                    "was set: as a driver it would look for the head off loopback")
    # the worker functions travel by value: an actor's Python may not find the tests package
    ray.cloudpickle.register_pickle_by_value(_workers)
    return Kind("ray", None, "died", head.address)


@pytest.fixture
def backend(kind: Kind) -> Iterator[Backend]:
    b = kind.make()
    try:
        yield b
    finally:
        if b.running():
            b.kill()
        b.close()


def _wait_files(folder: Path, pattern: str, n: int, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{n} files {pattern} did not appear")


def _all_exits(b: Backend, timeout: float = 60) -> list:
    exits, deadline = [], time.monotonic() + timeout
    while b.running() and time.monotonic() < deadline:
        exits += b.wait(1.0)
    return exits + b.wait(0.0)


def test_workers_run_with_their_thread_count(backend: Backend, tmp_path: Path) -> None:
    b = backend
    b.start(_workers.report, (str(tmp_path),), [0, 1], threads=1)
    exits = _all_exits(b)
    assert sorted(e.index for e in exits) == [0, 1] and all(e.ok for e in exits)
    for i in (0, 1):
        pid, threads = (tmp_path / f"{i}.txt").read_text().split()
        assert int(pid) != os.getpid() and int(threads) == 1
    assert threads_per_worker(1) >= 1 and threads_per_worker(10**6) == 1


def test_error_is_reported_and_others_go_on(backend: Backend, tmp_path: Path) -> None:
    b = backend
    b.start(_workers.fail, (str(tmp_path),), [0, 1, 2], threads=1)
    exits = {e.index: e for e in _all_exits(b)}
    assert exits[0].ok and exits[2].ok
    assert exits[1].exitcode == 1 and exits[1].signal is None
    assert "ValueError: bad hyperparameter in worker 1" in exits[1].error
    assert "failed (exit code 1)" in exits[1].describe()
    assert exits[1].user_message is None  # not the user's to fix


def test_a_user_error_is_reported_as_one(tmp_path: Path) -> None:
    """A UserError in a worker reaches the coordinator as a value (its message), which ends
    the run with it; no text is parsed for it."""
    b = LocalBackend()
    b.start(_workers.user_mistake, (str(tmp_path),), [0, 1], threads=1)
    exits = {e.index: e for e in _all_exits(b)}
    assert exits[0].ok and exits[0].user_message is None
    assert exits[1].user_message == "narrow [search.space]: nothing in it can be built"
    assert exits[1].error == "UserError: narrow [search.space]: nothing in it can be built"


def test_sigkill_is_reported(kind: Kind, backend: Backend, tmp_path: Path) -> None:
    b = backend
    b.start(_workers.loop_until_stopped, (str(tmp_path),), [0, 1], threads=1)
    _wait_files(tmp_path, "*.pid", 2)
    victim = int((tmp_path / "1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    exits = []
    deadline = time.monotonic() + 30
    while not exits and time.monotonic() < deadline:
        exits = b.wait(1.0)
    assert len(exits) == 1 and exits[0].index == 1 and exits[0].signal == kind.killed_signal
    assert not exits[0].ok and f"worker 1 {kind.killed}" in exits[0].describe()
    assert b.running() == [0]
    rest = b.shutdown(grace=30)
    assert [e.index for e in rest] == [0] and rest[0].ok
    assert (tmp_path / "0.stopped").exists()


def test_shutdown_kills_a_worker_that_ignores_stop(kind: Kind, backend: Backend,
                                                   tmp_path: Path) -> None:
    b = backend
    b.start(_workers.ignore_stop, (str(tmp_path),), [0], threads=1)
    _wait_files(tmp_path, "*.pid", 1)
    # the worker would sleep 10 minutes, then end cleanly: a SIGKILL is the grace ending
    exits = b.shutdown(grace=1.0)
    assert len(exits) == 1 and exits[0].signal == kind.killed_signal and not exits[0].ok
    assert b.running() == []


def test_restart_same_index_after_death(backend: Backend, tmp_path: Path) -> None:
    b = backend
    b.start(_workers.report, (str(tmp_path),), [3], threads=1)
    assert [e.index for e in _all_exits(b)] == [3]
    (tmp_path / "3.txt").unlink()
    b.start(_workers.report, (str(tmp_path),), [3], threads=1)
    assert [e.ok for e in _all_exits(b)] == [True]
    assert (tmp_path / "3.txt").exists()
    with pytest.raises(ValueError, match="already running"):
        b.start(_workers.ignore_stop, (str(tmp_path),), [5], threads=1)
        _wait_files(tmp_path, "5.pid", 1)
        b.start(_workers.ignore_stop, (str(tmp_path),), [5], threads=1)
    b.kill()


_FAULTS = """
import resource, sys, torch
import netrace.race  # what a worker process runs (its imports shape the heap, as in a worker)
from netrace.backends import set_worker_threads
if sys.argv[1] == "worker":
    set_worker_threads(1)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
last = 0
for step in range(6):  # a training loop's large per-step tensors, allocated and freed
    before = faults()
    a = torch.ones(64 * 2**20 // 4)
    b = torch.ones(100 * 2**20 // 4)
    del a, b
    last = faults() - before
print(last)
"""


def test_worker_processes_reuse_freed_memory_instead_of_faulting_fresh_pages():
    # Measured by the kernel's count of minor page faults in the last step of a loop that
    # allocates and frees 164 MB: a plain process faults every page in afresh each step
    # (~42k faults), a worker (set_worker_threads keeps freed memory) reuses its pages.
    import subprocess
    import sys

    counts = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS, mode], check=True,
                                       capture_output=True, text=True).stdout)
              for mode in ("plain", "worker")}
    assert counts["plain"] > 30_000
    assert counts["worker"] < 1_000


def test_a_dead_worker_runs_until_its_end_is_reported(tmp_path: Path) -> None:
    """The race stops watching once ``running()`` is empty: a worker that died after the last
    ``wait`` must still be there, or its exit (and the restart it calls for) is lost. (Local
    processes, whose end is seen by their pids; a Ray worker leaves ``running()`` only in
    ``wait``.)"""
    b = LocalBackend()
    b.start(_workers.report, (str(tmp_path),), [0], threads=1)
    deadline = time.monotonic() + 60
    while b.pids() and time.monotonic() < deadline:  # the process ends; no wait() yet
        time.sleep(0.05)
    assert not b.pids()
    assert b.running() == [0]
    exits = b.wait(0.0)
    assert [(e.index, e.ok) for e in exits] == [(0, True)]
    assert b.running() == []


def test_sigkill_of_a_worker_resumes_its_networks(kind: Kind, tmp_path: Path) -> None:
    """What the race guarantees on every backend, whatever the speeds and start order of the
    processes: a worker killed with SIGKILL loses at most the epoch it was training; its running
    networks go back to the queue with their states and curves and are claimed before any new
    proposal, so with budget left each one continues its curve where it was, on another worker;
    nothing completed is lost and nothing is counted twice."""
    budget, max_epochs = 800, 10  # room to spare however fast the engine trains
    cfg = write(tmp_path, rule="none", budget=budget, epochs=max_epochs)
    proc = kind.race(cfg, 2)
    s = _wait_epochs(tmp_path / "netrace.db", "race", 1)
    st = s.get_study("race")
    victim, running = _freeze_victim(s, "race", min_epochs=3)
    before = _finished_before(s, "race")
    # the killed networks need at most 2 populations of epochs per worker: budget enough
    assert s.epochs_spent(st.id) + 2 * 2 * 4 * max_epochs < budget
    killed_at = time.time()
    os.kill(victim["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert re.search(rf"worker \d+ {kind.killed}", err), err
    assert f"re-queued {len(running)} trial(s)" in err
    check_continued_elsewhere(s, before, running, victim, killed_at, max_epochs)
    assert not list((tmp_path / "netrace.db-states").glob("*.bin"))  # no state left behind
