"""Checks on the raw table: the time column, numeric columns, missing and infinite values.

Each check raises :class:`~netrace.errors.UserError` naming the column, the first offending rows
(with their time where there is one) and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from netrace.data._recipes import adjusted_close_only, price_columns
from netrace.errors import UserError, did_you_mean

__all__ = ["check_columns", "check_time", "check_panel", "check_numeric", "check_finite",
           "data_warnings"]


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


def check_time(frame: pd.DataFrame, time: str, date_format: str | None = None) -> pd.DataFrame:
    """Parse the time column (dates or numbers; text by ``date_format`` when given) and
    require strictly increasing values."""
    raw = frame[time] if time in frame.columns else None
    frame = _parse_time(frame, time, date_format)
    col = frame[time]
    values = col.to_numpy()
    if len(values) > 1:
        diff_ok = values[1:] > values[:-1]
        if not diff_ok.all():
            i = int(np.flatnonzero(~diff_ok)[0])
            if date_format is None and raw is not None:
                _check_day_first(raw, time, f"row {i + 1} ({_fmt_time(col.iloc[i + 1])}) "
                                 f"would come after row {i} ({_fmt_time(col.iloc[i])})")
            a, b = _fmt_time(col.iloc[i]), _fmt_time(col.iloc[i + 1])
            if values[i] == values[i + 1]:
                raise UserError(f"time column '{time}' has a duplicate timestamp: {a} at rows "
                                f"{i} and {i + 1}; keep one row per time (aggregate or drop "
                                "duplicates)")
            raise UserError(f"time column '{time}' is not sorted: row {i + 1} ({b}) comes after "
                            f"row {i} ({a}); sort the data by '{time}' in increasing order")
    return frame


def check_panel(frame: pd.DataFrame, time: str, series: str, date_format: str | None = None
                ) -> tuple[pd.DataFrame, tuple[object, ...]]:
    """A long-format panel: parse the time column, require strictly increasing times within
    each series (rows of different series may interleave), and lay the rows out as one
    contiguous block per series, series in sorted order, each block in the file's order.

    Returns the reordered frame (index reset) and the series names in block order."""
    check_columns(frame, [series], "[data] series")
    labels = frame[series]
    empty = labels.isna().to_numpy() | (labels.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        rows = np.flatnonzero(empty)
        raise UserError(f"series column '{series}' is empty at row(s) {_at(frame, rows, None)}; "
                        "every row needs the name of its series")
    # series are names: text, whatever the file's type (a parquet's integer 7203 and a CSV's
    # "7203" name one series; the CSV reader keeps "0050" and "NA" as written)
    labels = labels.astype(str)
    frame = _parse_time(frame.assign(**{series: labels}), time, date_format)
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


def _parse_time(frame: pd.DataFrame, time: str, date_format: str | None = None
                ) -> pd.DataFrame:
    """The frame with its time column checked for gaps and parsed (dates or numbers; text by
    ``date_format`` when one is given)."""
    check_columns(frame, [time], "[data] time")
    col = frame[time]
    if col.isna().any():
        rows = np.flatnonzero(col.isna().to_numpy())
        raise UserError(f"time column '{time}' is empty at row(s) {_at(frame, rows, None)}; "
                        "every row needs a time")
    if date_format is not None and not pd.api.types.is_datetime64_any_dtype(col):
        if "%" not in date_format:
            raise UserError(f"[data] date_format = {date_format!r} has no strptime code; write "
                            "it with % codes, such as \"%d/%m/%Y\" for 13/03/2000 or "
                            "\"%Y-%m-%d\" for 2000-03-13")
        text = col.astype(str).str.strip()
        parsed = _to_datetime(text, format=date_format)
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            raise UserError(f"time column '{time}' does not match [data] date_format = "
                            f"{date_format!r}: row {bad[0]} holds {col.iloc[bad[0]]!r} "
                            f"({bad.size} row(s) in all); fix date_format to the way the dates "
                            "are written (strptime codes: %d day, %m month, %Y year, %H:%M "
                            "time) or fix those rows")
        return frame.assign(**{time: parsed})
    if not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_datetime64_any_dtype(col):
        parsed = _to_datetime(col, format="mixed")
        bad = np.flatnonzero(parsed.isna().to_numpy())
        if bad.size:
            _check_day_first(col, time, f"row {bad[0]} holds {col.iloc[bad[0]]!r}, which is "
                             "not a month-first date")
            raise UserError(f"time column '{time}' has values that are not dates or times, first "
                            f"at row {bad[0]}: {col.iloc[bad[0]]!r}; use ISO dates such as "
                            "2001-01-31")
        frame = frame.assign(**{time: parsed})
    return frame


def _to_datetime(values: pd.Series, format: str) -> pd.Series:
    """Text times parsed (unparseable ones NaT). Times with several UTC offsets (a vendor's
    local midnight, -05:00 in winter and -04:00 in summer) are put on UTC, in order."""
    try:
        return pd.to_datetime(values, errors="coerce", format=format)
    except ValueError as exc:
        if "timezone" not in str(exc).lower() and "offset" not in str(exc).lower():
            raise
        return pd.to_datetime(values, errors="coerce", format=format, utc=True)


def _check_day_first(col: pd.Series, time: str, why: str) -> None:
    """Raise the day-first diagnosis when text dates read month-first fail or are out of
    order (``why``) while read day-first they parse and strictly increase."""
    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_datetime64_any_dtype(col):
        return
    text = col.astype(str).str.strip()
    try:
        day_first = pd.to_datetime(text, errors="coerce", format="mixed", dayfirst=True)
    except (ValueError, TypeError):
        return
    values = day_first.to_numpy()
    if day_first.isna().any() or not (values[1:] > values[:-1]).all():
        return
    from pandas.tseries.api import guess_datetime_format

    fmt = guess_datetime_format(text.iloc[0], dayfirst=True)
    if fmt is None or pd.to_datetime(text, errors="coerce", format=fmt).isna().any():
        fmt = "%d/%m/%Y"
    raise UserError(f"time column '{time}' holds day-first dates (such as {text.iloc[0]!r}): "
                    f"read month-first, {why}, but read day-first they are in increasing "
                    f"order; set [data] date_format = \"{fmt}\"")


#: a number written with a currency sign or code, thousands separators or accounting
#: parentheses: "$100.25", "1,234.5", "100.25 USD", "(12.5)", "EUR 3.5"
_FORMATTED = re.compile(r"^\(?\s*([A-Z]{3}\s*)?[-+]?\s*[$€£¥]?\s*[-+]?[\d,' ]*\.?\d+\s*"
                        r"([A-Z]{3})?\s*\)?$")


#: the pandas line that cleans such a column: signs, codes and separators out, (x) to -x
_CLEAN = ("df[{c!r}] = pd.to_numeric(df[{c!r}].str.replace(r\"[$€£¥,\\s]|[A-Z]{{3}}\", "
          "\"\", regex=True).str.replace(r\"^\\((.*)\\)$\", r\"-\\1\", regex=True))")


def _looks_formatted(value: object) -> bool:
    if not isinstance(value, str):
        return False
    v = value.strip()
    return bool(_FORMATTED.match(v)) and any(ch.isdigit() for ch in v)


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
        if _looks_formatted(col.iloc[r]):
            raise UserError(
                f"{role} column '{c}' is not numeric: row {_at(frame, [r], time)} holds "
                f"{col.iloc[r]!r}, a number written with a currency sign, thousands separators "
                "or parentheses; write it as plain numbers (100.25, 1234.5, -12.5 for (12.5)): "
                "re-export the file without number formatting, or clean the column in pandas, "
                f"e.g. {_CLEAN.format(c=c)}")
        hint = ("list it under [task] categorical to one-hot encode it, or remove it from "
                "[task] features") if role == "feature" else "convert it to numbers"
        raise UserError(f"{role} column '{c}' is not numeric: row {_at(frame, [r], time)} holds "
                        f"{col.iloc[r]!r}; {hint}")


def check_finite(frame: pd.DataFrame, columns: Sequence[str], time: str | None,
                 fill: str, series: str | None = None, advice: str | None = None
                 ) -> pd.DataFrame:
    """Find NaN/inf in the columns used; apply ``fill`` (none, ffill, drop) or explain (with
    ``advice`` as the fix, when the config's ``fill`` is not the user's to change). In a
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
        how = ("set [data] fill = \"ffill\" to carry the last value forward or \"drop\" to "
               "drop those rows") if advice is None else advice
        raise UserError(f"column '{col}' has {len(rows)} missing or infinite value(s), first at "
                        f"row(s) {_at(frame, rows, time)} ({total} row(s) affected in all); "
                        f"{how}")
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


