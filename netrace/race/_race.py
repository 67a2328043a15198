"""``netrace run``: start the workers, watch them, recover the dead, end the race.

The coordinator trains nothing. It creates (or resumes) the study, starts one worker per core
on the backend, and every second: reports progress from storage, re-queues the trials of any
worker that died (and starts a new worker in its place), and every few seconds those of any
worker of the study whose heartbeat stopped, on whatever machine it ran (``_recovery.py``); it
stops when the race is over (the target reached or the budget spent). Ctrl-C asks the workers
to stop after their epoch and leaves a study that the same command resumes; a second Ctrl-C
kills them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from typing import Any

from netrace.backends import Backend, LocalBackend, WorkerExit
from netrace.config import Config
from netrace.errors import UserError
from netrace.race._progress import Progress, Snapshot, snapshot
from netrace.race._recovery import recover_exited, recover_silent, release_vanished
from netrace.race._target import check_target_space
from netrace.race._worker import (
    RacePlan,
    budget_of,
    race_metric,
    search_space,
    worker_main,
)
from netrace.storage import RaceEndReason, Storage, StudyRecord

__all__ = ["config_record", "study_config", "run_race"]

MAX_RESTARTS = 10
#: at most this many seconds between two looks for workers whose heartbeat stopped
HEARTBEAT_CHECK = 5.0


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


def run_race(config: Config, *, storage_url: str, study: str, workers: int | None = None,
             backend: str = "local", seed: int = 0, progress: Progress | None = None,
             device: str = "auto", warn: Callable[[str], None] | None = None) -> Snapshot:
    """Run (or resume) the race of ``config``; returns the final snapshot. ``warn`` is given
    each warning about the data (suspected splits, zero-range bars, ...) before the race."""
    if workers is not None and workers < 1:  # before any storage is touched
        raise UserError(f"workers must be at least 1 (worker processes to start); got "
                        f"{workers}; pass None for one per core")
    progress = progress or Progress("quiet")
    prepared, direction = _check(config, warn)
    storage, st = _open_study(config, storage_url, study, prepared, direction)
    budget = budget_of(config)
    # an earlier run's workers on this machine, and silent ones anywhere
    recover_silent(storage, st.id, config.race.heartbeat_timeout, progress.message,
                   local_pids=True)
    if _race_goes_on(storage, st.id, study, budget, progress):
        be = _backend(backend)
        n = workers or config.race.workers or be.workers_for()
        _check_shared_storage(be, storage)
        plan = RacePlan(config, _absolute(storage.url), study, seed=seed, device=device,
                        tpe_notice=_tpe_notice(config))
        _Coordinator(be, storage, st.id, plan, be.threads_for(n), progress, budget).run(n)
    final = snapshot(storage, study, budget)
    progress.finish(final)
    return final


def _tpe_notice(config: Config) -> str | None:
    """With the TPE sampler: the speed-up's check in this process, whose notice (if any) is
    logged here, once, where the user sees it (on Ray too), and not again by each worker."""
    if config.search.sampler != "tpe":
        return None
    from netrace.race._tpe import speedup_problem

    return speedup_problem()


def _check(config: Config, warn: Callable[[str], None] | None) -> tuple[Any, str]:
    """The config's race and data, checked before any process starts: the prepared data and
    the metric's direction."""
    _, direction = race_metric(config)
    search_space(config)  # a bad space fails here, before any process starts
    from netrace.data import prepare

    prepared = prepare(config)  # a bad data config fails here too, with its own message
    check_target_space(search_space(config), prepared)  # a log of a target that can be <= 0
    for w in prepared.warnings if warn is not None else ():
        warn(w)
    return prepared, direction


def _open_study(config: Config, url: str, study: str, prepared: Any,
                direction: str) -> tuple[Storage, StudyRecord]:
    """The study, created or resumed under this config."""
    storage = Storage(url)
    record = config_record(config)
    # what the race was run on, so that the verdict can check the data did not change since
    # (new rows would move the test part onto rows the networks trained on)
    record["data_check"] = {"test_fingerprint": prepared.holdout.fingerprint,
                            "dev_samples": prepared.dev.n, "test_samples": prepared.holdout.n}
    st = storage.create_study(study, direction=direction, config=record,
                              target=config.race.target)
    # a resumed study on other data: its networks may have trained on the new test part, and
    # storing the new data's check would hide that from the verdict's own check
    check_same_data(st.config, study, prepared, "go on with the data this study was raced on")
    if json.loads(json.dumps(record, sort_keys=True)) != st.config:  # resumed, config changed
        storage.set_study_config(st.id, record, config.race.target)
    return storage, st


