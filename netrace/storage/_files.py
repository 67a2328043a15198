"""Running trials' states in files beside a SQLite database, one file per worker.

A worker saves all its running trials' :class:`ResumeState` after every epoch: ~26 MB for 256
MLPs 32-64-64-1 with Adam, most of what it writes. As BLOBs in SQLite every epoch's states would
pass through the write-ahead log and a checkpoint (measured: 30-300 ms per epoch); as one new
file, only through the page cache (~15 ms). Only this file's writer (the worker) and, after it
has died or stopped, the storage that re-queues its trials ever open it.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from netrace.storage._records import ResumeState

__all__ = ["StateFiles"]

_MAGIC = b"NRS1"


class StateFiles:
    """``folder/w<worker>.<n>.bin``, ``n`` counting the worker's writes; the newest is its
    last epoch's states."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _files(self, worker_id: int) -> list[tuple[int, Path]]:
        """A worker's state files, newest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob(f"w{worker_id}.*.bin"):
            n = path.name.split(".")[1]
            if n.isdigit():
                found.append((int(n), path))
        return sorted(found, reverse=True)

    def write(self, worker_id: int, states: list[ResumeState]) -> None:
        """All of a worker's running trials' states in one new file, complete once it has its
        name (written under a temporary one, then renamed); then the older files go. A fresh
        name, not a rename over the old file: ext4 writes a file renamed over another one to
        disk at once, which cost 3x the rest of an epoch's storage."""
        self.folder.mkdir(exist_ok=True)
        old = self._files(worker_id)
        n = old[0][0] + 1 if old else 0
        head = json.dumps([[r.trial_id, r.epochs, len(r.data)] for r in states]).encode()
        tmp = self.folder / f"w{worker_id}.{n}.tmp"
        with open(tmp, "wb") as f:
            f.write(_MAGIC + struct.pack("<Q", len(head)) + head)
            for r in states:
                f.write(r.data)
        tmp.rename(tmp.with_suffix(".bin"))
        for _, path in old:
            path.unlink(missing_ok=True)

    def read(self, worker_id: int) -> dict[int, ResumeState]:
        """The states in a worker's newest file, by trial id; none if it has none or a damaged
        one (a machine crash can leave one short: those trials start over)."""
        found = self._files(worker_id)
        if not found:
            return {}
        blob = memoryview(found[0][1].read_bytes())
        try:
            if bytes(blob[:4]) != _MAGIC:
                return {}
            (n,) = struct.unpack("<Q", blob[4:12])
            entries = json.loads(bytes(blob[12:12 + n]))
            at, out = 12 + n, {}
            for trial_id, epochs, size in entries:
                out[trial_id] = ResumeState(trial_id, epochs, bytes(blob[at:at + size]))
                at += size
        except (ValueError, TypeError, struct.error):
            return {}
        return out if at == len(blob) else {}

    def drop(self, worker_id: int) -> None:
        """Delete a worker's files (it is done, or its states have moved to the database)."""
        if self.folder.is_dir():
            for path in self.folder.glob(f"w{worker_id}.*"):
                path.unlink(missing_ok=True)
