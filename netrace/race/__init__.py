"""The race: workers run populations; a sampler proposes; a rule stops the hopeless; storage
keeps everything. Only this package wires data, training, curves, storage and backends."""

from __future__ import annotations

from netrace.race._proposer import Proposer, population_key

__all__ = ["Proposer", "population_key"]
