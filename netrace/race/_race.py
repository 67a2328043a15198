"""``netrace run``: start the workers, watch them, recover the dead, end the race.

The coordinator trains nothing. It creates (or resumes) the study, starts one worker per core
on the backend, and every second: reports progress from storage, re-queues the trials of any
worker that died (and starts a new worker in its place), and stops when the race is over (the
target reached or the budget spent). Ctrl-C asks the workers to stop after their epoch and
leaves a study that the same command resumes; a second Ctrl-C kills them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any

from netrace.backends import Backend, LocalBackend
from netrace.config import Config
from netrace.errors import UserError
from netrace.race._progress import Progress, Snapshot, snapshot
from netrace.race._target import check_target_space
from netrace.race._worker import (
    RacePlan,
    budget_of,
    race_metric,
    search_space,
    worker_main,
)
from netrace.storage import Storage

__all__ = ["config_record", "study_config", "run_race"]

MAX_RESTARTS = 10


def config_record(config: Config) -> dict[str, Any]:
    """The config as plain data (stored with the study)."""
    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        if isinstance(x, (str, int, float, bool)) or x is None:
            return x
        return str(x)

    record = plain({k: v for k, v in asdict(config).items() if k not in ("base_dir", "origin")})
    if config.data.path is not None:  # where the data is, wherever the study is read from
        record["data"]["path"] = str((config.base_dir / config.data.path).resolve())
    return record


def study_config(record: dict[str, Any], origin: str = "<study>") -> Config:
    """The :class:`Config` a study was raced with, from its stored :func:`config_record`."""
    from pathlib import Path

    from netrace.config import _schema
    from netrace.config._space import Param, SearchSpace

    sections: dict[str, Any] = {}
    for name, cls in _schema._SECTIONS.items():
        table = record.get(name) or {}
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in table.items():
            if key not in known or value is None:
                continue  # a key of another netrace version, or unset
            if key == "space":
                value = SearchSpace(tuple(
                    Param(**{**p, "choices": tuple(p.get("choices") or ())})
                    for p in value["params"]))
            elif isinstance(value, list):
                value = tuple(value)
            values[key] = value
        sections[name] = cls(**values)
    return Config(**sections, base_dir=Path.cwd(), origin=origin)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_race(config: Config, *, storage_url: str, study: str, workers: int | None = None,
             backend: str = "local", seed: int = 0, progress: Progress | None = None,
             device: str = "auto", warn: Callable[[str], None] | None = None) -> Snapshot:
    """Run (or resume) the race of ``config``; returns the final snapshot. ``warn`` is given
    each warning about the data (suspected splits, zero-range bars, ...) before the race."""
    if workers is not None and workers < 1:  # before any storage is touched
        raise UserError(f"workers must be at least 1 (worker processes to start); got "
                        f"{workers}; pass None for one per core")
    progress = progress or Progress("quiet")
    _, direction = race_metric(config)
    search_space(config)  # a bad space fails here, before any process starts
    from netrace.data import prepare

    prepared = prepare(config)  # a bad data config fails here too, with its own message
    check_target_space(search_space(config), prepared)  # a log of a target that can be <= 0
    for w in prepared.warnings if warn is not None else ():
        warn(w)
    storage = Storage(storage_url)
    record = config_record(config)
    # what the race was run on, so that the verdict can check the data did not change since
    # (new rows would move the test part onto rows the networks trained on)
    record["data_check"] = {"test_fingerprint": prepared.holdout.fingerprint,
                            "dev_samples": prepared.dev.n, "test_samples": prepared.holdout.n}
    st = storage.create_study(study, direction=direction, config=record,
                              target=config.race.target)
    if json.loads(json.dumps(record, sort_keys=True)) != st.config:  # resumed, config changed
        storage.set_study_config(st.id, record, config.race.target)
    budget = budget_of(config)
    _recover_local_orphans(storage, st.id, progress)
    state, reason = storage.study_state(st.id)
    if state == "done":
        if "budget spent" in reason and storage.epochs_spent(st.id) < budget:
            storage.reopen_study(st.id)  # a larger budget: go on
            progress.message(f"resuming study '{study}' with a budget of {budget}")
        else:
            progress.message(f"study '{study}' is already over: {reason}")
            final = snapshot(storage, study, budget)
            progress.finish(final)
            return final
    be = _backend(backend)
    n = workers or config.race.workers or be.workers_for()
    _check_shared_storage(be, storage)
    plan = RacePlan(config, _absolute(storage.url), study, seed=seed, device=device)
    threads = be.threads_for(n)
    be.start(worker_main, (plan,), list(range(n)), threads)
    restarts = 0
    interrupted = 0
    # The first Ctrl-C only sets a flag, read at the top of every loop: a KeyboardInterrupt
    # raised deep inside a library call can be swallowed there, and then the stop request
    # would be lost. A second Ctrl-C raises KeyboardInterrupt and kills the workers.
    requests: list[float] = []

    def on_sigint(signum: int, frame: Any) -> None:
        requests.append(time.monotonic())
        if len(requests) > 1:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
        previous = None
    try:
        while True:
            try:
                if len(requests) > interrupted:  # a Ctrl-C not acted on yet
                    raise KeyboardInterrupt
                exits = be.wait(1.0)
                for e in exits:
                    if e.ok:
                        continue
                    progress.message(e.describe() + (f": {e.error}" if e.error else ""))
                    requeued = _recover_exited(storage, st.id, be.where(e.index))
                    if requeued:
                        progress.message(f"re-queued {len(requeued)} trial(s) of worker "
                                         f"{e.index}")
                    if e.signal is None and e.exitcode not in (0, None) and e.error:
                        if "UserError" in e.error:
                            be.kill()
                            raise UserError(e.error.split(": ", 1)[1])
                    if storage.study_state(st.id)[0] != "done" and not interrupted:
                        restarts += 1
                        if restarts > MAX_RESTARTS:
                            be.kill()
                            raise RuntimeError(f"workers died {restarts} times; giving up "
                                               "(the study can be resumed)")
                        be.start(worker_main, (plan,), [e.index], threads)
                progress.update(snapshot(storage, study, budget))
                if not be.running():
                    break
            except KeyboardInterrupt:
                interrupted += 1
                if interrupted == 1:
                    progress.message("stopping after the current epoch (Ctrl-C again to kill)")
                    be.request_stop()
                else:
                    be.kill()
                    for w in storage.workers(st.id):
                        if w["state"] == "alive" and not _pid_alive(w["pid"]):
                            storage.release_worker(w["id"])
                    break
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        if be.running():
            be.kill()
        be.close()
    final = snapshot(storage, study, budget)
    progress.finish(final)
    return final


def _absolute(url: str) -> str:
    """A SQLite URL with an absolute path: workers may not share the coordinator's folder."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path)
    return url


