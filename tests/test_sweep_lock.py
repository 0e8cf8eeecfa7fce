"""One live driver per sweep (docs/reliability.md): the lock file, real processes holding it,
killed with SIGKILL, racing for it; `amm sweep run` / `resume` refused while it is held."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import old_sweep

from amm_cli.main import main as amm
from sweeps.store import lock as sweep_lock
from sweeps.store.folder import SweepFolder

REPO = Path(__file__).resolve().parent.parent

HOLD = """
import sys, time
from sweeps.store import lock
from sweeps.store.folder import SweepFolder
l = lock.acquire(SweepFolder(sys.argv[1], sys.argv[2]), "run")
print("held", flush=True)
time.sleep(float(sys.argv[3]))
l.release()
"""

RACE = """
import sys, time
from sweeps.store import lock
from sweeps.store.folder import SweepFolder
from amm_core.errors import ConfigError
start = float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
try:
    lock.acquire(SweepFolder(sys.argv[1], sys.argv[2]), "run")
    print("won", flush=True)
    time.sleep(3)
except ConfigError as e:
    print("lost", e, flush=True)
"""


def _py(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _holder(storage: Path, name: str) -> subprocess.Popen:
    proc = _py(HOLD, str(storage), name, "120")
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_live_driver_refuses_run_and_resume_and_a_killed_one_is_taken_over(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    storage = tmp_path / "st"
    old_sweep(storage, "busy")  # its metadata: enough for `resume` to reach its lock
    proc = _holder(storage, "busy")
    try:
        host = socket.gethostname()
        assert amm(["sweep", "resume", "busy", "--storage", str(storage)]) == 2
        err = capsys.readouterr().err
        assert f"sweep 'busy' is in use by a live driver: pid {proc.pid} on {host}" in err
        assert len(err.strip().splitlines()) == 1
        spec = tmp_path / "s.yaml"
        spec.write_text(f"base: {REPO / 'configs' / 'smoke.yaml'}\n")
        assert amm(["sweep", "run", str(spec), "--name", "busy", "--storage", str(storage)]) == 2
        assert f"in use by a live driver: pid {proc.pid}" in capsys.readouterr().err
        assert not (tmp_path / "mlflow.db").exists()  # nothing of the second driver's
        assert sorted(p.name for p in storage.iterdir()) == ["busy", "busy.lock"]

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        busy = SweepFolder(str(storage), "busy")
        assert sweep_lock.holder(busy) is None  # dead: nobody holds it
        with sweep_lock.acquire(busy, "resume") as mine:
            err = capsys.readouterr().err
            assert f"taking over the stale lock of sweep 'busy' (pid {proc.pid}" in err
            assert sweep_lock.holder(busy)["token"] == mine.info["token"]
        assert not (storage / "busy.lock").exists()  # released
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_lock_of_another_host_is_stale_only_after_its_heartbeat_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("AMM_LOCK_STALE_S", "60")
    path = tmp_path / "x.lock"
    info = {"host": "other-node", "pid": 1, "started": "then", "token": "t1", "command": "run"}
    path.write_text(json.dumps(info))
    try:
        sweep_lock.acquire(SweepFolder(str(tmp_path), "x"), "run")
        raise AssertionError("a fresh lock of another host was taken over")
    except sweep_lock.SweepLocked as e:
        assert "pid 1 on other-node" in str(e)
    old = time.time() - 120  # no heartbeat for two minutes
    os.utime(path, (old, old))
    with sweep_lock.acquire(SweepFolder(str(tmp_path), "x"), "run") as mine:
        assert json.loads(path.read_text())["token"] == mine.info["token"]
    # releasing never removes a lock that is not ours
    path.write_text(json.dumps({**info, "token": "someone-else"}))
    mine.release()
    assert json.loads(path.read_text())["token"] == "someone-else"


def test_drivers_racing_for_a_sweep_get_exactly_one_lock(tmp_path):
    start = time.time() + 4  # every process waits for the same moment
    procs = [_py(RACE, str(tmp_path), "race", str(start)) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sorted(o.split()[0] for o in outs) == ["lost", "lost", "lost", "won"], outs
    assert all("in use by a live driver" in o for o in outs if o.startswith("lost"))


def test_status_calls_a_trial_that_never_started_pending(tmp_path):
    """With a live driver, Tune saves running trials as PENDING; one that reported (or wrote
    results) is running, one whose only result is Tune's {"trial_id": ...} is pending."""
    from types import SimpleNamespace

    from sweeps.store.folder import SweepFolder
    from sweeps.store.status import RESULTS, _state

    folder = SweepFolder(str(tmp_path), "s")
    started = SimpleNamespace(
        status="PENDING", trial_id="a", last_result={"trial_id": "a", "step": 5}
    )
    waiting = SimpleNamespace(status="PENDING", trial_id="b", last_result={"trial_id": "b"})
    assert _state(started, folder, live=True) == "running"
    assert _state(waiting, folder, live=True) == "pending"
    (tmp_path / "s" / "trial_b").mkdir(parents=True)
    (tmp_path / "s" / "trial_b" / RESULTS).write_text("")  # created, nothing written yet
    assert _state(waiting, folder, live=True) == "pending"
