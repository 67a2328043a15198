"""Where workers run: local processes (default) or, with the ``ray`` extra, Ray actors.

Backends know nothing of the race: they run a worker function they are handed and report when
a worker ends, cleanly or not.
"""

from __future__ import annotations

from netrace.backends._base import (
    Backend,
    WorkerContext,
    WorkerExit,
    default_workers,
    threads_per_worker,
)
from netrace.backends._local import LocalBackend
from netrace.backends._process import keep_freed_memory, set_worker_threads

__all__ = [
    "Backend",
    "LocalBackend",
    "WorkerContext",
    "WorkerExit",
    "default_workers",
    "keep_freed_memory",
    "set_worker_threads",
    "threads_per_worker",
]