#: close ratios of unadjusted splits (2:1, 3:1) and reverse splits (1:2, 1:3), and how far a
#: day's close ratio may be from one (relative) to be suspected
_SPLIT_RATIOS = (1 / 2, 1 / 3, 2.0, 3.0)
_SPLIT_TOLERANCE = 0.03
_VOLUME_DAYS = 20  # days of median volume compared before and after a suspected split


def fill_warnings(frame: pd.DataFrame, columns: Sequence[str], time: str | None,
                  series: str | None = None, longest: int = 5) -> list[str]:
    """Before ``fill = "ffill"``: the gaps of more than ``longest`` rows in a row that it would
    fill, per column (and series), one warning each naming the longest: a series that stopped
    trading, carried forward, looks like a price that did not move.

    >>> f = pd.DataFrame({"t": range(10), "x": [1.0] + [np.nan] * 8 + [2.0]})
    >>> print(fill_warnings(f, ["x"], "t")[0][:70])
    fill = 'ffill' carries column 'x' over 8 rows in a row (1 .. 8; 8 row(
    """
    out = []
    groups = [(None, np.arange(len(frame)))] if series is None else \
        [(name, idx) for name, idx in frame.groupby(series, sort=False).indices.items()]
    for col in columns:
        if col not in frame.columns or not pd.api.types.is_numeric_dtype(frame[col]):
            continue
        for name, idx in groups:
            miss = ~np.isfinite(frame[col].to_numpy(dtype=float)[idx])
            if miss.sum() <= longest:
                continue
            edges = np.flatnonzero(np.diff(np.r_[0, miss.astype(np.int8), 0]))
            runs = list(zip(edges[::2], edges[1::2], strict=True))
            a, b = max(runs, key=lambda r: r[1] - r[0])
            if b - a <= longest:
                continue
            where = "" if name is None else f" of series {name!r}"
            first, last = idx[a], idx[b - 1]
            span = f"rows {first}..{last}" if time is None else \
                f"{_fmt_time(frame[time].iloc[first])} .. {_fmt_time(frame[time].iloc[last])}"
            out.append(f"fill = 'ffill' carries column {col!r}{where} over {b - a} rows in a row "
                       f"({span}; {int(miss.sum())} row(s) filled in all): a series that "
                       "stopped trading looks like a price that did not move; trim it, or use "
                       "fill = \"drop\"")
    return out


