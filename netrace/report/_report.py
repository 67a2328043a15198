"""``netrace report``: a study as one self-contained HTML file.

The file opens offline: plotly.js, the figures' data and the styles are embedded, and nothing in
it asks for another file or address. It reads what the storage holds and never opens the test
part itself: the verdict, the test forecasts and the baselines are those ``netrace evaluate``
stored; a study not evaluated yet gets the race's sections and a line saying how to add the rest.

Sections: the verdict with the baseline table and p-values; the test-period forecasts against the
actual values with the prediction interval; the leaderboard; every learning curve (a network
stopped by the rule ends where it was stopped, with the 90% band of the final value the rule
forecast when it stopped it); the race's timeline (the best score against network-epochs spent,
per worker); hyperparameter importance (Optuna's fANOVA evaluator); the data summary, its
warnings and a picture of the split plan.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from netrace import __version__
from netrace.errors import UserError
from netrace.storage import Storage, TrialRecord, TrialState

__all__ = ["Report", "build_report", "report_study"]

#: one colour per trial state (the curves, the leaderboard's marks)
_STATE_COLOURS = {"complete": "#1f77b4", "stopped": "#ff7f0e", "cut": "#2ca02c",
                  "running": "#9467bd", "diverged": "#d62728", "failed": "#7f7f7f",
                  "queued": "#bcbd22"}
#: the parts of the split plan
_PART_COLOURS = {"train": "#1f77b4", "embargo": "#bbbbbb", "valid": "#ff7f0e",
                 "test": "#d62728"}
#: plotly's options for every figure: no logo link, no "edit in chart studio" link
_PLOT_CONFIG = {"displaylogo": False, "responsive": True,
                "toImageButtonOptions": {"format": "png"}}
_MAX_SERIES_FIGURES = 12
#: the stopped networks whose forecast band is drawn at first (the nearest misses)
_BANDS_SHOWN = 10


@dataclass
class Report:
    """A study's report: the page (``html``), its sections' ids in order, its figures by name
    (plotly figures: ``forecasts`` or ``forecasts/SERIES``, ``curves``, ``timeline``,
    ``importance``, ``split``) and whether the study had been evaluated."""

    html: str = field(repr=False)
    sections: list[str]
    figures: dict[str, Any] = field(repr=False)
    evaluated: bool


def report_study(storage: str | Storage, study: str, out: str | os.PathLike[str], *,
                 top: int = 20, log: Callable[[str], None] | None = None) -> Report:
    """Write the report of ``study`` to ``out``: one HTML file, whole or not at all."""
    _folder_of(Path(out))  # before the work: a mistyped folder is said at once
    report = build_report(storage, study, top=top, log=log)
    _write(Path(out), report.html)
    return report


def build_report(storage: str | Storage, study: str, *, top: int = 20,
                 log: Callable[[str], None] | None = None) -> Report:
    """The report of ``study`` (see :func:`report_study`), not written anywhere."""
    say = log or (lambda _: None)
    s = storage if isinstance(storage, Storage) else Storage(storage, create=False)
    rec = s.get_study(study)
    trials = s.trials(rec.id)
    if not trials:
        raise UserError(f"study '{study}' has no networks yet, so there is nothing to report; "
                        f"race first: netrace run CONFIG --study {study}")
    from netrace.race._race import study_config

    config = study_config(rec.config, origin=f"study '{study}'")
    parts = _Parts()
    evaluation = _evaluation(s, rec.id)
    parts.header(rec, config, s, evaluation)
    if evaluation is None:
        parts.section("verdict", "Verdict", _p(
            "This study has not been evaluated yet: the test part is still sealed. "
            f"<code>netrace evaluate {html.escape(study)} --storage …</code> opens it once and "
            "gives the verdict; run <code>netrace report</code> again afterwards to add the "
            "verdict, the baseline table and the test forecasts here."))
    else:
        result, test = evaluation
        parts.section("verdict", "Verdict", _verdict_html(result))
        say("report: the test forecasts")
        parts.section("forecasts", "Test forecasts against what happened",
                      *_forecast_blocks(result, test, config))
    say("report: the leaderboard, the curves and the timeline")
    parts.section("leaderboard", "Leaderboard", _leaderboard_html(rec, trials, top))
    parts.section("curves", "Learning curves", *_curves_blocks(s, rec, trials, config))
    parts.section("timeline", "Race timeline", *_timeline_blocks(s, rec, trials))
    say("report: hyperparameter importance (fANOVA)")
    parts.section("importance", "Hyperparameter importance", *_importance_blocks(
        rec, trials, config))
    say("report: the data summary and the split plan")
    parts.section("data", "Data and split plan", *_data_blocks(config))
    return Report(parts.render(f"netrace report: {study}"), parts.ids, parts.figures,
                  evaluation is not None)


# -- assembling the page ------------------------------------------------------------------------

class _Parts:
    """The page's sections, in order, and the figures among them."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.body: list[tuple[str, str, str]] = []
        self.figures: dict[str, Any] = {}

    @property
    def ids(self) -> list[str]:
        return [i for i, _, _ in self.body]

    def header(self, rec: Any, config: Any, s: Storage, evaluation: Any) -> None:
        made = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        facts = [("study", rec.name), ("task", f"{config.task.type} of {config.task.target}"),
                 ("storage", _safe_url(s.url)), ("made", f"{made} by netrace {__version__}")]
        if evaluation is None:
            facts.append(("verdict", "not evaluated yet"))
        self.head = [f"<h1>netrace report: {html.escape(rec.name)}</h1>", "<dl class='facts'>"]
        self.head += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                      for k, v in facts]
        self.head.append("</dl>")

    def section(self, sid: str, title: str, *blocks: str | _Fig) -> None:
        out = []
        for b in blocks:
            if isinstance(b, _Fig):
                self.figures[b.key] = b.fig
                out.append(f"<div class=figure data-figure='{html.escape(b.key)}'>{b.html()}"
                           "</div>")
            else:
                out.append(b)
        self.body.append((sid, title, "\n".join(out)))

    def render(self, title: str) -> str:
        import plotly.offline

        nav = " · ".join(f"<a href='#{i}'>{html.escape(t)}</a>" for i, t, _ in self.body)
        sections = "\n".join(f"<section id='{i}'><h2>{html.escape(t)}</h2>\n{b}\n</section>"
                             for i, t, b in self.body)
        return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
                f"<script type='text/javascript'>{plotly.offline.get_plotlyjs()}</script>\n"
                f"</head><body>\n{''.join(self.head)}\n<nav>{nav}</nav>\n{sections}\n"
                "</body></html>\n")


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;
max-width:1200px;padding:0 1.5em 3em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin:1em 0 .3em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}nav{position:sticky;top:0;background:#fff;padding:.5em 0;
border-bottom:1px solid #eee;z-index:10}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;margin:0}
dl.facts dt{color:#666}dl.facts dd{margin:0}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
th,td{padding:.25em .6em;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f6f6f6}td.l,th.l,th.params{text-align:left}
tr.chosen td{font-weight:600;background:#eef6ff}
td.params{text-align:left;white-space:normal;font-family:ui-monospace,monospace;font-size:.85em}
p.verdict{font-size:1.05em;background:#f8f8f0;border-left:4px solid #b8a000;padding:.6em 1em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}
.note{color:#555;font-size:.9em}.warn{color:#9a3b00}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.3em}
"""


def _folder_of(target: Path) -> Path:
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"cannot write the report to '{target}': the folder '{folder}' does not "
                        "exist; create it or give --out a path in a folder that exists")
    if target.is_dir():
        raise UserError(f"cannot write the report to '{target}': it is a folder; give --out a "
                        "file name, e.g. report.html")
    return folder


def _write(target: Path, text: str) -> None:
    """Write ``text`` to ``target`` whole or not at all (a temporary file, then renamed)."""
    folder = _folder_of(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".netrace-report-", suffix=".html", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, target)
    except OSError as err:
        raise UserError(f"could not write the report to '{target}' ({err.strerror or err}); "
                        "give --out a path you can write to") from None


def _safe_url(url: str) -> str:
    """A storage URL without its password."""
    if "://" not in url:
        return url
    import sqlalchemy as sa

    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - shown only; never fail a report on it
        return url.split("://", 1)[0] + "://…"


def _p(text: str, cls: str = "") -> str:
    return f"<p class='{cls}'>{text}</p>" if cls else f"<p>{text}</p>"


@dataclass
class _Fig:
    """A figure in a section, by name (``Report.figures``)."""

    key: str
    fig: Any

    def html(self) -> str:
        return self.fig.to_html(full_html=False, include_plotlyjs=False, config=_PLOT_CONFIG)


def _figure(fig: Any, height: int = 420, *, key: str) -> _Fig:
    fig.update_layout(height=height, margin={"l": 60, "r": 20, "t": 60, "b": 40},
                      template="plotly_white",
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0})
    return _Fig(key, fig)


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return f"{float(x):.{digits}g}"
    return html.escape(str(x))


def _pvalue(p: Any) -> str:
    if p is None or not isinstance(p, (int, float)) or not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1,
           marked: Sequence[bool] | None = None, wrap: Sequence[int] = ()) -> str:
    """An HTML table of already-escaped cells; the first ``left`` columns align left, the
    columns in ``wrap`` wrap and align left (long text)."""
    def cls(j: int) -> str:
        return " class=params" if j in wrap else " class=l" if j < left else ""

    def cells(row: Sequence[str], tag: str) -> str:
        return "".join(f"<{tag}{cls(j)}>{c}</{tag}>" for j, c in enumerate(row))
    body = "".join(f"<tr{' class=chosen' if marked and marked[i] else ''}>{cells(r, 'td')}</tr>"
                   for i, r in enumerate(rows))
    return f"<table><thead><tr>{cells(header, 'th')}</tr></thead><tbody>{body}</tbody></table>"


# -- the verdict --------------------------------------------------------------------------------

def _evaluation(s: Storage, study_id: int) -> tuple[dict[str, Any], pd.DataFrame | None] | None:
    """The last completed evaluation's result and test forecasts (None: never evaluated)."""
    done = [e for e in s.evaluations(study_id) if e.result is not None]
    if not done:
        return None
    from netrace.evaluate._model import read_model

    data = s.evaluation_model(done[-1].id)
    test = None
    if data is not None:
        try:
            test = read_model(data).test
        except UserError:  # a model this netrace cannot read: the verdict's numbers still show
            test = None
    return dict(done[-1].result), test


def _verdict_html(result: dict[str, Any]) -> str:
    t = result["test"]
    out = [_p(html.escape(result["verdict"]), "verdict"),
           _p(f"Test part {html.escape(str(t['first']))} … {html.escape(str(t['last']))} "
              f"({t['n']} points), opened {result['openings']} time"
              f"{'s' if result['openings'] != 1 else ''}. Every model below forecast exactly "
              "these points; the networks were chosen and weighed on validation data alone.",
              "note")]
    if result.get("note"):
        out.append(_p(html.escape(result["note"]), "note warn"))
    out.append(_models_table(result))
    spa = result.get("spa") or {}
    if spa:
        out.append(_p("SPA (Hansen's test of superior predictive ability) of every netrace "
                      "candidate and finalist against the best baseline: " + "; ".join(
                          f"{html.escape(k.upper())} against {html.escape(str(v['benchmark']))}"
                          f": p = {_pvalue(v['pvalue'])}" for k, v in spa.items())
                      + ". A small p says some network beats the baseline after the search, "
                      "not only by luck.", "note"))
    blend = result.get("blend") or {}
    if result.get("forecast") == "blend" and blend.get("weights"):
        w = ", ".join(f"{html.escape(k)} {v:.0%}" for k, v in blend["weights"].items()
                      if v and v > 0)
        nested = ("nested: networks chosen without the block they forecast" if blend.get("nested")
                  else f"not nested: {html.escape(str(blend.get('why_not') or ''))}")
        out.append(_p(f"Blend weights ({nested}; loss {html.escape(str(blend.get('loss')))}): "
                      f"{w}.", "note"))
    for one in result.get("series") or []:
        out.append(f"<h3>Series {html.escape(str(one['series']))}</h3>")
        out.append(_p(html.escape(one["verdict"]), "verdict"))
        out.append(_models_table(one))
    return "\n".join(out)


def _models_table(result: dict[str, Any]) -> str:
    models = result["models"]
    metrics: list[str] = []
    losses: list[str] = []
    for m in models:
        metrics += [k for k in m["metrics"] if k not in metrics]
        losses += [k for k in m.get("dm_pvalue") or {} if k not in losses]
    header = ["model", "kind", *metrics, *[f"DM p {k}" for k in losses]]
    rows = [[html.escape(m["name"]), html.escape(m["kind"]),
             *[_num(m["metrics"].get(k)) for k in metrics],
             *[_pvalue((m.get("dm_pvalue") or {}).get(k)) if m["name"] != result["forecast"]
               else "–" for k in losses]] for m in models]
    return (_table(header, rows, left=2, marked=[m["name"] == result["forecast"] for m in models])
            + _p("Highlighted: netrace's forecast. DM p: Diebold-Mariano test of each model "
                 "against it (two-sided; Newey-West variance with Harvey's correction).", "note"))


# -- the test forecasts -------------------------------------------------------------------------

def _forecast_blocks(result: dict[str, Any], test: pd.DataFrame | None,
                     config: Any) -> list[str | _Fig]:
    if test is None or test.empty:
        return [_p("The stored evaluation holds no test forecasts (it was made by an older "
                   "netrace); <code>netrace evaluate STUDY --again</code> stores them.", "note")]
    import plotly.graph_objects as go

    chosen = result["forecast"]
    kinds = {m["name"]: m["kind"] for m in result["models"]}
    primary = next(iter(result.get("spa") or {}), None)
    bench = (result.get("spa") or {}).get(primary, {}).get("benchmark") if primary else None
    horizon = config.task.horizon
    shown_at = ("the forecast's origin: the value it forecasts comes "
                f"{horizon} step{'s' if horizon != 1 else ''} later")
    blocks: list[str | _Fig] = [_p(
                 f"x: {shown_at}. netrace's forecast ({html.escape(chosen)}) with its "
                 "prediction interval (from validation residuals), the best baseline"
                 + (f" ({html.escape(bench)})" if bench else "")
                 + "; click a legend entry to show the other candidates and baselines; drag to "
                 "zoom, double-click to reset.", "note")]
    groups: list[tuple[str | None, pd.DataFrame]] = [(None, test)]
    if "series" in test.columns:
        names = list(pd.unique(test["series"]))
        groups = [(str(n), test[test["series"] == n]) for n in names[:_MAX_SERIES_FIGURES]]
        if len(names) > _MAX_SERIES_FIGURES:
            blocks.append(_p(f"The first {_MAX_SERIES_FIGURES} of {len(names)} series.", "note"))
    others = [c for c in test.columns if c not in ("time", "series", "y", "lower", "upper")
              and pd.api.types.is_numeric_dtype(test[c])]
    for label, part in groups:
        x = part["time"] if "time" in part.columns else np.arange(len(part))
        fig = go.Figure()
        if "lower" in part.columns and "upper" in part.columns:
            fig.add_trace(go.Scatter(x=x, y=part["upper"], mode="lines", line={"width": 0},
                                     name="upper", showlegend=False, hoverinfo="skip"))
            cover = (result.get("interval") or {}).get("coverage")
            fig.add_trace(go.Scatter(
                x=x, y=part["lower"], mode="lines", line={"width": 0}, fill="tonexty",
                fillcolor="rgba(31,119,180,0.18)",
                name=f"interval ({cover:.0%})" if cover else "interval"))
        fig.add_trace(go.Scatter(x=x, y=part["y"], mode="lines", name="actual",
                                 line={"color": "#111", "width": 1.2}))
        fig.add_trace(go.Scatter(x=x, y=part[chosen], mode="lines", name=f"netrace ({chosen})",
                                 line={"color": "#1f77b4", "width": 1.6}))
        if bench and bench in part.columns:
            fig.add_trace(go.Scatter(x=x, y=part[bench], mode="lines", name=f"{bench} (baseline)",
                                     line={"color": "#d62728", "width": 1.2, "dash": "dot"}))
        for name in others:
            if name in (chosen, bench):
                continue
            fig.add_trace(go.Scatter(x=x, y=part[name], mode="lines", visible="legendonly",
                                     name=f"{name} ({kinds.get(name, '')})".replace(" ()", "")))
        fig.update_layout(title=(f"series {label}" if label is not None else None),
                          xaxis={"rangeslider": {"visible": True}},
                          yaxis={"title": result.get("target") or "y"},
                          hovermode="x unified")
        blocks.append(_figure(fig, height=480, key="forecasts" if label is None
                              else f"forecasts/{label}"))
    return blocks


# -- the race -----------------------------------------------------------------------------------

def _ordered(trials: list[TrialRecord], direction: str) -> list[TrialRecord]:
    sign = -1.0 if direction == "maximize" else 1.0
    scored = [t for t in trials if t.best_value is not None and math.isfinite(t.best_value)]
    return sorted(scored, key=lambda t: (sign * t.best_value, t.number))


def _leaderboard_html(rec: Any, trials: list[TrialRecord], top: int) -> str:
    ranked = _ordered(trials, rec.direction)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.value] = counts.get(t.state.value, 0) + 1
    states = ", ".join(f"<span class=swatch style='background:{_STATE_COLOURS.get(k, '#999')}'>"
                       f"</span>{n} {html.escape(k)}" for k, n in counts.items())
    better = "higher" if rec.direction == "maximize" else "lower"
    keys = sorted({k for t in trials for k in t.params})
    fixed = {k: trials[0].params.get(k) for k in keys
             if all(k in t.params and t.params[k] == trials[0].params[k] for t in trials)}
    rows = [[str(i + 1), str(t.number), html.escape(t.state.value), _num(t.best_value),
             str((t.best_epoch or 0) + 1), str(t.epochs), _num(t.worker_id),
             html.escape(", ".join(f"{k}={_num(v, 3)}" for k, v in sorted(t.params.items())
                                   if k not in fixed)),
             html.escape(t.note)] for i, t in enumerate(ranked[:top])]
    same = ("" if not fixed else " The same for every network: " + html.escape(", ".join(
        f"{k}={_num(v, 3)}" for k, v in fixed.items())) + ".")
    return (_p(f"{len(trials)} networks: {states}. The {len(rows)} best by their validation "
               f"score ({better} is better; a network's score is its mean over the folds at its "
               f"best epoch, the epoch counted from 1).{same}", "note")
            + _table(["rank", "trial", "state", "best", "best epoch", "epochs", "worker",
                      "params", "note"], rows, left=0, wrap=(7, 8)))


def _with_gaps(parts: Sequence[tuple[Sequence[Any], Sequence[Any], Sequence[Any]]]
               ) -> tuple[list[Any], list[Any], list[Any]]:
    """Several lines as one trace: x, y and hover text joined with gaps (None) between them."""
    xs: list[Any] = []
    ys: list[Any] = []
    texts: list[Any] = []
    for x, y, text in parts:
        xs += [*x, None]
        ys += [*y, None]
        texts += [*text, None]
    return xs, ys, texts


def _curves_blocks(s: Storage, rec: Any, trials: list[TrialRecord],
                   config: Any) -> list[str | _Fig]:
    import plotly.graph_objects as go

    curves = s.curves(rec.id)
    by_id = {t.id: t for t in trials}
    decisions = s.decisions_of([t.id for t in trials if t.state is TrialState.STOPPED])
    horizon = config.race.max_epochs
    fig = go.Figure()
    values: list[float] = []
    for state in TrialState:
        lines = []
        for tid, ys in curves.items():
            t = by_id.get(tid)
            if t is None or t.state is not state or not len(ys):
                continue
            epochs = np.arange(1, len(ys) + 1)
            y = [float(v) if math.isfinite(v) else None for v in ys]
            values += [v for v in y if v is not None]
            lines.append((epochs, y, [f"trial {t.number} ({state.value})"] * len(ys)))
        if not lines:
            continue
        x, y, text = _with_gaps(lines)
        fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", name=f"{state.value} "
                                 f"({len(lines)})", hovertemplate="%{text}<br>epoch %{x}: "
                                 "%{y:.4g}<extra></extra>", opacity=0.55,
                                 line={"width": 1, "color": _STATE_COLOURS[state.value]}))
    bands = []
    for tid, recs in decisions.items():
        stop = next((d for d in reversed(recs) if d.action == "stop"), None)
        t = by_id.get(tid)
        pred = stop.prediction if stop is not None else None
        if t is None or not pred or "q05" not in pred or tid not in curves:
            continue
        ys = curves[tid]
        last = int(stop.epoch) + 1
        best = float(pred.get("best", ys[stop.epoch]))
        if not (math.isfinite(best) and math.isfinite(pred["q05"]) and
                math.isfinite(pred["q95"])):
            continue
        label = (f"trial {t.number}: stopped after epoch {last}; the rule's forecast of its best "
                 f"by epoch {horizon}: {pred['mean']:.4g} (90% {pred['q05']:.4g} .. "
                 f"{pred['q95']:.4g}), P(beat the leader) {pred.get('p', math.nan):.3g}")
        # the nearest misses first: the highest (lowest) forecast end of the band
        near = pred["q95"] if rec.direction == "maximize" else -pred["q05"]
        bands.append((near, ([last, horizon, horizon, last], [best, pred["q95"], pred["q05"],
                                                               best], [label] * 4)))
    bands.sort(key=lambda b: -b[0])
    shown, hidden = [b for _, b in bands[:_BANDS_SHOWN]], [b for _, b in bands[_BANDS_SHOWN:]]
    for group, name, visible in ((shown, f"the rule's forecast at the stop: the {len(shown)} "
                                  "nearest misses", True),
                                 (hidden, f"the other {len(hidden)} stops", "legendonly")):
        if not group:
            continue
        x, y, text = _with_gaps(group)
        fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", fill="toself",
                                 fillcolor="rgba(255,127,14,0.10)", line={"width": 0.5,
                                 "color": "rgba(255,127,14,0.45)"}, hoveron="fills+points",
                                 hovertemplate="%{text}<extra></extra>", name=name,
                                 visible=visible))
    target = rec.target
    if target is not None and math.isfinite(target):
        fig.add_hline(y=target, line={"dash": "dash", "color": "#444"},
                      annotation_text="target")
    if values:  # the first epochs of a badly started network would squash the rest
        lo, hi = np.percentile(values, [10, 100]) if rec.direction == "maximize" else \
            np.percentile(values, [0, 90])
        pad = 0.05 * (hi - lo or abs(hi) or 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad])
    metric = config.race.metric
    fig.update_layout(xaxis={"title": "epoch"}, yaxis={"title": f"validation {metric}"},
                      hovermode="closest")
    note = _p(f"Every network's validation curve ({html.escape(str(metric))}, the mean over the "
              "folds after each epoch). A network the termination rule stopped ends where it was "
              "stopped; the shaded wedge from its best so far is the 90% band of the best it "
              f"would have reached by epoch {horizon} as the rule forecast it then (shown for "
              f"the {_BANDS_SHOWN} stops whose band reached furthest; the legend shows the "
              "others). The y axis leaves out the worst 10% of values; drag to zoom, "
              "double-click to see all.", "note")
    return [note, _figure(fig, height=520, key="curves")]


