"""The race: workers run populations; a sampler proposes; a rule stops the hopeless; storage
keeps everything. Only this package wires data, training, curves, storage and backends."""

from __future__ import annotations

from netrace.race._checkpoint import NetworkCheckpoint, load_checkpoint
from netrace.race._progress import (
    Progress,
    Snapshot,
    snapshot,
    summary_lines,
    top_lines,
    top_rows,
)
from netrace.race._proposer import Proposer, population_key
from netrace.race._race import run_race
from netrace.race._worker import RacePlan, race_metric, race_rule, worker_main

__all__ = [
    "NetworkCheckpoint",
    "Progress",
    "Proposer",
    "RacePlan",
    "Snapshot",
    "population_key",
    "load_checkpoint",
    "race_metric",
    "race_rule",
    "run_race",
    "snapshot",
    "summary_lines",
    "top_lines",
    "top_rows",
    "worker_main",
]