def check_same_data(record: dict[str, Any] | None, study: str, prepared: Any,
                    instead: str) -> None:
    """Refuse data whose test part is not the one the study's race was run on (its stored
    ``data_check``): new rows move the test part onto rows the networks may have trained or
    been chosen on. ``instead``: the other way out the message offers."""
    raced_on = (record or {}).get("data_check")
    if raced_on and raced_on.get("test_fingerprint") != prepared.holdout.fingerprint:
        raise UserError(
            f"the data of study '{study}' changed since its race: the test part then had "
            f"{raced_on.get('test_samples')} samples (fingerprint "
            f"{raced_on.get('test_fingerprint')}), now {prepared.holdout.n} ("
            f"{prepared.holdout.fingerprint}); the networks may have trained on what is now the "
            f"test part. Race the new data in a new study (netrace run CONFIG --study NEW), or "
            f"{instead}")


def _race_goes_on(storage: Storage, study_id: int, study: str, budget: int,
                  progress: Progress) -> bool:
    """False if the study's race is over; a race that ended with its budget spent goes on
    under a larger budget."""
    status = storage.study_status(study_id)
    if not status.over:
        return True
    if status.reason is RaceEndReason.BUDGET_SPENT and storage.epochs_spent(study_id) < budget:
        storage.reopen_study(study_id)  # a larger budget: go on
        progress.message(f"resuming study '{study}' with a budget of {budget}")
        return True
    progress.message(f"study '{study}' is already over: {status.note}")
    return False


@contextmanager
def _ctrl_c(requests: list[float]) -> Iterator[None]:
    """The first Ctrl-C only adds to ``requests``, read at the top of every loop: a
    KeyboardInterrupt raised deep inside a library call can be swallowed there, and then the
    stop request would be lost. A second Ctrl-C raises KeyboardInterrupt."""
    def on_sigint(signum: int, frame: Any) -> None:
        requests.append(time.monotonic())
        if len(requests) > 1:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C stays a KeyboardInterrupt
        previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


class _Coordinator:
    """Starts the workers and watches them every second: reports progress, re-queues the
    networks of workers that ended badly (starting new ones in their place) or whose heartbeat
    stopped (on any machine), until every worker has ended. Ctrl-C asks them to stop after
    their epoch; a second Ctrl-C kills them."""

    def __init__(self, be: Backend, storage: Storage, study_id: int, plan: RacePlan,
                 threads: int, progress: Progress, budget: int) -> None:
        self.be, self.storage, self.study_id, self.plan = be, storage, study_id, plan
        self.threads, self.progress, self.budget = threads, progress, budget
        self.timeout = plan.config.race.heartbeat_timeout
        self.check_every = min(HEARTBEAT_CHECK, self.timeout / 4)
        self.checked = time.monotonic()
        self.restarts = self.interrupted = 0
        self.requests: list[float] = []

    def run(self, n: int) -> None:
        self.be.start(worker_main, (self.plan,), list(range(n)), self.threads)
        try:
            with _ctrl_c(self.requests):
                while self._watch():
                    pass
        finally:
            if self.be.running():
                self.be.kill()
            self.be.close()

    def _watch(self) -> bool:
        """One look at the workers; False once every one has ended."""
        try:
            if len(self.requests) > self.interrupted:  # a Ctrl-C not acted on yet
                raise KeyboardInterrupt
            for e in self.be.wait(1.0):
                if not e.ok:
                    self._ended_badly(e)
            if time.monotonic() - self.checked >= self.check_every:
                self.checked = time.monotonic()
                recover_silent(self.storage, self.study_id, self.timeout,
                               self.progress.message)
            self.progress.update(snapshot(self.storage, self.plan.study, self.budget))
            return bool(self.be.running())
        except KeyboardInterrupt:
            self.interrupted += 1
            if self.interrupted == 1:
                self.progress.message("stopping after the current epoch (Ctrl-C again to kill)")
                self.be.request_stop()
                return True
            self.be.kill()
            release_vanished(self.storage, self.study_id)
            return False

    def _ended_badly(self, e: WorkerExit) -> None:
        """A worker failed or died: its networks back to the queue, and a new worker in its
        place while the race goes on; a mistake of the user's ends the run with its message."""
        self.progress.message(e.describe() + (f": {e.error}" if e.error else ""))
        requeued = recover_exited(self.storage, self.study_id, self.be.where(e.index))
        if requeued:
            self.progress.message(f"re-queued {len(requeued)} trial(s) of worker {e.index}")
        if e.user_message is not None:
            self.be.kill()
            raise UserError(e.user_message)
        if not self.storage.study_status(self.study_id).over and not self.interrupted:
            self.restarts += 1
            if self.restarts > MAX_RESTARTS:
                self.be.kill()
                raise RuntimeError(f"workers died {self.restarts} times; giving up (the study "
                                   "can be resumed)")
            self.be.start(worker_main, (self.plan,), [e.index], self.threads)


def _absolute(url: str) -> str:
    """A SQLite URL with an absolute path: workers may not share the coordinator's folder."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:" and not os.path.isabs(path):
            return "sqlite:///" + os.path.abspath(path)
    return url


def _check_shared_storage(be: Backend, storage: Storage) -> None:
    nodes = be.nodes()
    if nodes > 1 and storage.local_only:
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
