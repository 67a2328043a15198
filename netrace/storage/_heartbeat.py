"""A worker's heartbeat from a timer, so that it beats even in a long epoch or data load.

Every write of a worker's epoch is a heartbeat too; the timer covers the time between them. It
beats :data:`BEATS_PER_TIMEOUT` times per timeout, so a few missed beats (a busy database, a
pause of the process) do not make a live worker look dead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["BEATS_PER_TIMEOUT", "Heartbeat"]

BEATS_PER_TIMEOUT = 6


class Heartbeat:
    """Calls ``beat()`` every ``timeout / BEATS_PER_TIMEOUT`` seconds from a daemon thread,
    until :meth:`stop`, or until ``beat()`` returns False (the worker was declared dead). A
    failing beat (the database unreachable for a moment) is tried again at the next one.

    >>> beats, third = [], threading.Event()
    >>> def beat():
    ...     beats.append(1)
    ...     if len(beats) == 3:  # declared dead: no more beats
    ...         third.set()
    ...     return len(beats) < 3
    >>> h = Heartbeat(beat, timeout=0.06)
    >>> third.wait(60); h.stop(); len(beats)
    True
    3
    """

    def __init__(self, beat: Callable[[], bool], timeout: float) -> None:
        if not timeout > 0:
            raise ValueError(f"a heartbeat timeout is a number of seconds above 0, not {timeout}")
        self._beat, self.every = beat, timeout / BEATS_PER_TIMEOUT
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netrace-heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                if not self._beat():
                    return
            except Exception:  # noqa: BLE001 - the next beat tries again
                continue

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(10)
