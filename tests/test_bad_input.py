"""Every bad input gets one clear message on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from netrace.cli import main
from tests.conftest import make_prices

HEADER = '[task]\ntype = "regression"\ntarget = "vol_next"\nwindow = 5\n'


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp: Path, frame: pd.DataFrame | None = None, config: str | None = None,
          name: str = "prices.csv", data: str | None = None) -> Path:
    if frame is not None:
        frame.to_csv(tmp / name, index=False)
    if data is not None:
        (tmp / name).write_text(data)
    cfg = tmp / "config.toml"
    cfg.write_text(config if config is not None else
                   f'[data]\npath = "{name}"\ntime = "Date"\n{HEADER}')
    return cfg


def expect_error(capsys: pytest.CaptureFixture[str], cfg: Path, pattern: str) -> str:
    code, out, err = run(capsys, "data", "inspect", str(cfg))
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("netrace: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    import re

    assert re.search(pattern, err), err
    return err


def test_good_file_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "data", "inspect", str(write(tmp_path, make_prices(300))))
    assert code == 0, err
    assert "split plan: holdout" in out and "embargo" in out


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(capsys, tmp_path / "nope.toml", r"config file '.*nope.toml' does not exist")


def test_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(capsys, write(tmp_path), r"data file '.*prices.csv' does not exist; check "
                                          r"\[data\] path")


def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(capsys, write(tmp_path, data=""), r"data file '.*' is empty \(0 bytes\)")


def test_header_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expect_error(capsys, write(tmp_path, data="Date,Open,High,Low,Close,Volume\n"),
                 r"has a header but no data rows")


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, data="x", name="prices.xlsx",
                config=f'[data]\npath = "prices.xlsx"\ntime = "Date"\n{HEADER}')
    expect_error(capsys, cfg, r"unknown format \('.xlsx'\); netrace reads .csv")


def test_corrupt_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, data="this is not parquet", name="p.parquet",
                config=f'[data]\npath = "p.parquet"\ntime = "Date"\n{HEADER}')
    expect_error(capsys, cfg, r"'.*p.parquet' is not a readable Parquet file")


def test_parquet_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_prices(300).to_parquet(tmp_path / "p.parquet")
    cfg = write(tmp_path, config=f'[data]\npath = "p.parquet"\ntime = "Date"\n{HEADER}')
    code, out, err = run(capsys, "data", "inspect", str(cfg))
    assert code == 0, err


def test_unknown_feature_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, make_prices(300), config='[data]\npath = "prices.csv"\ntime = "Date"\n'
                + HEADER + 'features = ["log_return", "Clsoe"]\n')
    expect_error(capsys, cfg, r"unknown column or recipe 'Clsoe' in \[task\] features; did you "
                              r"mean 'Close'\?")


def test_unknown_target_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, make_prices(300), config='[data]\npath = "prices.csv"\ntime = "Date"\n'
                '[task]\ntarget = "vol_nxt"\n')
    expect_error(capsys, cfg, r"unknown target column 'vol_nxt' in \[task\] target; did you "
                              r"mean 'vol_next'\?")


def test_unknown_time_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, make_prices(300), config='[data]\npath = "prices.csv"\ntime = "date"\n'
                + HEADER)
    expect_error(capsys, cfg, r"unknown column 'date' in \[data\] time; did you mean 'Date'\?")


def test_non_numeric_feature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f["sector"] = "tech"
    cfg = write(tmp_path, f, config='[data]\npath = "prices.csv"\ntime = "Date"\n' + HEADER
                + 'features = ["log_return", "sector"]\n')
    expect_error(capsys, cfg, r"feature column 'sector' is not numeric: row 0 \(2001-01-01\) "
                              r"holds 'tech'; list it under \[task\] categorical")


def test_categorical_is_one_hot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f["regime"] = np.where(np.arange(300) % 3 == 0, "calm", "busy")
    cfg = write(tmp_path, f, config='[data]\npath = "prices.csv"\ntime = "Date"\n' + HEADER
                + 'features = ["log_return", "regime"]\ncategorical = ["regime"]\n')
    code, out, err = run(capsys, "data", "inspect", str(cfg))
    assert code == 0, err
    assert "regime (one-hot)" in out


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: float) -> None:
    f = make_prices(300)
    f.loc[[10, 11, 50], "Close"] = bad
    err = expect_error(capsys, write(tmp_path, f),
                       r"column 'Close' has 3 missing or infinite value\(s\), first at row\(s\) "
                       r"10 \(2001-01-15\), 11 \(2001-01-16\), 50 \(2001-03-12\).*set \[data\] "
                       r"fill = \"ffill\".* or \"drop\"")
    assert "(3 row(s) affected in all)" in err


@pytest.mark.parametrize("fill", ["ffill", "drop"])
def test_fill_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], fill: str) -> None:
    f = make_prices(300)
    f.loc[[10, 50], "Close"] = np.nan
    cfg = write(tmp_path, f, config=f'[data]\npath = "prices.csv"\ntime = "Date"\n'
                f'fill = "{fill}"\n' + HEADER)
    code, out, err = run(capsys, "data", "inspect", str(cfg))
    assert code == 0, err
    assert ("2 dropped by fill" in out) == (fill == "drop")


def test_ffill_cannot_fill_first_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f.loc[0, "High"] = np.nan
    cfg = write(tmp_path, f, config='[data]\npath = "prices.csv"\ntime = "Date"\n'
                'fill = "ffill"\n' + HEADER)
    expect_error(capsys, cfg, r"fill = \"ffill\" cannot fill the first row\(s\) 0 \(2001-01-01\)")


def test_unsorted_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f.loc[[40, 41], "Date"] = f.loc[[41, 40], "Date"].to_numpy()
    expect_error(capsys, write(tmp_path, f),
                 r"time column 'Date' is not sorted: row 41 \(2001-02-26\) comes after row 40 "
                 r"\(2001-02-27\); sort the data by 'Date'")


def test_duplicate_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f.loc[41, "Date"] = f.loc[40, "Date"]
    expect_error(capsys, write(tmp_path, f),
                 r"duplicate timestamp: 2001-02-26 at rows 40 and 41; keep one row per time")


def test_unparseable_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300).astype({"Date": str})
    f.loc[7, "Date"] = "yesterday"
    expect_error(capsys, write(tmp_path, f),
                 r"time column 'Date' has values that are not dates or times, first at row 7: "
                 r"'yesterday'")


def test_too_short_names_rows_needed(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg_text = ('[data]\npath = "prices.csv"\ntime = "Date"\n' + HEADER
                + '[split]\nscheme = "walk_forward"\nfolds = 3\n')
    err = expect_error(capsys, write(tmp_path, make_prices(60), cfg_text),
                       r"the data has 60 usable rows, too few: .* need at least (\d+) rows")
    import re

    need = int(re.search(r"need at least (\d+) rows", err).group(1))
    # the figure is exact: one row fewer fails, that many works
    expect_error(capsys, write(tmp_path, make_prices(need - 1), cfg_text), "too few")
    code, _, err2 = run(capsys, "data", "inspect", str(write(tmp_path, make_prices(need),
                                                             cfg_text)))
    assert code == 0, err2


def test_binary_with_three_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "iris"\n[task]\ntype = "binary"\ntarget = "target"\n')
    expect_error(capsys, cfg, r"type = \"binary\" needs exactly 2 classes in target 'target', "
                              r"found 3: 0, 1, 2; use type = \"multiclass\"")


def test_recipe_type_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "sp500"\n[task]\ntype = "regression"\n'
                   'target = "direction_next"\n')
    expect_error(capsys, cfg, r"'direction_next' is a binary target, but \[task\] type = "
                              r"'regression'; set type = \"binary\"")


def test_nonpositive_price(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = make_prices(300)
    f.loc[33, "Close"] = 0.0
    expect_error(capsys, write(tmp_path, f), r"column 'Close' must be positive for log-price "
                                             r"recipes, but row 33 has 0.0")


def test_usage_error_is_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "data", "inspekt", "x.toml")
    assert code == 2 and "invalid choice: 'inspekt'" in err and "Traceback" not in err


def test_real_process_exit_code_and_no_traceback(tmp_path: Path) -> None:
    """The installed console script, as a user runs it."""
    f = make_prices(300)
    f.loc[5, "Close"] = np.nan
    cfg = write(tmp_path, f)
    exe = Path(sys.executable).parent / "netrace"
    proc = subprocess.run([str(exe), "data", "inspect", str(cfg)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("netrace: error: column 'Close' has 1 missing")
    assert "Traceback" not in proc.stderr


def test_iid_target_as_feature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\nsource = "diabetes"\n[task]\ntarget = "target"\n'
                   'features = ["bmi", "target"]\n')
    expect_error(capsys, cfg, r"features includes the target column 'target'; on i.i.d. rows "
                              r"that is the answer itself")


def test_numeric_time_and_column_target(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """A plain numeric time index and a column target read horizon rows ahead."""
    rng = np.random.default_rng(0)
    f = pd.DataFrame({"t": np.arange(200) * 10, "x": rng.normal(size=200),
                      "y": rng.normal(size=200)})
    f.to_csv(tmp_path / "d.csv", index=False)
    cfg = tmp_path / "c.toml"
    cfg.write_text('[data]\npath = "d.csv"\ntime = "t"\n[task]\ntarget = "y"\nwindow = 3\n'
                   'horizon = 2\n')
    code, out, err = run(capsys, "data", "inspect", str(cfg))
    assert code == 0, err
    assert "features  x, y" in out  # past values of the target are fair inputs in time
    from netrace.config import load_config
    from netrace.data import prepare

    p = prepare(load_config(cfg))
    np.testing.assert_array_equal(p.dev.y, f.y.to_numpy()[p.dev.anchors + 2])


def test_search_key_that_never_applies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write(tmp_path, make_prices(300), config=(
        f'[data]\npath = "prices.csv"\ntime = "Date"\n{HEADER}'
        '[search.space]\nmodel = ["mlp", "cnn"]\nhidden_size = 16\n'))
    expect_error(capsys, cfg, r"hidden_size applies only to model = lstm or gru, which this "
                              r"space never proposes \(model: mlp, cnn\); remove hidden_size")
