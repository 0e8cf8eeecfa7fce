"""A tracking outage longer than the driver waits (docs/reliability.md): a real
`mlflow server` is killed for good mid-sweep. The trial, which would train for minutes, keeps
training while the driver keeps what it could not log in the sweep folder's outbox, and within
`$AMM_TRACKING_OUTAGE_S` + one retry interval the driver stops cleanly with one line and exit
4, the trial's checkpoints kept. The server comes back; `amm sweep resume` sends the outbox
first; Ctrl+C then stops it with 130: every evaluation in MLflow once, no run left RUNNING, the
lock gone."""

from __future__ import annotations

import json
import os
import signal
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


def test_long_tracking_outage_stops_in_time_and_resume_sends_the_outbox(tmp_path, data_root):
    from sweeps.store.outbox import MAX_BACKOFF_S

    srv = tmp_path / "server"
    srv.mkdir()
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    spec = tmp_path / "outage.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-outage-test\n"
        "resources: {cpu: 1}\n"
    )
    limit = 10
    env = {
        **os.environ,
        "AMM_DATA_DIR": str(data_root),
        "OMP_NUM_THREADS": "1",
        "AMM_TRACKING_OUTAGE_S": str(limit),
    }
    args = ["--storage", "sweeps", "--tracking-uri", uri]
    # a trial that trains far longer than the limit (minutes): only the outage clock ends it
    sets = ["--set", "train.steps=5000", "--set", "train.eval_every=20"]
    sets += ["--set", "train.figures=false"]
    server = start_server(srv, port)
    driver = resumed = None
    sweep_dir = tmp_path / "sweeps" / "out"
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
        stop_group(server)  # the outage, for good
        killed = time.monotonic()
        out, err = driver.communicate(timeout=400)
        took = time.monotonic() - killed
        assert driver.returncode == 4, err[-4000:]
        # the limit is enforced on Tune's own clock, not when training ends
        assert took < limit + MAX_BACKOFF_S, f"{took:.0f} s after the server died\n{err[-3000:]}"
        lines = [ln for ln in err.splitlines() if ln.startswith("amm: tracking outage")]
        assert len(lines) == 1 and "amm sweep resume out" in lines[0], err[-4000:]
        assert "Traceback" not in err
        assert "View run" not in out + err  # MLflow's links stay out of the quiet console
        outbox = sweep_dir / "amm_outbox.jsonl"
        assert outbox.is_file() and outbox.read_text().count('"op": "metrics"') >= 1
        (trial,) = sweep_dir.glob("trial_*")
        steps_kept = checkpoint_steps(trial)
        assert steps_kept and max(steps_kept) < 5000  # stopped early, checkpoints kept
        assert not (tmp_path / "sweeps" / "out.lock").exists()

        server = start_server(srv, port)  # the store is back: resume sends the outbox first
        resumed = subprocess.Popen(
            [sys.executable, "-m", "amm_cli.main", "sweep", "resume", "out", *args[:2]],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.time() + 400
        while outbox.exists():
            assert resumed.poll() is None, resumed.communicate()[0][-4000:]
            assert time.time() < deadline, "the resumed sweep did not send its outbox"
            time.sleep(0.2)
        os.kill(resumed.pid, signal.SIGINT)  # Ctrl+C once the outbox is sent
        out, _ = resumed.communicate(timeout=300)
        assert resumed.returncode == 130, out[-4000:]
        assert "Traceback" not in out and "View run" not in out, out[-4000:]
        assert not (tmp_path / "sweeps" / "out.lock").exists()
        from mlflow.tracking import MlflowClient

        c = MlflowClient(uri)
        exp = c.get_experiment_by_name("amm-outage-test")
        runs = c.search_runs([exp.experiment_id], "tags.`amm.sweep` = 'out'")
        assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # none RUNNING
        (child,) = [r for r in runs if r.data.tags.get("amm.role") == "trial"]
        steps = [m.step for m in c.get_metric_history(child.info.run_id, "val/error_gy")]
        assert steps == list(range(20, max(steps) + 1, 20))  # nothing lost, nothing twice
    finally:
        for proc in (driver, resumed):
            if proc is not None and proc.poll() is None:
                stop_group(proc)
        stop_group(server)


def checkpoint_steps(trial_dir: Path) -> list[int]:
    return [
        json.loads(m.read_text())["step"] for m in trial_dir.glob("checkpoint_*/.metadata.json")
    ]
