"""The CLI's table of subcommands: help, version, and replay wired to its own parser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

EXE = str(Path(sys.executable).parent / "netrace")


def test_help_lists_the_commands() -> None:
    out = subprocess.run([EXE, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("data", "run", "status", "evaluate", "predict", "replay"):
        assert f"\n    {cmd} " in out.stdout


@pytest.mark.slow  # two netrace commands
def test_replay_through_the_cli(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for w, goal in (("wa", "max"), ("wb", "min")):
        for c in range(8):
            level = rng.uniform(0.3, 0.9)
            for step in range(1, 26):
                v = level * (1 - np.exp(-step / 5)) + rng.normal(0, 0.005)
                rows.append((f"{w}/{c}", w, goal, step * 10, v if goal == "max" else 1 - v))
    path = tmp_path / "curves.csv"
    pd.DataFrame(rows, columns=["curve_id", "workload", "goal", "step", "value"]).to_csv(
        path, index=False)
    out = subprocess.run([EXE, "replay", str(path), "--rule", "median", "--workers", "2",
                          "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "median" in out.stdout and "wa" in out.stdout and "wb" in out.stdout
    assert (tmp_path / "r.json").exists()
    bad = subprocess.run([EXE, "replay", str(path), "--rule", "lcx"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown rule 'lcx'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_progress_names_the_rule_once() -> None:
    import io

    from netrace.race._progress import Progress, Snapshot

    s = Snapshot("s", "running", "", "maximize", 3, 0, 1, 2, 0, 0, 0.5, 4, 7, 40, 100, 1,
                 rule="median (percentile=25)")
    out = io.StringIO()
    p = Progress("plain", out=out, every=0.0)
    p.update(s)
    p.finish(s)
    lines = out.getvalue().splitlines()
    # the line per update carries what changes; the final summary says which rule ran
    assert lines[0].startswith("networks 3 running") and "rule" not in lines[0]
    assert "rule      median (percentile=25)" in lines[1:]


def test_status_curves_to_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    from netrace.storage import Storage

    Storage(tmp_path / "s.db").create_study("s", direction="maximize", config={})
    out = subprocess.run([EXE, "status", "--storage", str(tmp_path / "s.db"), "--curves",
                          str(tmp_path / "nope" / "c.csv")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "could not write the curves to" in out.stderr
    assert "give a path in a folder that exists and that you can write to" in out.stderr


CONFIG = """
[data]
source = "sp500"
[task]
target = "vol_next"
[race]
population = 2
max_epochs = 2
"""


@pytest.mark.parametrize("workers", ["-2", "0"])
def test_run_refuses_fewer_than_one_worker(tmp_path: Path, workers: str) -> None:
    """A user error before any storage is made or touched: no study is left behind."""
    cfg = tmp_path / "race.toml"
    cfg.write_text(CONFIG)
    out = subprocess.run([EXE, "run", str(cfg), "--workers", workers, "--storage",
                          str(tmp_path / "r.db")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr == (f"netrace: error: --workers must be at least 1 (worker processes to "
                          f"start); got {workers}; leave it out for one per core\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.toml"]


def test_run_race_refuses_fewer_than_one_worker(tmp_path: Path) -> None:
    from netrace.config import load_config
    from netrace.errors import UserError
    from netrace.race import run_race

    cfg = tmp_path / "race.toml"
    cfg.write_text(CONFIG)
    with pytest.raises(UserError, match=r"^workers must be at least 1 \(worker processes to "
                                        r"start\); got -1; pass None for one per core$"):
        run_race(load_config(cfg), storage_url=str(tmp_path / "r.db"), study="s", workers=-1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.toml"]


def test_run_refuses_fewer_than_one_worker_in_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "race.toml"
    cfg.write_text(CONFIG + "workers = 0\n")
    out = subprocess.run([EXE, "run", str(cfg)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr == f"netrace: error: {cfg}: [race] workers must be >= 1, got 0\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.toml"]


@pytest.mark.slow  # two netrace commands
def test_status_of_a_database_that_does_not_exist(tmp_path: Path) -> None:
    """netrace status reads; a mistyped path must not leave a new empty database behind."""
    for args in (["--storage", str(tmp_path / "runs.db")], []):  # [] : netrace.db, the default
        out = subprocess.run([EXE, "status", *args], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        path = args[1] if args else "netrace.db"
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert out.stderr == (f"netrace: error: no study database exists at '{path}'; check "
                              f"the path, or make one with: netrace run CONFIG --storage "
                              f"{path}\n")
    assert list(tmp_path.iterdir()) == []


def test_status_refuses_a_negative_top(tmp_path: Path) -> None:
    from netrace.storage import Storage

    Storage(tmp_path / "s.db").create_study("s", direction="maximize", config={})
    out = subprocess.run([EXE, "status", "--storage", str(tmp_path / "s.db"), "--top", "-1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr == ("netrace: error: --top must be 0 or more (networks to list; 0: none); "
                          "got -1\n")
