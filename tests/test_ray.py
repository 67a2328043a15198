"""The race on a real Ray head on 127.0.0.1 (``--backend ray``): workers are Ray actors; nothing
of Ray listens beyond loopback. (The backend contract, a SIGKILLed worker's networks continuing
on another included, runs on Ray and on local processes alike: tests/test_backends.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from netrace.storage import Storage, TrialState, WorkerState
from tests.servers import RAY_ENV, RayHead, free_port, listening, ray_env
from tests.test_race import EXE, _wait_epochs, check_books, settled, write

RAY_PROCESSES = ("gcs_server", "raylet", "ray::", "netrace")
pytestmark = pytest.mark.slow  # a Ray head, races on it


def _start(cfg: Path, address: str, workers: int = 2) -> subprocess.Popen:
    return subprocess.Popen([EXE, "run", str(cfg), "--quiet", "--backend", "ray", "--workers",
                             str(workers)], cwd=cfg.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ray_env(address))


def _loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0].strip("[]")
    return host == "::1" or host.startswith(("127.", "::ffff:127."))


def test_race_on_ray_actors_stays_on_loopback(ray_head: RayHead, tmp_path: Path) -> None:
    # long enough that both actors train (each imports torch and prepares the data first)
    cfg = write(tmp_path, rule="median", population=8, epochs=10, budget=1200)
    proc = _start(cfg, ray_head.address)
    s = _wait_epochs(tmp_path / "netrace.db", "race", 1)
    st = s.get_study("race")
    seen = listening(RAY_PROCESSES)  # the head, its raylet, and the running actors
    workers = s.workers(st.id)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "budget spent" in out
    assert len({p for _, p in seen}) >= 3 and any("raylet" in p for _, p in seen), seen
    assert all(_loopback(a) for a, _ in seen), [x for x in seen if not _loopback(x[0])]
    # the workers were Ray's processes, not children of the netrace command
    for w in workers:
        assert w.pid != proc.pid
    trials = s.trials(st.id)
    assert [w.state for w in s.workers(st.id)] == [WorkerState.DONE] * 2
    # both actors trained networks (a slot refilled as the race ended is back in the queue)
    assert len({t.worker_id for t in trials if t.epochs > 0}) == 2
    assert all(settled(t) for t in trials)
    check_books(s, "race")
    assert s.best_trial(st.id).best_value > 0


def test_a_program_that_imported_ray_first_still_finds_a_loopback_head(
        ray_head: RayHead, tmp_path: Path) -> None:
    # Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported: imported before netrace
    # sets it, a driver looked for the head off loopback and waited without end
    cfg = write(tmp_path, rule="none", population=4, epochs=2, budget=16)
    code = ("import sys, ray\n"
            "from ray._private import ray_constants\n"
            "assert ray_constants.ENABLE_RAY_CLUSTER  # read before netrace could set it\n"
            "from netrace.cli import main\n"
            f"sys.exit(main(['run', {str(cfg)!r}, '--quiet', '--backend', 'ray', "
            "'--workers', '1']))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240, env=ray_env(ray_head.address))
    assert proc.returncode == 0, proc.stderr
    assert "budget spent" in proc.stdout
    s = Storage(tmp_path / "netrace.db")
    assert s.best_trial(s.get_study("race").id) is not None


def test_no_ray_head_is_one_clear_error(tmp_path: Path) -> None:
    cfg = write(tmp_path, rule="none", budget=20, epochs=2)
    env = {**ray_env(f"127.0.0.1:{free_port()}"), **RAY_ENV}
    proc = subprocess.run([EXE, "run", str(cfg), "--quiet", "--backend", "ray"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2
    # the answer is netrace's own probe of the address, before ray.init (which would wait for a
    # head that never answers): the probe's message, not ray.init's "found no Ray cluster"
    assert "no Ray cluster answers at 127.0.0.1:" in proc.stderr and "ray start --head" in proc.stderr
    assert "found no Ray cluster" not in proc.stderr
    assert "Traceback" not in proc.stderr
    # nothing was lost: the study was created and can run on local workers
    assert Storage(tmp_path / "netrace.db").find_study("race") is not None


def test_ray_workers_share_a_postgresql_study(ray_head: RayHead, postgres,  # noqa: ANN001
                                              tmp_path: Path) -> None:
    """The several-machines layout on one machine: Ray actors, one PostgreSQL study."""
    url = postgres.new_database("ray_race")
    cfg = write(tmp_path, rule="hyperband", population=8, epochs=9, budget=400)
    proc = subprocess.run([EXE, "run", str(cfg), "--quiet", "--backend", "ray", "--workers", "2",
                           "--storage", url], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=ray_env(ray_head.address), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "budget spent" in proc.stdout
    s = Storage(url)
    st = s.get_study("race")
    trials = s.trials(st.id)
    assert len(s.workers(st.id)) == 2
    assert len({t.worker_id for t in trials if t.epochs > 0}) == 2
    assert all(settled(t) for t in trials)
    check_books(s, "race")
    assert not (tmp_path / "netrace.db").exists()  # nothing went to a local file


def test_ctrl_c_stops_ray_actors_gracefully(ray_head: RayHead, tmp_path: Path) -> None:
    """Ctrl-C reaches the actors through the stop flag: they end after their epoch and hand
    their networks back to the queue; the study resumes on local workers."""
    cfg = write(tmp_path, rule="none", budget=1_000_000, epochs=8)
    proc = _start(cfg, ray_head.address)
    s = _wait_epochs(tmp_path / "netrace.db", "race", 12)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to resume it" in err
    st = s.get_study("race")
    assert s.study_state(st.id)[0] == "running"
    assert not any(t.state is TrialState.RUNNING for t in s.trials(st.id))
    assert {w.state for w in s.workers(st.id)} == {WorkerState.DONE}
    # the two actors handed back up to 8 networks of at most 8 epochs: budget for all of them
    cfg = write(tmp_path, rule="none", budget=s.epochs_spent(st.id) + 150, epochs=8)
    again = subprocess.run([EXE, "run", str(cfg), "--quiet", "--workers", "1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert all(settled(t) for t in s.trials(st.id))
    check_books(s, "race")


def test_backend_ray_without_ray_installed_is_one_clear_error(tmp_path: Path) -> None:
    """A Python where ``import ray`` fails (a package that raises ImportError first on the path)."""
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    cfg = write(tmp_path, rule="none", budget=20, epochs=2)
    env = {**ray_env("127.0.0.1:1"), "PYTHONPATH": str(shadow.parent)}
    proc = subprocess.run([EXE, "run", str(cfg), "--quiet", "--backend", "ray"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 2
    assert "--backend ray needs Ray, which is not installed" in proc.stderr
    assert "pip install 'netrace[ray]'" in proc.stderr and "Traceback" not in proc.stderr
