"""Workers as local processes (spawned, one per core by default, torch threads set in each)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait as mp_wait
from typing import Any

from netrace.backends._base import Backend, WorkerContext, WorkerExit, set_threads
from netrace.errors import UserError

__all__ = ["LocalBackend"]


class _StopOrOrphaned:
    """Stop when asked, or when the parent that started this worker is gone."""

    def __init__(self, stop: Any, parent: int) -> None:
        self._stop, self._parent = stop, parent

    def is_set(self) -> bool:
        return bool(self._stop.is_set()) or os.getppid() != self._parent


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker if its parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_main(fn: Callable[..., Any], index: int, threads: int, stop: Any,
                 errors: Any, args: tuple[Any, ...], parent: int) -> None:
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        raise SystemExit(1)
    # Ctrl-C goes to the parent, which asks workers to stop after their epoch
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    set_threads(threads)
    try:
        fn(WorkerContext(index, threads, _StopOrOrphaned(stop, parent)), *args)
    except BaseException as exc:
        errors.put((index, f"{type(exc).__name__}: {exc}", traceback.format_exc(),
                    str(exc) if isinstance(exc, UserError) else None))
        raise SystemExit(1) from None


class LocalBackend(Backend):
    """Spawned worker processes on this machine.

    >>> b = LocalBackend()
    >>> b.running()
    []
    """

    def __init__(self) -> None:
        self._ctx = mp.get_context("spawn")  # no fork: torch and SQLite do not survive it
        self._stop = self._ctx.Event()
        self._errors = self._ctx.Queue()
        self._procs: dict[int, Any] = {}
        self._messages: dict[int, tuple[str, str | None]] = {}
        self._where: dict[int, tuple[str, int]] = {}

    def start(self, fn: Callable[..., Any], args: tuple[Any, ...], indices: list[int],
              threads: int) -> None:
        for i in indices:
            if i in self._procs and self._procs[i].is_alive():
                raise ValueError(f"worker {i} is already running")
            p = self._ctx.Process(target=_worker_main, name=f"netrace-worker-{i}",
                                  args=(fn, i, threads, self._stop, self._errors, args,
                                        os.getpid()),
                                  daemon=False)
            p.start()
            self._procs[i] = p
            self._where[i] = (socket.gethostname(), p.pid)

    def where(self, index: int) -> tuple[str, int] | None:
        return self._where.get(index)

    def pids(self) -> dict[int, int]:
        return {i: p.pid for i, p in self._procs.items() if p.is_alive()}

    def _drain_errors(self) -> None:
        while True:
            try:
                index, message, _tb, user_message = self._errors.get_nowait()
            except Exception:
                return
            self._messages[index] = (message, user_message)

    def wait(self, timeout: float) -> list[WorkerExit]:
        alive = [p.sentinel for p in self._procs.values() if p.exitcode is None]
        if alive and timeout > 0:
            mp_wait(alive, timeout)
        exits = []
        for i, p in list(self._procs.items()):
            if p.exitcode is not None:
                p.join()
                self._drain_errors()
                code = p.exitcode
                message, user_message = self._messages.pop(i, ("", None))
                exits.append(WorkerExit(i, code if code >= 0 else None,
                                        -code if code < 0 else None, message, user_message))
                del self._procs[i]
        return exits

    def running(self) -> list[int]:
        return list(self._procs)  # wait() drops a process when it reports its end

    def request_stop(self) -> None:
        self._stop.set()

    def kill(self) -> list[WorkerExit]:
        for p in self._procs.values():
            if p.exitcode is None:
                p.kill()
        for p in self._procs.values():
            p.join(10)
        return self.wait(0.0)
