"""Data checks on real-world files: warnings naming the dates (suspected unadjusted splits,
zero-range bars, an adjusted close standing in for the close) and errors that diagnose
day-first dates and money-formatted numbers, through the CLI as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.config import config_from_dict
from netrace.data import data_warnings, load_source, prepare
from tests.conftest import make_prices

EXE = str(Path(sys.executable).parent / "netrace")
WARN = "netrace: warning: "


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *argv], cwd=cwd, capture_output=True, text=True, timeout=300)


def write(tmp: Path, frame: pd.DataFrame, *, target: str = "vol_next", data: str = "",
          extra: str = "") -> Path:
    frame.to_csv(tmp / "prices.csv", index=False)
    cfg = tmp / "config.toml"
    kind = "binary" if target == "direction_next" else "regression"
    cfg.write_text(f'[data]\npath = "prices.csv"\ntime = "Date"\n{data}'
                   f'[task]\ntype = "{kind}"\ntarget = "{target}"\nwindow = 5\n{extra}')
    return cfg


def warnings_of(stderr: str) -> list[str]:
    return [line[len(WARN):] for line in stderr.splitlines() if line.startswith(WARN)]


def split_at(frame: pd.DataFrame, row: int, ratio: int = 2) -> pd.DataFrame:
    """An unadjusted ratio:1 split from ``row`` on: prices divided, volume multiplied."""
    out = frame.copy()
    for c in ("Open", "High", "Low", "Close"):
        out.loc[row:, c] = out.loc[row:, c] / ratio
    out.loc[row:, "Volume"] = out.loc[row:, "Volume"] * ratio
    return out


# --- unadjusted splits --------------------------------------------------------------------

def test_split_is_flagged_with_its_date_at_inspect(tmp_path: Path) -> None:
    frame = split_at(make_prices(300), 150)
    day = frame["Date"].iloc[150].strftime("%Y-%m-%d")
    before = frame["Date"].iloc[149].strftime("%Y-%m-%d")
    out = cli("data", "inspect", str(write(tmp_path, frame)), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "split plan" in out.stdout
    warns = warnings_of(out.stderr)
    assert len(warns) == 1, out.stderr
    assert warns[0].startswith(f"suspected unadjusted split on {day}: 'Close' moves by -50% "
                               f"from {before} while the median volume moves x")
    assert "as a 2:1 split does; use split-adjusted prices" in warns[0]


def test_split_pure_function_ratios_and_volume() -> None:
    base = make_prices(200, seed=3)
    assert data_warnings(base, "Date") == []
    three = data_warnings(split_at(base, 80, ratio=3), "Date")
    assert len(three) == 1 and "moves by -6" in three[0] and "3:1 split" in three[0]
    # a reverse split: prices up 2x, volume halved
    rev = base.copy()
    rev.loc[120:, "Close"] *= 2
    rev.loc[120:, "Volume"] = rev.loc[120:, "Volume"] // 2
    w = data_warnings(rev, "Date")
    assert len(w) == 1 and "moves by +9" in w[0] and "1:2 split" in w[0]
    # a crash of -50% with volume unchanged is a market move, not a split
    crash = base.copy()
    crash.loc[120:, "Close"] /= 2
    assert [m for m in data_warnings(crash, "Date") if "split" in m] == []
    # without a volume column, the price alone flags it
    no_volume = crash.drop(columns="Volume")
    w = data_warnings(no_volume, "Date")
    assert len(w) == 1 and "(no volume column to confirm it)" in w[0]
    assert base["Date"].iloc[120].strftime("%Y-%m-%d") in w[0]
    # -40% is not near a split ratio
    far = no_volume.copy()
    far.loc[120:, "Close"] *= 1.2
    assert data_warnings(far, "Date") == []


def test_split_in_a_panel_is_looked_at_per_series() -> None:
    a, b = make_prices(100, seed=1), make_prices(100, seed=2)
    b["Close"] = a["Close"] / 2  # a series at half the other's price: no jump within either
    panel = pd.concat([a.assign(ticker="A"), b.assign(ticker="B")], ignore_index=True)
    assert data_warnings(panel, "Date", "ticker") == []
    b = split_at(b, 50)
    panel = pd.concat([a.assign(ticker="A"), b.assign(ticker="B")], ignore_index=True)
    w = data_warnings(panel, "Date", "ticker")
    assert len(w) == 1 and w[0].startswith("suspected unadjusted split in series 'B' on ")


@pytest.mark.parametrize("source", ["sp500", "nasdaq"])
def test_builtin_data_has_no_warnings(source: str) -> None:
    assert data_warnings(load_source(source), "Date") == []
    cfg = config_from_dict({"data": {"source": source}, "task": {"target": "vol_next"}})
    assert prepare(cfg).warnings == ()


# --- zero-range bars ----------------------------------------------------------------------

def test_zero_range_bars_are_flagged_with_dates(tmp_path: Path) -> None:
    frame = make_prices(300)
    rows = [10, 11, 40, 200, 201, 250, 299]
    frame.loc[rows, "High"] = frame.loc[rows, "Low"]
    frame.loc[rows, ["Open", "Close"]] = frame.loc[rows, ["Low", "Low"]].to_numpy()
    dates = [frame["Date"].iloc[r].strftime("%Y-%m-%d") for r in rows]
    out = cli("data", "inspect", str(write(tmp_path, frame, target="return_next")),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert warnings_of(out.stderr) == [
        f"zero-range bars: 7 row(s) have 'High' equal to 'Low' ({', '.join(dates[:5])} and 2 "
        "more); their range and high/low volatility are 0: check the source (stale or filled "
        "quotes, holidays) or drop those rows"]


def test_no_warnings_on_clean_data_and_iid_rows() -> None:
    assert data_warnings(make_prices(300), "Date") == []
    assert data_warnings(pd.DataFrame({"x": [1.0, 1.0], "y": [2.0, 3.0]}), None) == []


# --- adjusted close without close --------------------------------------------------------

def test_adj_close_without_close_races_recipes_on_it(tmp_path: Path) -> None:
    frame = make_prices(300).rename(columns={"Close": "Adj Close"})
    cfg = write(tmp_path, frame, target="return_next")
    out = cli("data", "inspect", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert warnings_of(out.stderr) == [
        "the data has no close column; 'Adj Close' (the adjusted close) is used as the close "
        "for the price recipes (returns, volatility, direction); rename a raw close column to "
        "'Close' to use it instead"]
    # the default features are the price recipes, not the raw columns
    assert "features  log_return, range, volume_change, rolling_vol_20" in out.stdout
    assert "Adj Close" not in out.stdout.split("features", 1)[1].splitlines()[0]
    # the target is the adjusted close's return
    p = prepare(config_from_dict({"data": {"time": "Date"}, "task": {"target": "return_next"}}),
                frame)
    ref = prepare(config_from_dict({"data": {"time": "Date"}, "task": {"target": "return_next"}}),
                  make_prices(300))
    np.testing.assert_array_equal(p.dev.y, ref.dev.y)
    assert p.warnings and ref.warnings == ()


@pytest.mark.parametrize("name", ["adj_close", "Adj_Close", "ADJ CLOSE"])
def test_adj_close_spellings(name: str) -> None:
    frame = make_prices(50).rename(columns={"Close": name})
    w = data_warnings(frame, "Date")
    assert len(w) == 1 and w[0].startswith(f"the data has no close column; '{name}'")
    # with a close column, an adjusted close is a column like any other
    assert data_warnings(make_prices(50).assign(**{name: 1.0}), "Date") == []


@pytest.mark.slow
def test_adj_close_warning_at_run(tmp_path: Path) -> None:
    frame = make_prices(300).rename(columns={"Close": "Adj Close"})
    cfg = write(tmp_path, frame, target="return_next",
                extra="[race]\npopulation = 2\nmax_epochs = 2\n")
    out = cli("run", str(cfg), "--workers", "1", "--quiet", "--storage",
              str(tmp_path / "r.db"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert warnings_of(out.stderr) == [
        "the data has no close column; 'Adj Close' (the adjusted close) is used as the close "
        "for the price recipes (returns, volatility, direction); rename a raw close column to "
        "'Close' to use it instead"]
    assert out.stderr.index(WARN) == 0  # before anything the race prints


# --- day-first dates ----------------------------------------------------------------------

def test_day_first_dates_get_the_suggestion(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame["Date"] = frame["Date"].dt.strftime("%d/%m/%Y")
    out = cli("data", "inspect", str(write(tmp_path, frame)), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("netrace: error: time column 'Date' holds day-first dates "
                                 "(such as '01/01/2001'): read month-first, ")
    assert "not sorted" not in out.stderr
    assert out.stderr.endswith("but read day-first they are in increasing order; set [data] "
                               "date_format = \"%d/%m/%Y\"\n")


def test_day_first_dates_that_fail_month_first(tmp_path: Path) -> None:
    """Days past the 12th from the first rows on: month-first fails on the very first."""
    frame = make_prices(300, start="2001-01-15")
    frame["Date"] = frame["Date"].dt.strftime("%d-%m-%Y")
    out = cli("data", "inspect", str(write(tmp_path, frame)), cwd=tmp_path)
    assert out.returncode == 2
    assert "holds day-first dates (such as '15-01-2001')" in out.stderr
    assert out.stderr.endswith("set [data] date_format = \"%d-%m-%Y\"\n")


def test_date_format_reads_day_first_dates(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame["Date"] = frame["Date"].dt.strftime("%d/%m/%Y")
    out = cli("data", "inspect", str(write(tmp_path, frame, data='date_format = "%d/%m/%Y"\n')),
              cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    assert "2001-01-01 .. 2002-02-22 (time column 'Date')" in out.stdout


def test_wrong_date_format_names_row_and_format(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame["Date"] = frame["Date"].dt.strftime("%d/%m/%Y")
    out = cli("data", "inspect", str(write(tmp_path, frame, data='date_format = "%m/%d/%Y"\n')),
              cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("netrace: error: time column 'Date' does not match [data] "
                                 "date_format = '%m/%d/%Y': row 10 holds '15/01/2001' (")
    assert "fix date_format to the way the dates are written" in out.stderr
    cfg = write(tmp_path, frame, data='date_format = "dd/mm/yyyy"\n')
    out = cli("data", "inspect", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("netrace: error: [data] date_format = 'dd/mm/yyyy' has no "
                                 "strptime code; write it with % codes")


def test_truly_unsorted_dates_still_say_not_sorted(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame = frame.iloc[[1, 0] + list(range(2, 300))]
    frame["Date"] = frame["Date"].dt.strftime("%Y-%m-%d")
    out = cli("data", "inspect", str(write(tmp_path, frame)), cwd=tmp_path)
    assert out.returncode == 2
    assert "time column 'Date' is not sorted: row 1 (2001-01-01) comes after row 0" in out.stderr


# --- money-formatted numbers --------------------------------------------------------------

@pytest.mark.parametrize("value", ["$100.25", "1,234.5", "100.25 USD", "(12.5)", "EUR 1,000"])
def test_money_formatted_feature_gets_cleaning_advice(tmp_path: Path, value: str) -> None:
    frame = make_prices(300)
    frame["Cash"] = frame["Close"].astype(object)
    frame.loc[3, "Cash"] = value
    cfg = write(tmp_path, frame, target="vol_next", extra='features = ["Cash", "range"]\n')
    out = cli("data", "inspect", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"netrace: error: feature column 'Cash' is not numeric: row 3 "
                                 f"(2001-01-04) holds {value!r}, a number written with a "
                                 "currency sign, thousands separators or parentheses; write "
                                 "it as plain numbers")
    assert "re-export the file without number formatting" in out.stderr
    assert "pd.to_numeric(" in out.stderr
    assert "one-hot" not in out.stderr


def test_money_formatted_price_column(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame["Close"] = frame["Close"].map(lambda v: f"${v:,.2f}")
    out = cli("data", "inspect", str(write(tmp_path, frame, target="return_next")),
              cwd=tmp_path)
    assert out.returncode == 2
    shown = f"${make_prices(300)['Close'].iloc[0]:,.2f}"
    assert f"column 'Close' is not numeric: row 0 (2001-01-01) holds '{shown}'" in out.stderr
    assert "a number written with a currency sign" in out.stderr


def test_the_cleaning_advice_works() -> None:
    """The pandas line the message suggests turns the examples into numbers."""
    from netrace.data._checks import check_numeric
    from netrace.errors import UserError

    df = pd.DataFrame({"Close": ["$100.25", "1,234.5", "100.25 USD", "(12.5)", "7", "¥ 3"]})
    with pytest.raises(UserError, match="a number written with a currency sign") as info:
        check_numeric(df, ["Close"], None, "feature")
    line = str(info.value).split("clean the column in pandas, e.g. ", 1)[1]
    exec(line, {"pd": pd, "df": df})
    assert df["Close"].tolist() == [100.25, 1234.5, 100.25, -12.5, 7.0, 3.0]


def test_plain_text_still_suggests_one_hot(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame["sector"] = "tech"
    cfg = write(tmp_path, frame, extra='features = ["sector", "range"]\n')
    out = cli("data", "inspect", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert "list it under [task] categorical to one-hot encode it" in out.stderr


# --- files as vendors write them ----------------------------------------------------------

def test_dates_with_daylight_saving_offsets_are_read(tmp_path: Path) -> None:
    # a vendor's local midnight: -05:00 in winter, -04:00 in summer (pandas alone refuses)
    frame = make_prices(300, start="2010-01-01")
    local = frame["Date"].dt.tz_localize("America/New_York")
    frame["Date"] = local.map(lambda t: t.isoformat(sep=" "))
    assert frame["Date"].str.endswith("-05:00").any() and frame["Date"].str.endswith("-04:00").any()
    p = prepare(config_from_dict({"data": {"path": str(write(tmp_path, frame).parent /
                                                     "prices.csv"), "time": "Date"},
                                  "task": {"target": "vol_next", "window": 5}}))
    # the same days, in order, as the one-offset file gives
    plain = prepare(config_from_dict({"data": {"time": "Date"},
                                      "task": {"target": "vol_next", "window": 5}}),
                    make_prices(300, start="2010-01-01"))
    np.testing.assert_array_equal(p.dev.y, plain.dev.y)
    got = pd.DatetimeIndex(p.dev.time).tz_convert("America/New_York").normalize()
    np.testing.assert_array_equal(got.tz_localize(None), pd.DatetimeIndex(plain.dev.time))


def test_a_semicolon_file_says_how_to_save_it(tmp_path: Path) -> None:
    make_prices(100).to_csv(tmp_path / "prices.csv", index=False, sep=";", decimal=",")
    (tmp_path / "c.toml").write_text('[data]\npath = "prices.csv"\ntime = "Date"\n'
                                     '[task]\ntarget = "vol_next"\nwindow = 5\n')
    out = cli("data", "inspect", "c.toml", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "separates its columns with ';' (header: 'Date;Open;" in out.stderr
    assert "save it with commas (and '.' as the decimal point), or as .tsv" in out.stderr


def test_a_parquet_frame_saved_with_its_date_index(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    frame = make_prices(200)
    frame.set_index("Date").to_parquet(tmp_path / "prices.parquet")  # as yfinance frames are
    p = prepare(config_from_dict({"data": {"path": "prices.parquet", "time": "Date"},
                                  "task": {"target": "vol_next", "window": 5}},
                                 base_dir=tmp_path))
    q = prepare(config_from_dict({"data": {"time": "Date"},
                                  "task": {"target": "vol_next", "window": 5}}), frame)
    np.testing.assert_array_equal(p.dev.y, q.dev.y)


def test_tickers_are_names_as_written(tmp_path: Path) -> None:
    # "0050" keeps its zero and "NA" is a ticker, not a missing value; an empty cell is one
    parts = [make_prices(150, seed=i).assign(ticker=t)
             for i, t in enumerate(["0050", "NA", "7203"])]
    long = pd.concat(parts)
    long.to_csv(tmp_path / "panel.csv", index=False)
    cfg = {"data": {"path": "panel.csv", "time": "Date", "series": "ticker"},
           "task": {"target": "vol_next", "window": 5}, "split": {"folds": 2}}
    p = prepare(config_from_dict(cfg, base_dir=tmp_path))
    assert p.series_names == ("0050", "7203", "NA")
    # a parquet file's integer tickers name the same series as a CSV's text
    pytest.importorskip("pyarrow")
    long.assign(ticker=long["ticker"].replace({"NA": "1"}).astype(int)).to_parquet(
        tmp_path / "panel.parquet")
    cfg["data"]["path"] = "panel.parquet"
    assert prepare(config_from_dict(cfg, base_dir=tmp_path)).series_names == ("1", "50", "7203")
    long.iloc[[3]].assign(ticker="").pipe(lambda r: pd.concat([long, r])).to_csv(
        tmp_path / "panel.csv", index=False)
    cfg["data"]["path"] = "panel.csv"
    with pytest.raises(Exception, match="series column 'ticker' is empty at row"):
        prepare(config_from_dict(cfg, base_dir=tmp_path))


def test_ffill_over_a_long_gap_is_a_warning(tmp_path: Path) -> None:
    frame = make_prices(300)
    frame.loc[200:, "Close"] = np.nan  # stopped trading: its close no longer comes
    cfg = write(tmp_path, frame, target="vol_close_next", data='fill = "ffill"\n')
    out = cli("data", "inspect", str(cfg), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (line,) = [w for w in warnings_of(out.stderr) if "ffill" in w]
    assert "carries column 'Close' over 100 rows in a row" in line and "fill = \"drop\"" in line
    frame.loc[200:, "Close"] = frame.loc[199, "Close"]  # a gap of 3 rows: no warning
    frame.loc[100:102, "Close"] = np.nan
    frame.loc[200:, "Close"] = make_prices(300).loc[200:, "Close"]
    out = cli("data", "inspect", str(write(tmp_path, frame, target="vol_close_next",
                                           data='fill = "ffill"\n')), cwd=tmp_path)
    assert out.returncode == 0 and not [w for w in warnings_of(out.stderr) if "ffill" in w]


def test_a_yfinance_download_with_three_header_rows(tmp_path: Path) -> None:
    frame = make_prices(150).set_index("Date")
    frame.columns = pd.MultiIndex.from_product([frame.columns, ["AAPL"]],
                                               names=["Price", "Ticker"])
    frame.to_csv(tmp_path / "prices.csv")  # as yfinance's download(...).to_csv() writes it
    assert (tmp_path / "prices.csv").read_text().splitlines()[2].startswith("Date,")
    (tmp_path / "c.toml").write_text('[data]\npath = "prices.csv"\ntime = "Date"\n'
                                     '[task]\ntarget = "vol_next"\nwindow = 5\n')
    out = cli("data", "inspect", "c.toml", cwd=tmp_path)
    assert out.returncode == 2 and "has several header rows (Price, Ticker, Date" in out.stderr
    # the fix the message gives works
    fix = out.stderr.split("e.g. ")[1].strip().replace("path", "'prices.csv'").replace(
        "to_csv(new", "to_csv('fixed.csv'")
    subprocess.run([sys.executable, "-c", f"import pandas as pd; {fix}"], cwd=tmp_path,
                   check=True)
    (tmp_path / "c.toml").write_text((tmp_path / "c.toml").read_text().replace(
        "prices.csv", "fixed.csv"))
    assert cli("data", "inspect", "c.toml", cwd=tmp_path).returncode == 0
