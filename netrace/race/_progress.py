"""What a race looks like from outside: a snapshot of its storage, shown live, as JSON lines,
or not at all (``netrace status`` prints the same summary).

Everything here is for users: trials by their number in the study (never a storage row id),
epochs counted from 1 (``best_epoch`` 5: the best value came after the fifth epoch; the storage
keeps 0-based indices)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, TextIO

from netrace.storage import Storage, TrialState, WorkerState
from netrace.vocabulary import default_budget

__all__ = ["Snapshot", "snapshot", "summary_lines", "top_rows", "top_lines", "Progress"]


@dataclass(frozen=True)
class Snapshot:
    study: str
    state: str
    reason: str
    metric_direction: str
    running: int
    queued: int
    complete: int
    stopped: int  # by the termination rule
    diverged: int
    failed: int
    best_value: float | None
    best_trial: int | None  # its number in the study
    best_epoch: int | None  # counted from 1: the best value came after this many epochs
    epochs: int
    budget: int | None
    workers_alive: int
    rate: float | None = None  # network-epochs per second
    eta: float | None = None   # seconds until the budget is spent, at this rate
    ended_with_race: int = 0   # cut: still training when the race ended (not by the rule)
    rule: str = ""             # the termination rule and the options the config set
    openings: int = 0          # how often netrace evaluate opened the test part


def snapshot(storage: Storage, name: str, budget: int | None = None) -> Snapshot:
    study = storage.get_study(name)
    if budget is None:  # as the study's own config says
        race = study.config.get("race", {})
        if race.get("budget") or race.get("population"):
            budget = race.get("budget") or default_budget(race["population"],
                                                          race["max_epochs"])
    counts = storage.counts(study.id)
    best = storage.best_trial(study.id)
    status = storage.study_status(study.id)
    alive = sum(1 for w in storage.workers(study.id) if w.state is WorkerState.ALIVE)
    return Snapshot(name, status.state.value, status.note, study.direction,
                    counts[TrialState.RUNNING],
                    counts[TrialState.QUEUED], counts[TrialState.COMPLETE],
                    counts[TrialState.STOPPED], counts[TrialState.DIVERGED],
                    counts[TrialState.FAILED], None if best is None else best.best_value,
                    None if best is None else best.number,
                    None if best is None else _counted(best.best_epoch),
                    storage.epochs_spent(study.id), budget, alive,
                    ended_with_race=counts[TrialState.CUT], rule=_rule_of(study.config),
                    openings=len(storage.evaluations(study.id)))


def _counted(index: int | None) -> int | None:
    """A stored 0-based epoch index as users read it: counted from 1."""
    return None if index is None else index + 1


def _rule_of(config: dict[str, Any]) -> str:
    """``median (percentile=25)``: the rule of a stored config, with the options it set."""
    race = config.get("race", {})
    name = race.get("rule") or ""
    options = race.get(name) or {}
    return name + (f" ({', '.join(f'{k}={_short(v)}' for k, v in options.items())})"
                   if options else "")


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def summary_lines(s: Snapshot) -> list[str]:
    best = ("none yet" if s.best_value is None else
            f"{s.best_value:.6g} (trial {s.best_trial}, epoch {s.best_epoch}; "
            f"{'higher' if s.metric_direction == 'maximize' else 'lower'} is better)")
    budget = f"{s.epochs}" + (f" of {s.budget} network-epochs ({100 * s.epochs / s.budget:.0f}%)"
                              if s.budget else " network-epochs")
    lines = [
        f"study     {s.study}: {s.state}" + (f" ({s.reason})" if s.reason else ""),
        f"networks  {s.running} running, {s.queued} queued, {s.complete} finished, "
        f"{s.stopped} stopped early, {s.diverged} diverged, {s.failed} failed"
        + (f", {s.ended_with_race} cut (training when the race ended)"
           if s.ended_with_race else ""),
        f"best      {best}",
        f"budget    {budget}",
    ]
    if s.rule:
        lines.insert(1, f"rule      {s.rule}")
    if s.openings:
        lines.append(f"test      opened {s.openings} time{'s' if s.openings > 1 else ''} by "
                     f"netrace evaluate; its verdict: netrace evaluate {s.study}")
    if s.rate is not None:
        lines.append(f"rate      {s.rate:.1f} network-epochs/s, {s.workers_alive} worker(s), "
                     f"ETA {_fmt_time(s.eta)}")
    return lines


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def top_rows(storage: Storage, name: str, n: int = 10) -> list[dict[str, Any]]:
    """The ``n`` best networks of a study, best first (ties: the lower number): trial
    (its number), state, best_value, best_epoch (counted from 1), epochs, params."""
    study = storage.get_study(name)
    scored = [t for t in storage.trials(study.id) if t.best_value is not None]
    scored.sort(key=lambda t: (t.best_value if study.direction == "minimize"
                               else -t.best_value, t.number))  # type: ignore[operator]
    return [{"trial": t.number, "state": t.state.value, "best_value": t.best_value,
             "best_epoch": _counted(t.best_epoch), "epochs": t.epochs, "params": t.params}
            for t in scored[:max(n, 0)]]


def top_lines(storage: Storage, name: str, n: int = 10) -> list[str]:
    """The ``n`` best networks of a study as an aligned table."""
    rows = [["trial", "state", "best", "epoch", "epochs", "hyperparameters"]]
    for t in top_rows(storage, name, n):
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(t["params"].items()))
        rows.append([str(t["trial"]), t["state"], f"{t['best_value']:.6g}",
                     str(t["best_epoch"]), str(t["epochs"]), params])
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return ["  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5] for r in rows]


class Progress:
    """``mode``: live (a rich display on a terminal), plain (a line every few seconds), json
    (one JSON object per line), quiet (the final summary only)."""

    def __init__(self, mode: str = "live", out: TextIO | None = None,
                 every: float = 2.0) -> None:
        self.out = out or sys.stdout
        if mode == "live" and not self.out.isatty():
            mode = "plain"
        self.mode, self.every = mode, every
        self._live: Any = None
        self._last_print = 0.0
        self._t0 = time.monotonic()
        self._e0: int | None = None

    def _rate(self, s: Snapshot) -> Snapshot:
        now = time.monotonic()
        if self._e0 is None:
            self._e0, self._t0 = s.epochs, now
            return s
        dt = now - self._t0
        rate = (s.epochs - self._e0) / dt if dt > 0 else None
        eta = ((s.budget - s.epochs) / rate if rate and s.budget and s.epochs < s.budget
               else None)
        return Snapshot(**{**asdict(s), "rate": rate, "eta": eta})

    def update(self, s: Snapshot) -> None:
        s = self._rate(s)
        if self.mode == "quiet":
            return
        if self.mode == "json":
            self.out.write(json.dumps({"event": "progress", **asdict(s)}) + "\n")
            self.out.flush()
            return
        if self.mode == "live":
            from rich.live import Live
            from rich.panel import Panel

            panel = Panel("\n".join(summary_lines(s)), title="netrace race")
            if self._live is None:
                self._live = Live(panel, refresh_per_second=4, transient=False)
                self._live.start()
            else:
                self._live.update(panel)
            return
        now = time.monotonic()
        if now - self._last_print >= self.every:
            self._last_print = now
            # a line per update: what changes (not the study's name, nor its rule)
            lines = summary_lines(replace(s, rule=""))[1:]
            self.out.write(" | ".join(lines).replace("  ", " ") + "\n")
            self.out.flush()

    def message(self, text: str) -> None:
        if self.mode == "json":
            self.out.write(json.dumps({"event": "message", "text": text}) + "\n")
        elif self.mode == "quiet":  # warnings still reach a person, apart from the results
            sys.stderr.write(f"netrace: {text}\n")
            sys.stderr.flush()
        else:
            if self._live is not None:
                self._live.console.print(text)
                return
            self.out.write(text + "\n")
        self.out.flush()

    def finish(self, s: Snapshot) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        if self.mode == "json":
            self.out.write(json.dumps({"event": "finished", **asdict(s)}) + "\n")
        else:
            self.out.write("\n".join(summary_lines(s)) + "\n")
        self.out.flush()
