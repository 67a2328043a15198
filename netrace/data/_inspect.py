"""The data summary and split plan printed by ``netrace data inspect``.

Statistics come from the development part only; of the test part only its position and size
are shown, never its values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from netrace.data._dataset import Prepared

__all__ = ["summary_text", "plan_rows", "plan_text"]


def _t(value: object) -> str:
    if value is None:
        return "-"
    ts = pd.Timestamp(value) if isinstance(value, np.datetime64) else value
    if isinstance(ts, pd.Timestamp):
        return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else str(ts)
    return str(value)


def summary_text(p: Prepared) -> str:
    """Where the data came from, what is predicted from what, and the sample counts."""
    cfg, dev = p.config, p.dev
    lines = [f"data      {p.origin}"]
    rows = f"{p.rows_total} rows"
    if p.rows_dropped:
        rows += f" ({p.rows_dropped} dropped by fill = \"drop\")"
    if p.time_name:
        assert p.time_span is not None
        rows += f", {_t(p.time_span[0])} .. {_t(p.time_span[1])} (time column '{p.time_name}')"
    else:
        rows += ", i.i.d. rows (no time column)"
    lines.append(f"rows      {rows}")
    if p.series_name:
        lines.append(f"series    {_series_line(p)}")
    tgt = p.target
    what = tgt.description or tgt.name
    if p.time_name:
        what = f"{what} {dev.horizon} step(s) after each window's last row"
    lines.append(f"task      {cfg.task.type}: {tgt.name} ({what})")
    feats = ", ".join(f.name + (" (one-hot)" if f.categorical else "") for f in p.features)
    shape = (f"window of {dev.window} row(s) x {len(p.features)} feature(s)" if p.time_name
             else f"{len(p.features)} feature(s)")
    lines.append(f"features  {feats}")
    lines.append(f"inputs    {shape}; standardization and one-hot fitted per fold on its "
                 "training rows only")
    n_all = dev.n + p.holdout.n
    if p.series_name:
        lines.append(f"samples   {n_all} windows within the series (the first "
                     f"{p.first_anchor_row} rows of each series are warm-up); each reads "
                     f"{dev.lookback} input row(s) and its label {dev.horizon} row(s) later")
        lines.append(f"embargo   {p.embargo} date(s) between a training part and the part it "
                     f"is judged on; every split cuts all series at the same dates")
    elif p.time_name:
        lines.append(f"samples   {n_all + _gap(p)} windows (first {p.first_anchor_row} rows are "
                     f"warm-up); each reads {dev.lookback} input row(s) and its label "
                     f"{dev.horizon} row(s) later")
        lines.append(f"embargo   {p.embargo} sample(s) between a training part and the part it "
                     f"is judged on (window {dev.window} + horizon {dev.horizon} - 1 + feature "
                     f"reach {dev.lookback - dev.window})")
    else:
        lines.append(f"samples   {n_all}")
    y = dev.y
    if tgt.kind == "regression":
        lines.append(f"target    (development part) mean {np.mean(y):.6g}, std {np.std(y):.6g}, "
                     f"min {np.min(y):.6g}, max {np.max(y):.6g}")
    else:
        counts = np.bincount(y[y >= 0], minlength=len(dev.classes or ()))
        shown = ", ".join(f"{c}: {k}" for c, k in zip(dev.classes or (), counts))
        lines.append(f"classes   (development part) {shown}")
    lines.append(f"test      {p.holdout.n} samples held apart, sealed until the final evaluation "
                 f"(fingerprint {p.holdout.fingerprint})")
    return "\n".join(lines)


def _series_line(p: Prepared, limit: int = 12) -> str:
    """The series column, its series and per series its rows and samples."""
    shown = [f"{name} {rows}/{dev}/{test}" for name, (rows, dev, test)
             in zip(p.series_names, p.series_counts)]
    more = f", and {len(shown) - limit} more" if len(shown) > limit else ""
    return (f"'{p.series_name}': {len(shown)} series (rows/development/test samples): "
            + ", ".join(shown[:limit]) + more + "; scaled per series by its training rows")


def _gap(p: Prepared) -> int:
    return p.test_range[0] - p.dev.n if p.time_name else 0


def plan_rows(p: Prepared) -> list[dict[str, object]]:
    """One record per fold and part: samples, row range, first/last time, size."""
    dev = p.dev
    out: list[dict[str, object]] = []
    anchor_time = dev.time

    def part(fold: str, name: str, idx: np.ndarray) -> dict[str, object]:
        rec: dict[str, object] = {"fold": fold, "part": name, "size": int(len(idx))}
        if p.series_name and len(idx):  # a panel: the dates, the same for every series
            rec["rows"] = "(all series)"
            rec["first"] = _t(anchor_time[idx].min())
            rec["last"] = _t(anchor_time[idx].max())
        elif p.time_name and len(idx):
            rec["rows"] = _ranges(idx + p.first_anchor_row)
            rec["first"] = _t(anchor_time[idx[0]])
            rec["last"] = _t(anchor_time[idx[-1]])
        return rec

    for f in dev.folds:
        out.append(part(str(f.index + 1), "train", f.train))
        if p.time_name and len(f.train) and len(f.valid):
            gaps = f"{p.embargo} dates" if p.series_name else _gap_sizes(f.train, f.valid)
            out.append({"fold": str(f.index + 1), "part": "embargo", "size": gaps,
                        "rows": "(dropped)"})
        out.append(part(str(f.index + 1), "valid", f.valid))
    test = {"fold": "test", "part": "test", "size": p.holdout.n}
    if p.series_name:
        test.update(rows="(all series)", first=_t(p.holdout.first_time),
                    last=_t(p.holdout.last_time))
        out.append({"fold": "test", "part": "embargo", "size": f"{p.embargo} dates",
                    "rows": "(dropped)"})
    elif p.time_name:
        test["rows"] = (f"{p.test_range[0] + p.first_anchor_row}.."
                        f"{p.test_range[1] + p.first_anchor_row}")
        test["first"] = _t(p.holdout.first_time)
        test["last"] = _t(p.holdout.last_time)
        out.insert(len(out), {"fold": "test", "part": "embargo",
                              "size": p.test_range[0] - dev.n, "rows": "(dropped)"})
    out.append(test)
    return out


def _gap_sizes(train: np.ndarray, valid: np.ndarray) -> str:
    lo, hi = valid[0], valid[-1]
    before = int(lo - train[train < lo].max() - 1) if (train < lo).any() else None
    after = int(train[train > hi].min() - hi - 1) if (train > hi).any() else None
    return "/".join(str(g) for g in (before, after) if g is not None)


def runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Sorted positions as runs of consecutive ones: (first, last) pairs.

    >>> runs(np.array([1, 2, 3, 7, 8]))
    [(1, 3), (7, 8)]
    """
    if not len(idx):
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1)
    starts = np.concatenate([[idx[0]], idx[breaks + 1]])
    ends = np.concatenate([idx[breaks], [idx[-1]]])
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _ranges(idx: np.ndarray) -> str:
    return ", ".join(f"{a}..{b}" for a, b in runs(idx))


def plan_text(p: Prepared) -> str:
    """The split plan as an aligned table."""
    s = p.config.split
    head = f"split plan: {p.scheme}"
    if p.scheme in ("walk_forward", "purged_kfold", "kfold"):
        head += f", {len(p.dev.folds)} folds"
    if p.scheme == "walk_forward":
        head += f", {s.mode}"
    if not p.time_name:
        head += f" (shuffled, seed {s.seed})"
    head += f"; test = {s.test:g} held apart"
    cols = ["fold", "part", "rows", "first", "last", "size"] if p.time_name else \
        ["fold", "part", "size"]
    recs = plan_rows(p)
    table = [cols] + [[str(r.get(c, "")) for c in cols] for r in recs]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [head]
    if p.series_name:
        lines.append("  (first, last: the dates where samples' windows end, over all series; "
                     f"each label is {p.dev.horizon} row(s) later)")
    elif p.time_name:
        lines.append("  (rows: the rows where samples' windows end; each label is "
                     f"{p.dev.horizon} row(s) later)")
    for row in table:
        lines.append("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())
    return "\n".join(lines)