def data_warnings(frame: pd.DataFrame, time: str | None, series: str | None = None,
                  limit: int = 5) -> list[str]:
    """Warnings (not errors) about price data that is probably wrong: zero-range bars (high
    equal to low), suspected unadjusted splits (a one-day close ratio within 3% of 1/2, 1/3, 2
    or 3, with the volume moving by about the inverse ratio when there is a volume column),
    and an adjusted close used as the close. Each names the dates (the first ``limit``). In a
    panel (``series``) each series is looked at alone.

    >>> frame = pd.DataFrame({"Date": pd.bdate_range("2001-01-01", periods=3),
    ...                       "High": [2.0, 1.0, 3.0], "Low": [1.0, 1.0, 2.0]})
    >>> data_warnings(frame, "Date")  # doctest: +ELLIPSIS
    ["zero-range bars: 1 row(s) have 'High' equal to 'Low' (2001-01-02)..."]
    """
    out: list[str] = []
    prices = price_columns(frame.columns)
    adjusted = adjusted_close_only(frame.columns)
    if adjusted is not None:
        out.append(f"the data has no close column; '{adjusted}' (the adjusted close) is used as "
                   "the close for the price recipes (returns, volatility, direction); rename a "
                   "raw close column to 'Close' to use it instead")
    if time is None:
        return out
    if series is None:
        groups = [(None, np.arange(len(frame)))]
    else:
        codes, labels = pd.factorize(frame[series], sort=False)
        groups = [(labels[i], np.flatnonzero(codes == i)) for i in range(len(labels))]

    def num(field: str, idx: np.ndarray) -> np.ndarray:
        return pd.to_numeric(frame[prices[field]].iloc[idx], errors="coerce").to_numpy(float)

    for name, idx in groups:
        where = "" if name is None else f" in series {name!r}"
        dates = frame[time].iloc[idx]
        if "high" in prices and "low" in prices:
            flat = np.flatnonzero(num("high", idx) == num("low", idx))
            if flat.size:
                out.append(f"zero-range bars{where}: {flat.size} row(s) have '{prices['high']}' "
                           f"equal to '{prices['low']}' ({_dates(dates, flat, limit)}); their "
                           "range and high/low volatility are 0: check the source (stale or "
                           "filled quotes, holidays) or drop those rows")
        if "close" in prices and len(idx) > 1:
            volume = num("volume", idx) if "volume" in prices else None
            for i, ratio, vol_ratio in _splits(num("close", idx), volume):
                a, b = _fmt_time(dates.iloc[i - 1]), _fmt_time(dates.iloc[i])
                split = f"{round(1 / ratio)}:1" if ratio < 1 else f"1:{round(ratio)}"
                vol = (f" while the median volume moves x{vol_ratio:.2g}" if vol_ratio is not None
                       else " (no volume column to confirm it)")
                out.append(f"suspected unadjusted split{where} on {b}: '{prices['close']}' "
                           f"moves by {ratio - 1:+.0%} from {a}{vol}, as a {split} split does; "
                           "use split-adjusted prices (an adjusted close, or divide the prices "
                           "before the split by its ratio), or the recipes see a false return")
    return out


