"""Storage cost per population epoch at K=256, against Optuna's per-report path and against the
population epoch it records, all measured in the same run.

    .venv/bin/python bench/storage.py [--k 256] [--epochs 20] [--postgres]

Prints a markdown table: milliseconds per epoch for netrace's batched write (values, metrics and
rule decisions of all K members in one transaction) on SQLite, the same write with every
member's resumable training state (weights, Adam state, best weights: what the race saves after
each epoch so a killed worker's networks continue; exporting and packing them included), Optuna's
``trial.report`` per member on its SQLite RDBStorage, and one K=256 training epoch of an MLP
32-64-64-1 (batch 128, 2,000 samples); the storage share of the wall time is
storage / (epoch + storage).

``--loop`` measures it as the race has it instead: blocks of 4 population epochs that each train,
validate and record (values, decisions, every running member's state; on PostgreSQL the states
are stored by a background thread while the next epoch trains, so that write is not on this
clock unless the next epoch's commit has to wait for it), alternating with blocks of 4 that only
train and validate; the share is 1 - (bare epoch / epoch with storage), medians over the blocks'
epochs, the last epoch of a recording block including the wait for its states. It also times
the storage calls themselves inside the recording epochs (packing the states, ``record_epoch``,
the wait for the states at the end of a block), a figure less exposed to the host's noise than
the difference of two epochs measured apart; it leaves out what a background writer takes from
the training beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _population(k: int):
    import torch

    from netrace.models import MLPSpec
    from netrace.train import MemberSpec, Population

    torch.manual_seed(0)
    return Population(MLPSpec(in_features=32, hidden=(64, 64)),
                      [MemberSpec(seed=i, lr=1e-4 * (1 + i % 50)) for i in range(k)],
                      optimizer="adam", batch_size=128, device="cpu")


def netrace_write(k: int, epochs: int, folder: str, with_states: bool = False,
                  url: str | None = None) -> float:
    from netrace.race._resume import save_slots
    from netrace.storage import DecisionRecord, EpochValue, ResumeState, Storage

    pop = _population(k) if with_states else None
    s = Storage(url or os.path.join(folder, f"netrace{int(with_states)}.db"))
    st = s.create_study("bench", direction="maximize", config={})
    w = s.register_worker(st.id)
    trials = s.add_trials(st.id, [{"lr": 1e-3 * (i + 1)} for i in range(k)], list(range(k)),
                          worker_id=w)
    times = []
    for e in range(epochs):
        vals = [EpochValue(t.id, e, 0.5 + 1e-3 * t.number - 1.0 / (e + 2),
                           {"mse": 0.1, "mae": 0.2, "loss": 0.1, "r2": 0.3}) for t in trials]
        dec = [DecisionRecord(t.id, e, "lc", "continue", {"observed": e + 1, "best": 0.4,
                                                           "mean": 0.5, "std": 0.01})
               for t in trials]
        t0 = time.perf_counter()
        states = []
        if pop is not None:
            blobs = save_slots([pop], list(range(k)))
            states = [ResumeState(t.id, e + 1, b) for t, b in zip(trials, blobs, strict=True)]
        s.record_epoch(w, vals, dec, states=states)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def optuna_reports(k: int, epochs: int, folder: str) -> float:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{os.path.join(folder, 'optuna.db')}",
                                direction="maximize")
    trials = [study.ask() for _ in range(k)]
    for t in trials:
        t.suggest_float("lr", 1e-4, 1.0, log=True)
    times = []
    for e in range(epochs):
        t0 = time.perf_counter()
        for i, t in enumerate(trials):
            t.report(0.5 + 1e-3 * i - 1.0 / (e + 2), e)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def engine_epoch(k: int, epochs: int) -> float:
    import torch

    pop = _population(k)
    x, y = torch.randn(2000, 32), torch.randn(2000)
    times = []
    for _ in range(max(3, epochs // 4)):
        t0 = time.perf_counter()
        pop.step_epoch(x, y)
        pop.validate(x[:500], y[:500])
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def race_loop(k: int, rounds: int, url: str) -> tuple[float, float, float]:
    """(median ms of an epoch that trains and records, median ms of one that only trains,
    median ms spent in the storage calls of a recording epoch: packing the states,
    ``record_epoch`` and, at the end of a block, the wait for the states)."""
    import torch

    from netrace.race._resume import save_slots
    from netrace.storage import DecisionRecord, EpochValue, ResumeState, Storage

    pop = _population(k)
    x, y = torch.randn(2000, 32), torch.randn(2000)
    s = Storage(url)
    st = s.create_study("loop", direction="maximize", config={})
    w = s.register_worker(st.id)
    trials = s.add_trials(st.id, [{"lr": 1e-3 * (i + 1)} for i in range(k)], list(range(k)),
                          worker_id=w)
    bare, full, calls, e = [], [], [], 0
    for _ in range(rounds):
        for recording in (False, True):
            for j in range(4):
                t0 = time.perf_counter()
                pop.step_epoch(x, y)
                scores = pop.validate(x[:500], y[:500])
                if recording:
                    loss = [float(v) for v in scores.score]
                    vals = [EpochValue(t.id, e, loss[i], {"loss": loss[i]})
                            for i, t in enumerate(trials)]
                    dec = [DecisionRecord(t.id, e, "lc", "continue", {"observed": e + 1})
                           for t in trials]
                    t1 = time.perf_counter()
                    blobs = save_slots([pop], list(range(k)))
                    s.record_epoch(w, vals, dec, states=[
                        ResumeState(t.id, e + 1, b) for t, b in zip(trials, blobs, strict=True)])
                    e += 1
                    if j == 3:
                        s.flush()
                    calls.append(time.perf_counter() - t1)
                (full if recording else bare).append(time.perf_counter() - t0)
    s.close()
    return tuple(1000 * statistics.median(t) for t in (full, bare, calls))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--postgres", action="store_true",
                    help="also on a PostgreSQL server started here on 127.0.0.1 (Debian's)")
    ap.add_argument("--loop", action="store_true", help="train and record as the race does")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--pin", action="store_true",
                    help="--loop: this process on CPU 0, the PostgreSQL server on CPU 1 (as a "
                         "server on another machine would be)")
    a = ap.parse_args()
    from netrace.backends import set_worker_threads

    set_worker_threads(1)  # one worker's share of this 2-core machine
    if a.loop:
        _main_loop(a)
        return
    with tempfile.TemporaryDirectory() as d:
        ours = netrace_write(a.k, a.epochs, d)
        full = netrace_write(a.k, a.epochs, d, with_states=True)
        theirs = optuna_reports(a.k, max(3, a.epochs // 4), d)
        pg = pg_full = None
        if a.postgres:
            import sys

            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from tests.servers import Postgres

            server = Postgres()
            try:
                pg = netrace_write(a.k, a.epochs, d, url=server.new_database("values"))
                pg_full = netrace_write(a.k, a.epochs, d, with_states=True,
                                        url=server.new_database("states"))
            finally:
                server.stop()
    epoch = engine_epoch(a.k, a.epochs)
    print("| K | netrace batched write (ms/epoch) | with resumable states (ms/epoch) | "
          "Optuna report per member (ms/epoch) | ratio | population epoch, 1 thread (ms) | "
          "storage share of wall time, with states |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {a.k} | {ours:.1f} | {full:.1f} | {theirs:.0f} | {theirs / ours:.0f}x | {epoch:.0f} | "
          f"{100 * ours / (ours + epoch):.1f}%, {100 * full / (full + epoch):.1f}% |")
    if pg is not None:
        print(f"\nPostgreSQL (server on these 2 cores): batched write {pg:.1f} ms/epoch, with "
              f"states {pg_full:.1f} ms/epoch; storage share {100 * pg / (pg + epoch):.1f}% "
              f"without states, {100 * pg_full / (pg_full + epoch):.1f}% with")


def _main_loop(a: argparse.Namespace) -> None:
    import sys

    print("| storage | epoch with storage (ms) | bare epoch (ms) | storage share of wall time | "
          "storage calls (ms) | their share of the epoch |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as d:
        urls = {"SQLite": os.path.join(d, "loop.db")}
        server = None
        if a.postgres:
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from tests.servers import Postgres

            server = Postgres()
            urls["PostgreSQL"] = server.new_database("loop")
            if a.pin:
                from tests.servers import processes_under

                for pid in processes_under(str(server.dir)):
                    try:
                        os.sched_setaffinity(pid, {1})  # the server's backends inherit it
                    except ProcessLookupError:  # a short-lived one, gone meanwhile
                        pass
        if a.pin:
            os.sched_setaffinity(0, {0})
        try:
            for name, url in urls.items():
                full, bare, calls = race_loop(a.k, a.rounds, url)
                print(f"| {name} | {full:.0f} | {bare:.0f} | {100 * (1 - bare / full):.1f}% | "
                      f"{calls:.1f} | {100 * calls / full:.1f}% |", flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
