"""One contract for every backend: run a worker function, report clean ends, errors and kills."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from netrace.backends import LocalBackend, threads_per_worker
from tests import _workers


def _wait_files(folder: Path, pattern: str, n: int, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if len(found) >= n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{n} files {pattern} did not appear")


def _all_exits(b: LocalBackend, timeout: float = 60) -> list:
    exits, deadline = [], time.monotonic() + timeout
    while b.running() and time.monotonic() < deadline:
        exits += b.wait(1.0)
    return exits + b.wait(0.0)


def test_workers_run_with_their_thread_count(tmp_path: Path) -> None:
    b = LocalBackend()
    b.start(_workers.report, (str(tmp_path),), [0, 1], threads=1)
    exits = _all_exits(b)
    assert sorted(e.index for e in exits) == [0, 1] and all(e.ok for e in exits)
    for i in (0, 1):
        pid, threads = (tmp_path / f"{i}.txt").read_text().split()
        assert int(pid) != os.getpid() and int(threads) == 1
    assert threads_per_worker(1) >= 1 and threads_per_worker(10**6) == 1


def test_error_is_reported_and_others_go_on(tmp_path: Path) -> None:
    b = LocalBackend()
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


def test_sigkill_is_reported(tmp_path: Path) -> None:
    b = LocalBackend()
    b.start(_workers.loop_until_stopped, (str(tmp_path),), [0, 1], threads=1)
    _wait_files(tmp_path, "*.pid", 2)
    victim = int((tmp_path / "1.pid").read_text())
    os.kill(victim, signal.SIGKILL)
    exits = []
    deadline = time.monotonic() + 30
    while not exits and time.monotonic() < deadline:
        exits = b.wait(1.0)
    assert len(exits) == 1 and exits[0].index == 1 and exits[0].signal == signal.SIGKILL
    assert "killed by SIGKILL" in exits[0].describe()
    assert b.running() == [0]
    rest = b.shutdown(grace=30)
    assert [e.index for e in rest] == [0] and rest[0].ok
    assert (tmp_path / "0.stopped").exists()


def test_shutdown_kills_a_worker_that_ignores_stop(tmp_path: Path) -> None:
    b = LocalBackend()
    b.start(_workers.ignore_stop, (str(tmp_path),), [0], threads=1)
    _wait_files(tmp_path, "*.pid", 1)
    t0 = time.monotonic()
    exits = b.shutdown(grace=1.0)
    assert time.monotonic() - t0 < 20
    assert len(exits) == 1 and exits[0].signal == signal.SIGKILL
    assert b.running() == []


def test_restart_same_index_after_death(tmp_path: Path) -> None:
    b = LocalBackend()
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
    ``wait`` must still be there, or its exit (and the restart it calls for) is lost."""
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