def _dates(dates: pd.Series, rows: np.ndarray, limit: int) -> str:
    shown = ", ".join(_fmt_time(dates.iloc[r]) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _splits(close: np.ndarray, volume: np.ndarray | None
            ) -> list[tuple[int, float, float | None]]:
    """Rows where the close jumps by a split ratio: (row, close ratio, volume ratio or None).
    With volume, the median volume of the days after over the days before must move the
    other way by about the inverse ratio (half to twice its log); without usable volume,
    price alone decides."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = close[1:] / close[:-1]
    hits = []
    for j in np.flatnonzero(np.isfinite(ratio) & (ratio > 0)):
        r = float(ratio[j])
        if not any(abs(r / k - 1) <= _SPLIT_TOLERANCE for k in _SPLIT_RATIOS):
            continue
        i = int(j) + 1
        vol_ratio = None
        if volume is not None:
            before = np.nanmedian(volume[max(0, i - _VOLUME_DAYS):i]) if i else np.nan
            after = np.nanmedian(volume[i:i + _VOLUME_DAYS])
            if np.isfinite(before) and np.isfinite(after) and before > 0 and after > 0:
                vol_ratio = float(after / before)
                # volume moved the other way, by half to twice the split's log move (a
                # median over a few weeks is noisy; a market crash leaves volume alone or
                # raises it)
                lv, lr = -np.log(vol_ratio), np.log(r)
                if not (np.sign(lv) == np.sign(lr) and abs(lr) / 2 <= abs(lv) <= 2 * abs(lr)):
                    continue
        hits.append((i, r, vol_ratio))
    return hits
