"""Which workers are gone, and their networks back in the queue: what the coordinator (``netrace
run``, on any machine, on any backend) does for every worker of its study, its own or not.

A worker is gone when

- its backend reports its end (the coordinator's own workers: :func:`recover_exited`);
- its heartbeat is older than ``[race] heartbeat_timeout``, whatever machine it ran on (a
  machine that died, a process frozen or cut off from the database: :func:`recover_silent`,
  at the start of a run and every few seconds during it);
- it ran on this machine and no process has its pid any more (an earlier run killed: at the
  start only, so that a resume does not wait for the timeout).

The storage re-queues its running networks with their resumable states (whichever worker
claims one continues it where it was), once, however many coordinators notice; and a worker
declared dead that was only slow stores nothing more (:class:`~netrace.storage.WorkerLost`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from netrace.storage import Storage, WorkerRecord, WorkerState

__all__ = ["pid_alive", "recover_exited", "recover_silent", "release_vanished"]


def pid_alive(pid: int) -> bool:
    """A process of this pid exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:  # beyond any pid
        return False
    return True


def _alive(storage: Storage, study_id: int) -> list[WorkerRecord]:
    return [w for w in storage.workers(study_id) if w.state is WorkerState.ALIVE]


def recover_exited(storage: Storage, study_id: int, where: tuple[str, int] | None) -> list[int]:
    """Re-queue the trials of the worker that ran as ``where`` (host, pid), which its backend
    reported ended; without it, of every worker of this machine whose process is gone."""
    host = socket.gethostname()
    out: list[int] = []
    for w in _alive(storage, study_id):
        mine = ((w.host, w.pid) == tuple(where) if where is not None
                else w.host == host and not pid_alive(w.pid))
        if mine:
            out += storage.recover_worker(w.id)
    return out


def recover_silent(storage: Storage, study_id: int, timeout: float,
                   message: Callable[[str], None], *, local_pids: bool = False) -> list[int]:
    """Re-queue the trials of every worker whose heartbeat is older than ``timeout`` seconds,
    on any machine; with ``local_pids``, also of this machine's workers whose process is gone
    (at the start of a run: an earlier run's). Says what it did through ``message``."""
    stale = set(storage.stale_workers(study_id, timeout))
    host = socket.gethostname()
    out: list[int] = []
    for w in _alive(storage, study_id):
        vanished = local_pids and w.host == host and not pid_alive(w.pid)
        if w.id not in stale and not vanished:
            continue
        ids = storage.recover_worker(w.id)
        if ids:
            why = ("left running by an earlier run" if vanished else
                   f"of worker {w.id} on {w.host}: no heartbeat for over {timeout:g} s")
            message(f"re-queued {len(ids)} trial(s) {why}")
        out += ids
    return out


def release_vanished(storage: Storage, study_id: int) -> None:
    """After the workers were killed (a second Ctrl-C): this machine's workers whose process
    is gone hand their networks back to the queue, for the next run."""
    host = socket.gethostname()
    for w in _alive(storage, study_id):
        if w.host == host and not pid_alive(w.pid):
            storage.release_worker(w.id)