def _timeline_blocks(s: Storage, rec: Any, trials: list[TrialRecord]) -> list[str | _Fig]:
    import plotly.graph_objects as go

    rows = s.timeline(rec.id)
    if not rows:
        return [_p("No epoch recorded yet.", "note")]
    worker_of = {t.id: t.worker_id for t in trials}
    maximize = rec.direction == "maximize"
    better = max if maximize else min
    fig = go.Figure()
    n = np.arange(1, len(rows) + 1)
    best_all: list[float | None] = []
    best = None
    per_worker: dict[Any, tuple[list[int], list[float]]] = {}
    wbest: dict[Any, float] = {}
    start = rows[0][0]
    seconds = []
    for k, (when, tid, _epoch, value) in enumerate(rows):
        seconds.append(when - start)
        if math.isfinite(value):
            best = value if best is None else better(best, value)
            w = worker_of.get(tid)
            wbest[w] = value if w not in wbest else better(wbest[w], value)
            xs, ys = per_worker.setdefault(w, ([], []))
            xs.append(k + 1)
            ys.append(wbest[w])
        best_all.append(best)
    fig.add_trace(go.Scatter(x=n, y=best_all, mode="lines", name="best of the race",
                             customdata=np.round(seconds, 1),
                             line={"shape": "hv", "width": 6, "color": "rgba(0,0,0,0.22)"},
                             hovertemplate="%{x} network-epochs, %{customdata} s: best "
                                           "%{y:.4g}<extra></extra>"))
    for w, (xs, ys) in sorted(per_worker.items(), key=lambda kv: str(kv[0])):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"shape": "hv", "width": 1.5},
                                 name=f"worker {w}"))
    if rec.target is not None and math.isfinite(rec.target):
        fig.add_hline(y=rec.target, line={"dash": "dash", "color": "#444"},
                      annotation_text="target")
    finite = [b for b in best_all if b is not None]
    if finite:  # from the first tenth on: the race's first epochs are far from the end
        tail = finite[len(finite) // 10:]
        lo, hi = min(tail), max(tail)
        pad = 0.1 * (hi - lo or abs(hi) or 1.0)
        fig.update_yaxes(range=[lo - pad, hi + pad])
    fig.update_layout(xaxis={"title": "network-epochs spent"},
                      yaxis={"title": "best validation score so far"})
    span = rows[-1][0] - start
    return [_p(f"{len(rows)} network-epochs in {span:.0f} s of wall time. The "
               "best validation score of the whole race after each network-epoch (the wide grey "
               "line); the thin lines the best of each worker's networks (a network is shown "
               "under the worker "
               "that trained it last).", "note"), _figure(fig, height=420, key="timeline")]


def _importance_blocks(rec: Any, trials: list[TrialRecord], config: Any) -> list[str | _Fig]:
    from netrace.race._worker import search_space

    space = search_space(config)
    dists = {k: d for k, d in space.distributions().items() if not d.single()}
    scored = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.STOPPED,
                                               TrialState.CUT)
              and t.best_value is not None and math.isfinite(t.best_value)]
    if len(scored) < 10 or not dists:
        why = (f"only {len(scored)} networks with a score" if len(scored) < 10
               else "the search space has no parameter with more than one value")
        return [_p(f"Not computed: {why} (fANOVA needs at least 10 and a searched "
                   "parameter).", "note")]
    import warnings

    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=rec.direction)
    kept = 0
    for t in scored:
        params = {k: v for k, v in t.params.items() if k in dists}
        try:
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params},
                value=float(t.best_value)))
            kept += 1
        except ValueError:  # a value outside the space (a config edited after the race)
            continue
    common = set(dists)
    for ot in study.get_trials(deepcopy=False):
        common &= set(ot.params)
    left_out = sorted(set(dists) - common)
    if kept < 10 or not common:
        return [_p("Not computed: fewer than 10 networks share a searched parameter.", "note")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    import plotly.graph_objects as go

    names = list(imp)[::-1]
    fig = go.Figure(go.Bar(x=[imp[k] for k in names], y=names, orientation="h",
                           marker={"color": "#1f77b4"},
                           hovertemplate="%{y}: %{x:.3f}<extra></extra>"))
    fig.update_layout(xaxis={"title": "share of the score's variance (fANOVA)"})
    note = (f"How much of the variance of the networks' best validation scores each searched "
            f"hyperparameter explains (Optuna's fANOVA evaluator, a random forest over {kept} "
            "finished networks: complete, stopped by the rule or cut at the end; a stopped "
            "network counts with the score it had reached).")
    if left_out:
        note += (" Left out, as not every network has them (they apply to some models only): "
                 + ", ".join(html.escape(k) for k in left_out) + ".")
    return [_p(note, "note"), _figure(fig, height=max(240, 40 + 32 * len(names)),
                                      key="importance")]


# -- the data -----------------------------------------------------------------------------------

def _data_blocks(config: Any) -> list[str | _Fig]:
    from netrace.data import plan_text, prepare, summary_text

    try:
        prepared = prepare(config)
    except UserError as err:
        return [_p("The data could not be read again for this section: "
                   + html.escape(str(err)), "note warn")]
    out: list[str | _Fig] = [f"<pre>{html.escape(summary_text(prepared))}</pre>"]
    if prepared.warnings:
        out.append("<ul class=warn>" + "".join(f"<li>{html.escape(w)}</li>"
                                               for w in prepared.warnings) + "</ul>")
    out.append(_split_figure(prepared))
    out.append(f"<details><summary>The split plan as a table</summary><pre>"
               f"{html.escape(plan_text(prepared))}</pre></details>")
    return out


def _split_figure(p: Any) -> _Fig:
    """Train, embargo, validation and test of every fold, as bars in time (in sample order
    when the rows have no time)."""
    import plotly.graph_objects as go

    from netrace.data._inspect import runs

    dev = p.dev
    timed = p.time_name is not None and dev.time is not None
    axis = np.unique(dev.time) if timed else np.arange(dev.n)

    def position(idx: np.ndarray) -> np.ndarray:
        return np.unique(np.searchsorted(axis, dev.time[idx])) if timed else np.unique(idx)

    def at(k: int) -> Any:
        v = axis[k]
        return pd.Timestamp(v) if timed else int(v)

    bars: dict[str, list[tuple[Any, Any, str, str]]] = {k: [] for k in _PART_COLOURS}
    labels = []
    for f in dev.folds:
        label = f"fold {f.index + 1}"
        labels.append(label)
        train, valid = position(f.train), position(f.valid)
        for a, b in runs(train):
            bars["train"].append((at(a), at(b), label, f"{len(f.train)} training samples"))
        for a, b in runs(valid):
            bars["valid"].append((at(a), at(b), label, f"{len(f.valid)} validation samples"))
            lo = train[train < a].max() if (train < a).any() else None
            hi = train[train > b].min() if (train > b).any() else None
            if lo is not None and a - lo > 1:
                bars["embargo"].append((at(lo + 1), at(a - 1), label, "embargo (dropped)"))
            if hi is not None and hi - b > 1:
                bars["embargo"].append((at(b + 1), at(hi - 1), label, "embargo (dropped)"))
    labels.append("test")
    if timed and p.holdout.first_time is not None:
        first, last = pd.Timestamp(p.holdout.first_time), pd.Timestamp(p.holdout.last_time)
        bars["embargo"].append((at(len(axis) - 1), first, "test", "embargo (dropped)"))
        bars["test"].append((first, last, "test", f"{p.holdout.n} test samples, sealed"))
    elif not timed:
        bars["test"].append((dev.n, dev.n + p.holdout.n - 1, "test",
                             f"{p.holdout.n} test samples, sealed"))
    fig = go.Figure()
    for part, segments in bars.items():
        if not segments:
            continue
        x: list[Any] = []
        y: list[Any] = []
        text: list[Any] = []
        for a, b, label, what in segments:
            x += [a, b, None]
            y += [label, label, None]
            text += [f"{label}: {what}, {a} .. {b}"] * 2 + [None]
        fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", name=part,
                                 line={"width": 18, "color": _PART_COLOURS[part]},
                                 hovertemplate="%{text}<extra></extra>"))
    fig.update_yaxes(categoryorder="array", categoryarray=labels[::-1])
    fig.update_layout(xaxis={"title": "time of the sample's last input row" if timed
                             else "sample (shuffled order)"})
    return _figure(fig, height=140 + 40 * len(labels), key="split")
