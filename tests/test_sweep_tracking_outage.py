"""A tracking outage longer than the driver waits (issue #12, finding 3): a real `mlflow server`
is killed mid-sweep. The trial keeps training, the driver keeps what it could not log in the
sweep folder's outbox, and after `$AMM_TRACKING_OUTAGE_S` stops cleanly with one line and exit
4. The server comes back; `amm sweep resume` sends the outbox first and completes the sweep:
every evaluation in MLflow once, every run FINISHED."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, stop_group

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def start_server(d: Path, port: int) -> subprocess.Popen:
    log = open(d / "server.log", "a")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
            "--port", str(port), "--backend-store-uri", f"sqlite:///{d / 'mlflow.db'}",
            "--artifacts-destination", str(d / "artifacts"), "--workers", "1",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_group(proc)
            raise AssertionError("mlflow server did not start: " + (d / "server.log").read_text())
        time.sleep(0.5)


def evaluations(uri: str, sweep: str) -> int:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("amm-outage-test")
    if exp is None:
        return 0
    runs = c.search_runs([exp.experiment_id], f"tags.`amm.sweep` = '{sweep}'")
    return max((len(c.get_metric_history(r.info.run_id, "val/error_gy")) for r in runs), default=0)


def test_long_tracking_outage_stops_cleanly_and_resume_completes(tmp_path, data_root):
    srv = tmp_path / "server"
    srv.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    spec = tmp_path / "outage.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-outage-test\n"
        "resources: {cpu: 1}\n"
    )
    env = {
        **os.environ,
        "AMM_DATA_DIR": str(data_root),
        "OMP_NUM_THREADS": "1",
        "AMM_TRACKING_OUTAGE_S": "10",
    }
    args = ["--storage", "sweeps", "--tracking-uri", uri]
    sets = [
        "--set",
        "train.steps=160",
        "--set",
        "train.eval_every=20",
        "--set",
        "train.figures=false",
    ]
    server = start_server(srv, port)
    driver = None
    try:
        driver = subprocess.Popen(
            [sys.executable, "-m", "amm_cli.main", "sweep", "run", str(spec), "--name", "out",
             *args, *sets],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 600  # Ray starts slowly on a busy machine
        while evaluations(uri, "out") < 1:
            assert driver.poll() is None, driver.communicate()[1][-4000:]
            assert time.time() < deadline, "no evaluation reached MLflow"
            time.sleep(1)
        stop_group(server)  # the outage
        out, err = driver.communicate(timeout=400)
        assert driver.returncode == 4, err[-4000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("amm: tracking outage")]
        assert len(lines) == 1 and "amm sweep resume out" in lines[0], err[-4000:]
        assert "Traceback" not in err
        outbox = tmp_path / "sweeps" / "out" / "amm_outbox.jsonl"
        assert outbox.is_file() and outbox.read_text().count('"op": "metrics"') >= 1

        server = start_server(srv, port)  # the store is back
        res = subprocess.run(
            [sys.executable, "-m", "amm_cli.main", "sweep", "resume", "out", *args[:2]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr[-4000:]
        assert not outbox.exists()
        from mlflow.tracking import MlflowClient

        c = MlflowClient(uri)
        exp = c.get_experiment_by_name("amm-outage-test")
        runs = c.search_runs([exp.experiment_id], "tags.`amm.sweep` = 'out'")
        assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
        (child,) = [r for r in runs if r.data.tags.get("amm.role") == "trial"]
        steps = [m.step for m in c.get_metric_history(child.info.run_id, "val/error_gy")]
        assert steps == list(range(20, 161, 20))  # nothing lost, nothing twice
        assert 0.0 <= child.data.metrics["test/error_gy"] <= 1.0
    finally:
        if driver is not None and driver.poll() is None:
            stop_group(driver)
        stop_group(server)
