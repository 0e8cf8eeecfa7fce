"""A SIGTERM to the whole process group of `amm sweep run` on a local Ray (what `timeout`,
Slurm's scancel and `kill -TERM -PGID` send) ends the sweep as a SIGINT does: exit 130, no run
RUNNING, the lock gone; `amm sweep resume` then finishes it with one finished run per trial.

Two drivers: one that is not its group's leader (started by a wrapper that leads the group, as
`timeout` and batch scripts do: Ray's processes get a group of their own) and one that leads its
group (a shell's job: Ray's processes start with SIGTERM blocked).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from amm_core import names

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
# the wrapper that leads the group: it survives the group's SIGTERM and returns amm's exit code
WRAPPER = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, lambda *a: None)\n"
    "sys.exit(subprocess.call(sys.argv[1:]))\n"
)


def evaluations(db: Path) -> dict[str, tuple[str, int]]:
    """trial run name -> (status, evaluations logged), read-only."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT r.name, r.status, (SELECT count(*) FROM metrics m WHERE "
                "m.run_uuid = r.run_uuid AND m.key = 'val/error_gy') FROM runs r "
                "WHERE r.lifecycle_stage = 'active'"
            ).fetchall()
    except sqlite3.OperationalError:
        return {}
    return {n: (s, k) for n, s, k in rows}


@pytest.mark.parametrize("leader", [False, True], ids=["driver-in-a-group", "driver-leads"])
def test_a_sigterm_to_the_whole_group_stops_the_sweep_and_resume_finishes_it(
    tmp_path, data_root, leader
):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-group-test\n"
        "overrides: {train.steps: 150, train.eval_every: 10, train.figures: false}\n"
        "grid:\n  loss.gp_weight: [1.0, 10.0]\nresources: {cpu: 1}\n"
    )
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    amm = [sys.executable, "-m", "amm_cli.main"]
    where = ["--storage", "sweeps"]
    cmd = [*amm, "sweep", "run", str(spec), "--name", "g", *where]
    if not leader:
        cmd = [sys.executable, "-c", WRAPPER, *cmd]
    out = subprocess.PIPE, subprocess.STDOUT
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out[0], stderr=out[1], text=True,
                            start_new_session=True)  # fmt: skip
    db = tmp_path / "mlflow.db"
    try:
        deadline = time.time() + 240
        while not any(k >= 2 for s, k in evaluations(db).values()):  # both trials training
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-3000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the driver and whatever shares it
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-4000:]
    assert "Failed to connect to GCS" not in out and "Traceback" not in out, out[-4000:]
    assert not (tmp_path / "sweeps" / "g.lock").exists()
    assert all(s != names.RUNNING for s, _ in evaluations(db).values()), evaluations(db)

    res = subprocess.run([*amm, "sweep", "resume", "g", *where], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    runs = evaluations(db)
    trials = [v for n, v in runs.items() if n != "g"]  # each evaluation logged once
    assert trials == [(names.FINISHED, 15)] * 2, runs
