"""Where rows come from: CSV and Parquet files, DataFrames, and built-in real data.

Built-in data is loaded offline from packages that ship it (no download at run time): daily
S&P 500 and NASDAQ OHLCV 1999-2018, the WTI crude oil close 1986-2019 and the VIX 2014-2019
from ``arch.data``, scikit-learn's bundled tabular sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from netrace.data._settings import DataSection
from netrace.errors import UserError
from netrace.vocabulary import PRICE_SOURCES

__all__ = ["RawData", "load_raw", "load_source"]

_DESCRIPTIONS = {
    "sp500": "S&P 500 index, daily OHLCV 1999-2018 (arch.data.sp500)",
    "nasdaq": "NASDAQ Composite index, daily OHLCV 1999-2018 (arch.data.nasdaq)",
    "wti": "WTI crude oil spot price, daily close 1986-2019 (arch.data.wti, FRED DCOILWTICO)",
    "vix": "CBOE VIX index, daily close 2014-2019 (arch.data.vix)",
    "iris": "iris flowers, 150 rows, 3 classes (sklearn.datasets.load_iris)",
    "wine": "wine cultivars, 178 rows, 3 classes (sklearn.datasets.load_wine)",
    "breast_cancer": "breast cancer diagnosis, 569 rows, 2 classes "
                     "(sklearn.datasets.load_breast_cancer)",
    "diabetes": "diabetes progression, 442 rows, regression (sklearn.datasets.load_diabetes)",
    "digits": "8x8 handwritten digits, 1797 rows, 10 classes (sklearn.datasets.load_digits)",
}


@dataclass(frozen=True)
class RawData:
    """A loaded table before any checking: the frame, where it came from, its time column."""

    frame: pd.DataFrame
    origin: str
    time: str | None


def load_source(name: str) -> pd.DataFrame:
    """Load built-in data by name as a DataFrame (prices get a ``Date`` column).

    >>> load_source("sp500").shape
    (5031, 7)
    """
    if name in PRICE_SOURCES:
        import importlib

        frame = importlib.import_module(f"arch.data.{name}").load()
        if name == "wti":  # a price: its close, so that the price recipes find it
            frame = frame.rename(columns={"DCOILWTICO": "Close"})
        # FRED's series (wti, vix) mark the days without a fixing (holidays) as missing: they
        # are not days of the series, so they are dropped rather than filled
        return frame.dropna().reset_index()  # the index is "Date"
    loaders = {"iris": "load_iris", "wine": "load_wine", "breast_cancer": "load_breast_cancer",
               "diabetes": "load_diabetes", "digits": "load_digits"}
    if name not in loaders:
        raise UserError(f"unknown built-in source '{name}'; choose one of "
                        f"{', '.join(_DESCRIPTIONS)}")
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loaders[name])(as_frame=True)
    return bunch.frame.copy()


def load_raw(d: DataSection, frame: pd.DataFrame | None = None, *, origin: str = "<dict>",
             base_dir: Path = Path(".")) -> RawData:
    """The rows ``[data]`` points at (``origin`` names the config in errors, ``base_dir`` is
    where a relative path starts); ``frame`` (a DataFrame the caller already has) wins."""
    if frame is not None:
        if not isinstance(frame, pd.DataFrame):
            raise UserError(f"expected a pandas DataFrame, got {type(frame).__name__}")
        return RawData(frame.reset_index(drop=True).copy(), "DataFrame", d.time)
    if d.source is not None:
        time = d.time
        if d.source in PRICE_SOURCES:
            if time not in (None, "Date"):
                raise UserError(f"{origin}: [data] time = {time!r}, but built-in "
                                f"'{d.source}' has its time in column 'Date'; remove [data] time")
            time = "Date"
        return RawData(load_source(d.source), f"built-in {d.source}: {_DESCRIPTIONS[d.source]}",
                       time)
    if d.path is None:
        raise UserError(f"{origin}: [data] needs 'path' (a CSV or Parquet file) or "
                        "'source' (built-in data such as \"sp500\"); neither is set")
    return RawData(read_table(base_dir / d.path, text=(d.series,) if d.series else ()),
                   d.path, d.time)


def read_table(path: Path, text: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet file, with one clear error per failure.
    Columns named in ``text`` (a panel's series column) are read as written, as text: ticker
    ``0050`` stays ``0050`` and ``NA`` is a name, not a missing value."""
    if not path.exists():
        raise UserError(f"data file '{path}' does not exist; check [data] path (relative paths "
                        "start at the config file's folder)")
    if path.is_dir():
        raise UserError(f"data path '{path}' is a directory; give a CSV or Parquet file")
    if path.stat().st_size == 0:
        raise UserError(f"data file '{path}' is empty (0 bytes); give a file with a header row "
                        "and data rows")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        frame = _read_parquet(path)
    elif any(s in (".csv", ".txt", ".tsv") for s in suffixes):
        frame = _read_csv(path, sep="\t" if ".tsv" in suffixes else ",", text=text)
    else:
        raise UserError(f"data file '{path}' has an unknown format ('{''.join(suffixes)}'); "
                        "netrace reads .csv, .tsv (optionally .gz, .bz2, .zip, .xz) and .parquet")
    if frame.shape[0] == 0:
        raise UserError(f"data file '{path}' has a header but no data rows")
    if frame.shape[1] == 0:
        raise UserError(f"data file '{path}' has no columns")
    return frame


