"""A SIGTERM to the whole process group of `amm sweep run` on a local Ray (what `timeout`,
Slurm's scancel and `kill -TERM -PGID` send) ends the sweep as a SIGINT does: exit 130, no run
RUNNING, the lock gone; `amm sweep resume` then finishes it with one finished run per trial.

The sweep's driver is not its group's leader (a wrapper leads the group, as `timeout` and batch
scripts do): Ray's processes get a group of their own. A driver that leads its group (a shell's
job) starts Ray's processes with SIGTERM blocked instead; both ways are checked on processes
started inside `sweeps.driver.tuner._own_process_group`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_sweep_resume import peek  # run name -> (status, evaluations), read-only

from amm_core import names

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
# the wrapper that leads the group: it survives the group's SIGTERM and returns amm's exit code
WRAPPER = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, lambda *a: None)\n"
    "sys.exit(subprocess.call(sys.argv[1:]))\n"
)


def test_a_sigterm_to_the_whole_group_stops_the_sweep_and_resume_finishes_it(tmp_path, data_root):
    spec = tmp_path / "g.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-group-test\n"
        "overrides: {train.steps: 80, train.eval_every: 10, train.figures: false}\n"
        "grid:\n  loss.gp_weight: [1.0, 10.0]\nresources: {cpu: 1}\n"
    )
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    amm = [sys.executable, "-m", "amm_cli.main"]
    where = ["--storage", "sweeps"]
    cmd = [sys.executable, "-c", WRAPPER, *amm, "sweep", "run", str(spec), "--name", "g", *where]
    out = subprocess.PIPE, subprocess.STDOUT
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out[0], stderr=out[1], text=True,
                            start_new_session=True)  # fmt: skip
    db = tmp_path / "mlflow.db"
    try:
        deadline = time.time() + 240
        while not any(k >= 2 for s, k in peek(db).values()):  # both trials training
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
    assert all(s != names.RUNNING for s, _ in peek(db).values()), peek(db)

    res = subprocess.run([*amm, "sweep", "resume", "g", *where], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    runs = peek(db)
    trials = [v for n, v in runs.items() if n != "g"]  # each evaluation logged once
    assert trials == [(names.FINISHED, 8)] * 2, runs


@pytest.mark.parametrize("leader", [False, True], ids=["in-a-group", "group-leader"])
def test_ray_starts_out_of_reach_of_the_drivers_group(leader):
    """What local Ray's processes would inherit inside _own_process_group: a group of their own
    (a driver that does not lead its group), or SIGTERM blocked (one that does); the driver
    itself is back in its group with its signal mask as before."""
    probe = (
        "import os, signal, subprocess, sys, json\n"
        "from sweeps.driver.tuner import _own_process_group\n"
        "home, mask = os.getpgid(0), signal.pthread_sigmask(signal.SIG_BLOCK, set())\n"
        "with _own_process_group():\n"
        "    c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])\n"
        "    st = open(f'/proc/{c.pid}/status').read()\n"
        "    blk = int([l for l in st.splitlines() if l.startswith('SigBlk:')][0].split()[1], 16)\n"
        "    out = [os.getpgid(c.pid) != home, bool(blk & (1 << (signal.SIGTERM - 1)))]\n"
        "    c.kill(); c.wait()\n"
        "back = os.getpgid(0) == home and signal.pthread_sigmask(signal.SIG_BLOCK, set()) == mask\n"
        "print(json.dumps(out + [back]))\n"
    )
    cmd = [sys.executable, "-c", probe]
    if not leader:  # a wrapper leads the group; the probe is its child
        cmd = [sys.executable, "-c", WRAPPER, *cmd]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60,
                         start_new_session=True)  # fmt: skip
    assert res.returncode == 0, res.stderr
    own_group, blocked, back = json.loads(res.stdout.strip().splitlines()[-1])
    assert back
    assert (own_group, blocked) == ((False, True) if leader else (True, False))
