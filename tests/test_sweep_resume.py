"""`amm sweep run` on a local Ray, stopped with Ctrl+C (SIGINT) mid-sweep, then `amm sweep resume`.

Two trials of the smoke preset: a short one (20 steps) that finishes before the stop, and a
longer one (120 steps) that is stopped after its first checkpoint. After the resume the short
trial is not rerun, the long one continues from its checkpoint, and MLflow (the default SQLite
store in the working folder) holds exactly one FINISHED child run per trial under one parent.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def amm(*args: str, cwd: Path, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "amm_cli.main", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kw,
    )


def peek(db: Path) -> dict[str, tuple[str, int]]:
    """run name -> (status, evaluations logged), read-only: the driver is the only writer."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT r.name, r.status, (SELECT count(*) FROM metrics m WHERE "
                "m.run_uuid = r.run_uuid AND m.key = 'val/error_gy') FROM runs r"
            ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy
        return {}
    return {name: (status, n) for name, status, n in rows}


def runs_by_name(uri: str, sweep: str) -> dict:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("amm-resume-test")
    if exp is None:
        return {}
    runs = c.search_runs([exp.experiment_id], f"tags.`amm.sweep` = '{sweep}'")
    return {r.info.run_name: r for r in runs}


def test_stop_and_resume(tmp_path, data_root):
    spec = tmp_path / "resume.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-resume-test\n"
        "grid:\n  train.steps: [20, 120]\nresources: {cpu: 1}\n"
    )
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default: mlflow.db in the working folder
    sets = ["--set", "train.eval_every=20", "--set", "train.figures=false"]
    proc = amm(
        "sweep",
        "run",
        str(spec),
        "--name",
        "rs",
        "--storage",
        "sweeps",
        *sets,
        cwd=tmp_path,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 240
        while True:  # stop once the short trial finished and the long one has a checkpoint
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "the sweep did not reach the stop point"
            time.sleep(1)
            runs = peek(tmp_path / "mlflow.db")
            if (
                runs.get("steps=20,seed=0", ("", 0))[0] == "FINISHED"
                and runs.get("steps=120,seed=0", ("", 0))[1]
            ):
                break
        os.kill(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-4000:]

    runs = runs_by_name(uri, "rs")
    assert runs["rs"].info.status == "KILLED"
    assert runs["steps=20,seed=0"].info.status == "FINISHED"
    assert runs["steps=120,seed=0"].info.status == "KILLED"  # none is left RUNNING
    short_id = runs["steps=20,seed=0"].data.tags["amm.trial_id"]
    short_results = tmp_path / "sweeps" / "rs" / f"trial_{short_id}" / "result.json"
    results_before = short_results.read_text()
    assert len(results_before.splitlines()) == 2  # one evaluation + the final result

    st = amm("sweep", "status", "rs", "--storage", "sweeps", cwd=tmp_path, env=env)
    status_out, _ = st.communicate(timeout=120)
    assert st.returncode == 0, status_out
    rows = {
        ln.split()[0]: ln.split()[1] for ln in status_out.splitlines() if ln.startswith("steps=")
    }
    assert rows["steps=20,seed=0"] == "finished" and rows["steps=120,seed=0"] != "finished"

    moved = tmp_path / "data-moved"  # the data root moved between the stop and the resume
    moved.symlink_to(data_root)
    res = amm(
        "sweep",
        "resume",
        "rs",
        "--storage",
        "sweeps",
        "--data-dir",
        str(moved),
        cwd=tmp_path,
        env={**env, "AMM_DATA_DIR": "/nonexistent"},
    )
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out[-4000:]
    meta = json.loads((tmp_path / "sweeps" / "rs" / "amm_sweep.json").read_text())
    assert meta["base_flat"]["data.data_dir"] == str(moved)  # kept for later resumes
    runs = runs_by_name(uri, "rs")
    assert sorted(runs) == ["rs", "steps=120,seed=0", "steps=20,seed=0"]  # no duplicates
    assert all(r.info.status == "FINISHED" for r in runs.values())
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    short, long = runs["steps=20,seed=0"], runs["steps=120,seed=0"]
    assert [m.step for m in c.get_metric_history(short.info.run_id, "val/error_gy")] == [20]
    resumed = int(c.get_run(long.info.run_id).data.tags["amm.resumed_from_step"])  # a tag
    assert resumed >= 20  # continued from a checkpoint, not from step 0
    steps = [m.step for m in c.get_metric_history(long.info.run_id, "val/error_gy")]
    assert steps == [20, 40, 60, 80, 100, 120]
    assert 0.0 <= long.data.metrics["test/error_gy"] <= 1.0
    assert short_results.read_text() == results_before  # the finished trial was not rerun