def _check_shared_storage(be: Backend, storage: Storage) -> None:
    nodes = be.nodes()
    if nodes > 1 and storage.dialect == "sqlite":
        be.close()
        raise UserError(f"the Ray cluster has {nodes} machines, but the study is a SQLite file "
                        "only this machine can open; pass --storage postgresql://user@host/db "
                        "(a PostgreSQL server every machine reaches)")


def _backend(name: str) -> Backend:
    if name == "local":
        return LocalBackend()
    if name == "ray":
        from netrace.backends._ray import RayBackend

        return RayBackend()
    raise UserError(f"unknown backend '{name}'; choose local or ray")


def _recover_exited(storage: Storage, study_id: int, where: tuple[str, int] | None) -> list[int]:
    """Re-queue the trials of the worker that ran as ``where`` (host, pid); without it, of
    every worker of this machine whose process is gone."""
    host = socket.gethostname()
    out: list[int] = []
    for w in storage.workers(study_id):
        if w["state"] != "alive":
            continue
        mine = ((w["host"], w["pid"]) == tuple(where) if where is not None
                else w["host"] == host and not _pid_alive(w["pid"]))
        if mine:
            out += storage.recover_worker(w["id"])
    return out


def _recover_local_orphans(storage: Storage, study_id: int, progress: Progress) -> None:
    """Workers of an earlier run on this machine that are gone: re-queue their trials."""
    host = socket.gethostname()
    for w in storage.workers(study_id):
        if w["state"] == "alive" and w["host"] == host and not _pid_alive(w["pid"]):
            ids = storage.recover_worker(w["id"])
            if ids:
                progress.message(f"re-queued {len(ids)} trial(s) left running by an earlier run")
