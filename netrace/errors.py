"""netrace's error types.

A :class:`UserError` is something the user can fix (a bad file, config, column or value). The
CLI prints its message alone on stderr and exits with status 2; anything else is an internal
failure (status 1). Messages say what was wrong, what is allowed, what was given, and how to fix
it, in one or two sentences.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["UserError", "did_you_mean"]


class UserError(ValueError):
    """Bad input from the user: one clear message, exit status 2 from the CLI."""


def did_you_mean(given: str, allowed: Iterable[str]) -> str:
    """A "; did you mean 'x'?" suffix naming the closest allowed word, or "" when none is close.

    >>> did_you_mean("windw", ["window", "horizon"])
    "; did you mean 'window'?"
    """
    match = difflib.get_close_matches(given, list(allowed), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""
