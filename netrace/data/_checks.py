"""Checks on the raw table: the time column, numeric columns, missing and infinite values.

Each check raises :class:`~netrace.errors.UserError` naming the column, the first offending rows
(with their time where there is one) and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from netrace.errors import UserError, did_you_mean

__all__ = ["check_columns", "check_time", "check_panel", "check_numeric", "check_finite"]


def _at(frame: pd.DataFrame, rows: Sequence[int], time: str | None, limit: int = 3) -> str:
    shown = []
    for r in list(rows)[:limit]:
        shown.append(f"{r} ({_fmt_time(frame[time].iloc[r])})" if time else str(r))
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return ", ".join(shown) + more


def _fmt_time(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d") if value == value.normalize() else str(value)
    return str(value)


def check_columns(frame: pd.DataFrame, names: Sequence[str], where: str) -> None:
    """Every name must be a column of the frame."""
    cols = [str(c) for c in frame.columns]
    for name in names:
        if name not in cols:
            raise UserError(f"unknown column '{name}' in {where}{did_you_mean(name, cols)}; the "
                            f"data has columns: {', '.join(cols)}")


def check_time(frame: pd.DataFrame, time: str) -> pd.DataFrame:
    """Parse the time column (dates or numbers) and require strictly increasing values."""
    frame = _parse_time(frame, time)
    col = frame[time]
    values = col.to_numpy()
    if len(values) > 1:
        diff_ok = values[1:] > values[:-1]
        if not diff_ok.all():
            i = int(np.flatnonzero(~diff_ok)[0])
            a, b = _fmt_time(col.iloc[i]), _fmt_time(col.iloc[i + 1])
            if values[i] == values[i + 1]:
                raise UserError(f"time column '{time}' has a duplicate timestamp: {a} at rows "
                                f"{i} and {i + 1}; keep one row per time (aggregate or drop "
                                "duplicates)")
            raise UserError(f"time column '{time}' is not sorted: row {i + 1} ({b}) comes after "
                            f"row {i} ({a}); sort the data by '{time}' in increasing order")
    return frame


def check_panel(frame: pd.DataFrame, time: str, series: str
                ) -> tuple[pd.DataFrame, tuple[object, ...]]:
    """A long-format panel: parse the time column, require strictly increasing times within
    each series (rows of different series may interleave), and lay the rows out as one
    contiguous block per series, series in sorted order, each block in the file's order.

    Returns the reordered frame (index reset) and the series names in block order."""
    check_columns(frame, [series], "[data] series")
    labels = frame[series]
    if labels.isna().any():
        rows = np.flatnonzero(labels.isna().to_numpy())
        raise UserError(f"series column '{series}' is empty at row(s) {_at(frame, rows, None)}; "
                        "every row needs the name of its series")
    frame = _parse_time(frame, time)
    names = tuple(_sorted_labels(labels))
    code = pd.Categorical(labels, categories=list(names)).codes
    order = np.argsort(code, kind="stable")  # each series' rows keep the file's order
    values = frame[time].to_numpy()[order]
    c = code[order]
    same = c[1:] == c[:-1]
    bad = np.flatnonzero(same & ~(values[1:] > values[:-1]))
    if bad.size:
        i = int(bad[0])
        r0, r1 = int(order[i]), int(order[i + 1])  # rows of the file
        a, b = _fmt_time(frame[time].iloc[r0]), _fmt_time(frame[time].iloc[r1])
        name = names[c[i]]
        if values[i] == values[i + 1]:
            raise UserError(f"series {name!r} has a duplicate time in column '{time}': {a} at "
                            f"rows {r0} and {r1}; keep one row per series and time (aggregate "
                            "or drop duplicates)")
        raise UserError(f"time column '{time}' is not sorted within series {name!r}: row {r1} "
                        f"({b}) comes after row {r0} ({a}); sort the data by '{series}' and "
                        f"'{time}' (or by '{time}' alone) in increasing order")
    return frame.iloc[order].reset_index(drop=True), names


def _sorted_labels(labels: pd.Series) -> list[object]:
    uniq = pd.unique(labels)
    try:
        return sorted(uniq)
    except TypeError:  # mixed types: by their text, then first-seen order
        return sorted(uniq, key=str)


def _parse_time(frame: pd.DataFrame, time: str) -> pd.DataFrame:
    """The frame with its time column checked for gaps and parsed (dates or numbers)."""
    check_columns(frame, [time], "[data] time")
    col = frame[time]
    if col.isna().any():
        rows = np.flatnonzero(col.isna().to_numpy())
        raise UserError(f"time column '{time}' is empty at row(s) {_at(frame, rows, None)}; "
                        "every row needs a time")
    if not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_datetime64_any_dtype(col):
        parsed = pd.to_datetime(col, errors="coerce", format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise UserError(f"time column '{time}' has values that are not dates or times, first "
                            f"at row {bad[0]}: {col.iloc[bad[0]]!r}; use ISO dates such as "
                            "2001-01-31")
        frame = frame.assign(**{time: parsed})
    return frame


def check_numeric(frame: pd.DataFrame, columns: Sequence[str], time: str | None,
                  role: str = "feature") -> None:
    """Numeric columns (bool is numeric); a text column is named with an example value."""
    for c in columns:
        col = frame[c]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        converted = pd.to_numeric(col, errors="coerce")
        bad = np.flatnonzero(converted.isna().to_numpy() & col.notna().to_numpy())
        r = int(bad[0]) if bad.size else 0
        hint = ("list it under [task] categorical to one-hot encode it, or remove it from "
                "[task] features") if role == "feature" else "convert it to numbers"
        raise UserError(f"{role} column '{c}' is not numeric: row {_at(frame, [r], time)} holds "
                        f"{col.iloc[r]!r}; {hint}")


def check_finite(frame: pd.DataFrame, columns: Sequence[str], time: str | None,
                 fill: str, series: str | None = None) -> pd.DataFrame:
    """Find NaN/inf in the columns used; apply ``fill`` (none, ffill, drop) or explain. In a
    panel (``series``, the column naming each row's series) ffill fills from the same series
    only."""
    cols = list(columns)
    if not cols:
        return frame
    sub = frame[cols]
    numeric = sub.select_dtypes(include=[np.number])
    bad_mask = sub.isna()
    if not numeric.empty:
        bad_mask[numeric.columns] |= np.isinf(numeric.to_numpy(dtype=float))
    if not bad_mask.to_numpy().any():
        return frame
    if fill == "none":
        col = next(c for c in cols if bad_mask[c].any())
        rows = np.flatnonzero(bad_mask[col].to_numpy())
        total = int(bad_mask.to_numpy().any(axis=1).sum())
        raise UserError(f"column '{col}' has {len(rows)} missing or infinite value(s), first at "
                        f"row(s) {_at(frame, rows, time)} ({total} row(s) affected in all); set "
                        "[data] fill = \"ffill\" to carry the last value forward or \"drop\" to "
                        "drop those rows")
    frame = frame.copy()
    if not numeric.empty:
        frame[list(numeric.columns)] = frame[list(numeric.columns)].replace(
            [np.inf, -np.inf], np.nan)
    if fill == "drop":
        keep = ~bad_mask.to_numpy().any(axis=1)
        return frame.loc[keep].reset_index(drop=True)
    # ffill: only the past fills a gap, so nothing leaks backwards in time
    frame[cols] = frame[cols].ffill() if series is None else \
        frame[cols].groupby(frame[series].to_numpy(), sort=False).ffill()
    lead = frame[cols].isna().to_numpy().any(axis=1)
    if lead.any():
        rows = np.flatnonzero(lead)
        raise UserError(f"[data] fill = \"ffill\" cannot fill the first row(s) "
                        f"{_at(frame, rows, time)} (no earlier value); use fill = \"drop\", "
                        "or fix the data")
    return frame
