"""The backend interface: start workers running a function, watch them, report when they end.

A backend knows nothing of the race: it runs ``fn(ctx, *args)`` in each worker, where ``ctx`` is
a :class:`WorkerContext` (the worker's index, its thread count, and ``should_stop()``), and tells
its caller which workers ended and how (a clean exit, an error, or death by a signal).
"""

from __future__ import annotations

import os
import signal
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from netrace.backends._process import set_worker_threads

__all__ = [
    "Backend",
    "StopFlag",
    "WorkerContext",
    "WorkerExit",
    "default_workers",
    "threads_per_worker",
]


class StopFlag(Protocol):
    def is_set(self) -> bool: ...


@dataclass(frozen=True)
class WorkerContext:
    """What a worker function is handed: who it is, how many threads it may use, and whether
    it has been asked to stop (after its current epoch)."""

    index: int
    threads: int
    stop: StopFlag

    def should_stop(self) -> bool:
        return bool(self.stop.is_set())


@dataclass(frozen=True)
class WorkerExit:
    """A worker ended: ``exitcode`` 0 is a clean finish; ``signal`` names a kill. ``error``
    describes a failure for people; ``user_message`` is set when the worker failed on a
    :class:`~netrace.errors.UserError` (something the user can fix): its message."""

    index: int
    exitcode: int | None
    signal: int | None = None
    error: str = ""
    user_message: str | None = None

    @property
    def ok(self) -> bool:
        return self.exitcode == 0 and self.signal is None

    def describe(self) -> str:
        if self.ok:
            return f"worker {self.index} finished"
        if self.signal is not None:
            return f"worker {self.index} was killed by {signal.Signals(self.signal).name}"
        if self.exitcode is None:  # gone without an exit code (a Ray actor's process or node)
            return f"worker {self.index} died" + (f": {self.error}" if self.error else "")
        detail = f": {self.error}" if self.error else ""
        return f"worker {self.index} failed (exit code {self.exitcode}){detail}"


def set_threads(threads: int) -> None:
    """In a worker process: torch uses ``threads`` threads (and one inter-op thread)."""
    import torch

    set_worker_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set once in this process
        pass


def default_workers() -> int:
    """One worker per core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else (os.cpu_count() or 1))


def threads_per_worker(workers: int) -> int:
    """Cores split evenly: two processes each using every core slow each other down."""
    return max(1, default_workers() // max(1, workers))


class Backend(ABC):
    """Starts workers and reports their ends. Subclasses do the starting and the watching."""

    @abstractmethod
    def start(self, fn: Callable[..., Any], args: tuple[Any, ...], indices: list[int],
              threads: int) -> None:
        """Start one worker per index running ``fn(WorkerContext, *args)``."""

    @abstractmethod
    def wait(self, timeout: float) -> list[WorkerExit]:
        """Block up to ``timeout`` seconds; return the workers that ended since the last call."""

    @abstractmethod
    def running(self) -> list[int]:
        """Indices of workers whose end :meth:`wait` has not reported yet. A worker that has
        died stays here until ``wait`` reports it, so a caller that stops once this is empty
        has seen every worker's exit."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask every worker to stop after its current epoch (``ctx.should_stop()``)."""

    @abstractmethod
    def kill(self) -> list[WorkerExit]:
        """End every worker now."""

    def where(self, index: int) -> tuple[str, int] | None:
        """Host and pid the worker ``index`` last ran as (to find its storage records once it
        has died), if known."""
        return None

    def nodes(self) -> int:
        """Machines the workers may run on."""
        return 1

    def workers_for(self) -> int:
        """The default number of workers: one per core of where the workers run."""
        return default_workers()

    def threads_for(self, workers: int) -> int:
        """Torch threads per worker when ``workers`` share the cores."""
        return threads_per_worker(workers)

    def close(self) -> None:
        """Release what the backend holds (after its workers ended)."""

    def shutdown(self, grace: float = 30.0) -> list[WorkerExit]:
        """Ask workers to stop, wait up to ``grace`` seconds, then kill what is left."""
        import time

        self.request_stop()
        exits: list[WorkerExit] = []
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            exits += self.wait(min(0.5, max(0.0, deadline - time.monotonic())))
        exits += self.wait(0.0)
        if self.running():
            exits += self.kill()
        return exits
