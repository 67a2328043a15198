"""Workers as Ray actors on a running Ray cluster (the ``ray`` extra: ``pip install 'netrace[ray]'``).

netrace does not start or configure clusters: ``--backend ray`` joins the one at ``RAY_ADDRESS``
(``host:port`` of its head), or the cluster started on this machine with ``ray start --head``.
Each worker is an actor holding ``threads`` CPUs, so Ray places one per core; every node
needs the same Python environment with netrace installed, and with several machines the study
must live in PostgreSQL (``--storage postgresql://...``), which every node can reach.

The stop request goes through a small flag actor that workers poll at most once a second. A
worker whose actor dies (its process killed, its node lost) is reported with the host and pid
it ran as, so the race can re-queue exactly its trials.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from netrace.backends._base import Backend, WorkerContext, WorkerExit, set_threads
from netrace.errors import UserError

__all__ = ["RayBackend"]


def _loopback(address: str) -> bool:
    host = address.rpartition(":")[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def _import_ray(address: str) -> Any:
    if _loopback(address):
        # A head on loopback is a one-machine cluster (``ray start --head
        # --node-ip-address=127.0.0.1`` with this variable set). Without it, Ray on Linux swaps
        # a loopback address for the machine's routable one and never finds the head. It is
        # read when ray is imported.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    imported_before = "ray" in sys.modules
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray, which is not installed; install the extra "
                        "with pip install 'netrace[ray]' (or use --backend local)") from None
    if imported_before and _loopback(address):
        _loopback_after_import()
    return ray


def _loopback_after_import() -> None:
    """A program that imported Ray before netrace could set the variable: Ray read it then, and
    would look for a loopback head at the machine's routable address and wait for it without
    end. The flag Ray made of it is set as the variable would have set it (Ray reads it at
    each call); a Ray without the flag is left alone."""
    try:
        from ray._private import ray_constants
    except ImportError:  # another Ray layout: nothing to set
        return
    if getattr(ray_constants, "ENABLE_RAY_CLUSTER", False) and \
            os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0":
        ray_constants.ENABLE_RAY_CLUSTER = False


def _reachable(address: str, timeout: float = 3.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return True
    except (OSError, ValueError):
        return False


class _PolledFlag:
    """A worker's view of the stop flag actor: asks it at most once per ``every`` seconds, and
    once set stays set."""

    def __init__(self, flag: Any, every: float = 1.0) -> None:
        self._flag, self._every = flag, every
        self._next, self._set = 0.0, False

    def is_set(self) -> bool:
        if not self._set and time.monotonic() >= self._next:
            import ray

            try:
                self._set = bool(ray.get(self._flag.is_set.remote(), timeout=10))
            except Exception:  # the coordinator (which owns the flag) is gone: stop
                self._set = True
            self._next = time.monotonic() + self._every
        return self._set


class _Flag:
    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


class _Worker:
    """One netrace worker: a process of the cluster running the worker function once."""

    def where(self) -> tuple[str, int]:
        return socket.gethostname(), os.getpid()

    def run(self, fn: Callable[..., Any], index: int, threads: int, flag: Any,
            args: tuple[Any, ...]) -> tuple[str, str | None]:
        """The error ("" if none) and, for a UserError, its message."""
        try:
            set_threads(threads)
            fn(WorkerContext(index, threads, _PolledFlag(flag)), *args)
        except BaseException as exc:  # reported to the coordinator, as a local worker's
            return (f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}",
                    str(exc) if isinstance(exc, UserError) else None)
        return "", None


class RayBackend(Backend):
    """Workers as actors of the Ray cluster at ``address`` (default: ``RAY_ADDRESS``, else the
    cluster running on this machine)."""

    def __init__(self, address: str | None = None) -> None:
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        ray = _import_ray(address)
        self._ray = ray
        if not ray.is_initialized():
            if address != "auto" and "://" not in address and not _reachable(address):
                raise UserError(f"no Ray cluster answers at {address} (RAY_ADDRESS): start its "
                                "head with `ray start --head` there, or fix the address")
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR",
                         configure_logging=False)
            except ConnectionError as exc:
                raise UserError(f"--backend ray found no Ray cluster ({exc}); start one with "
                                "`ray start --head` on this machine, or set RAY_ADDRESS to "
                                "host:port of a running head") from None
        self._actor = ray.remote(num_cpus=0, max_restarts=0)(_Worker)
        self._flag = ray.remote(num_cpus=0)(_Flag).remote()
        self._actors: dict[int, Any] = {}
        self._refs: dict[int, Any] = {}
        self._where: dict[int, tuple[str, int]] = {}

    def cluster_cpus(self) -> int:
        """CPUs of the whole cluster."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def where(self, index: int) -> tuple[str, int] | None:
        return self._where.get(index)

    def nodes(self) -> int:
        """Machines alive in the cluster."""
        return sum(1 for n in self._ray.nodes() if n.get("Alive"))

    def workers_for(self) -> int:
        return self.cluster_cpus()

    def threads_for(self, workers: int) -> int:
        # each actor holds its threads as CPUs: no more than a node has
        nodes = [n["Resources"].get("CPU", 0) for n in self._ray.nodes() if n.get("Alive")]
        return max(1, min(self.cluster_cpus() // max(1, workers), int(max(nodes, default=1))))

    def close(self) -> None:
        if self._ray.is_initialized():
            self._ray.shutdown()

    def start(self, fn: Callable[..., Any], args: tuple[Any, ...], indices: list[int],
              threads: int) -> None:
        for i in indices:
            if i in self._refs:
                raise ValueError(f"worker {i} is already running")
        actors = {i: self._actor.options(num_cpus=threads).remote() for i in indices}
        wheres = self._ray.get([a.where.remote() for a in actors.values()])  # all start at once
        for (i, actor), where in zip(actors.items(), wheres, strict=True):
            self._where[i] = tuple(where)
            self._actors[i] = actor
            self._refs[i] = actor.run.remote(fn, i, threads, self._flag, args)

    def wait(self, timeout: float) -> list[WorkerExit]:
        ray = self._ray
        refs = list(self._refs.values())
        if not refs:
            return []
        if timeout > 0:
            ray.wait(refs, num_returns=1, timeout=timeout)
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        done_ids = {r.hex() for r in done}
        exits = []
        for i, ref in list(self._refs.items()):
            if ref.hex() not in done_ids:
                continue
            try:
                error, user_message = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                exits.append(WorkerExit(i, None, None, f"its Ray actor died ({_first_line(exc)})"))
            except ray.exceptions.RayError as exc:  # pragma: no cover - run() catches its own
                exits.append(WorkerExit(i, 1, None, _first_line(exc)))
            else:
                exits.append(WorkerExit(i, 1 if error else 0, None,
                                        error.split("\n", 1)[0] if error else "", user_message))
            del self._refs[i]
            self._actors.pop(i, None)
        return exits

    def running(self) -> list[int]:
        return list(self._refs)

    def request_stop(self) -> None:
        self._flag.set.remote()

    def kill(self) -> list[WorkerExit]:
        for actor in self._actors.values():
            self._ray.kill(actor, no_restart=True)
        deadline = time.monotonic() + 30
        exits: list[WorkerExit] = []
        while self._refs and time.monotonic() < deadline:
            exits += self.wait(0.5)
        return exits


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