def _read_csv(path: Path, sep: str, text: tuple[str, ...] = ()) -> pd.DataFrame:
    try:
        header = [str(c) for c in pd.read_csv(path, sep=sep, nrows=0).columns] if text else []
        text = tuple(c for c in text if c in header)
        if not text:
            frame = pd.read_csv(path, sep=sep)
        else:  # the text columns as written; every other column's missing values as usual
            from pandas._libs.parsers import STR_NA_VALUES

            frame = pd.read_csv(path, sep=sep, dtype={c: str for c in text},
                                keep_default_na=False,
                                na_values={c: sorted(STR_NA_VALUES) for c in header
                                           if c not in text})
    except pd.errors.EmptyDataError:
        raise UserError(f"data file '{path}' has no columns or rows; give a CSV with a header "
                        "row and data rows") from None
    except pd.errors.ParserError as exc:
        first = str(exc).strip().splitlines()[-1]
        raise UserError(f"data file '{path}' is not a readable CSV: {first}") from None
    except UnicodeDecodeError:
        raise UserError(f"data file '{path}' is not UTF-8 text; save it as UTF-8 CSV") from None
    except (OSError, EOFError, ValueError) as exc:  # a corrupt .gz or .zip
        raise UserError(f"data file '{path}' cannot be read as CSV: {exc}") from None
    _check_separator(path, frame, sep)
    _check_header_rows(path, frame)
    return frame


def _check_header_rows(path: Path, frame: pd.DataFrame) -> None:
    """yfinance's ``download(...).to_csv()`` writes three header rows (Price, Ticker, Date)."""
    first = frame.iloc[:2, 0].astype(str).str.strip().str.lower().tolist()
    if str(frame.columns[0]).strip().lower() == "price" and "ticker" in first:
        raise UserError(f"data file '{path}' has several header rows (Price, Ticker, Date: as "
                        "yfinance writes a download); save it with one header row, e.g. "
                        "pd.read_csv(path, header=[0, 1], index_col=0, skiprows=[2])"
                        ".droplevel(1, axis=1)"
                        ".rename_axis('Date').reset_index().to_csv(new, index=False)")


def _check_separator(path: Path, frame: pd.DataFrame, sep: str) -> None:
    """A file with one column whose name holds ';' (or '|') was written with that separator,
    as European spreadsheets write CSV: say so, rather than report unknown columns later."""
    if frame.shape[1] != 1:
        return
    name = str(frame.columns[0])
    for other in (";", "|", "\t"):
        if other != sep and name.count(other) >= 1:
            shown = "tab" if other == "\t" else repr(other)
            raise UserError(f"data file '{path}' separates its columns with {shown} "
                            f"(header: {name!r}); netrace reads comma-separated .csv and "
                            "tab-separated .tsv: save it with commas (and '.' as the decimal "
                            "point), or as .tsv")


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UserError("reading Parquet needs pyarrow; install it with "
                        "pip install 'netrace[parquet]'") from None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own types for corrupt files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"data file '{path}' is not a readable Parquet file: {first}") from None
    if not isinstance(frame.index, pd.RangeIndex) and any(n is not None
                                                          for n in frame.index.names):
        frame = frame.reset_index()  # a named index (a frame saved with Date as its index)
    return frame
