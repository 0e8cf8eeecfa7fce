"""`ray job submit` of `amm sweep run ...` to a local `ray start --head` (with its dashboard).

The head runs in the foreground (`--block`) in its own process group, so the finalizer ends
exactly the Ray processes this test started (never a machine-wide `ray stop`).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path, data_root):
    port, dash = free_port(), free_port()
    # Ray >= 2.5x guards the dashboard with a token: give the head and the client the same one
    env = {
        **os.environ,
        "AMM_DATA_DIR": str(data_root),
        "OMP_NUM_THREADS": "1",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
    }
    log = open(tmp_path / "ray_head.log", "w")  # noqa: SIM115 - closed in the finalizer
    proc = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            # the job agent's own port: the default 52365 may be another Ray's on this machine
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 180
        while True:  # the dashboard answers (401 without Ray's auth token: it is up)
            try:
                with urllib.request.urlopen(url + "/api/version", timeout=2):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "ray_head.log").read_text()[-3000:]
            assert time.time() < deadline, "ray head did not start in 180 s"
            time.sleep(1)
        yield url, env
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # --block: the head stops what it started
            try:  # Ray's own shutdown takes about 30 s; what is left of the group is killed
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        # a head stopped by a signal leaves its address behind; a later ray.init() would try it
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


def test_ray_job_submit_runs_the_sweep(ray_head, tmp_path):
    url, env = ray_head
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "sweeps"
    entry = (
        f"{BIN / 'amm'} sweep run {REPO / 'sweeps' / 'smoke.yaml'} --name job "
        f"--storage {storage} --tracking-uri {uri} --set train.steps=20 "
        "--set train.eval_every=20 --set train.figures=false --set seed=0"
    )
    deadline = time.time() + 180
    while True:  # the dashboard answers before its job agent does: Ray says to try again later
        out = subprocess.run(
            [str(BIN / "ray"), "job", "submit", "--address", url, "--", *entry.split()],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        log = out.stdout + out.stderr
        if "No available agent to submit job" not in log or time.time() > deadline:
            break
        time.sleep(3)
    assert out.returncode == 0, log[-4000:]
    assert "succeeded" in log.lower(), log[-4000:]

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("amm-smoke")
    runs = c.search_runs([exp.experiment_id], "tags.`amm.sweep` = 'job'")
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [
        ("job", "FINISHED"),
        ("lambda=1,seed=0", "FINISHED"),
        ("lambda=10,seed=0", "FINISHED"),
    ]
    assert (storage / "job" / "amm_sweep.json").is_file()
