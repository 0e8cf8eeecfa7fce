"""`amm sweep run` and `resume` stopped by SIGINT / SIGTERM at several moments, then resumed
(the drivers share one Ray head started for the module).

SIGINT while a driver sets up leaves nothing; SIGTERM in the first moment of a sweep and Ctrl+C
mid-sweep end the driver with 130, no run RUNNING and the lock gone. Two trials of the smoke
preset: a short one (20 steps) that finishes before the Ctrl+C, and a longer one (120 steps)
stopped after its first checkpoint; `amm sweep status` calls it `running` while the resumed
driver lives. The last resume moves the data root and the tracking store (`--data-dir`,
`--tracking-uri` on a copy of the SQLite store): the short trial is not rerun, the long one
continues from its checkpoint, the new store holds exactly one FINISHED child run per trial of
the grid under one parent, and the sweep's metadata, `amm sweep status` and the sweep index name
the new store from then on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
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


def wait_for(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before {what}: " + proc.stdout.read()[-4000:]
        assert time.time() < deadline, f"not reached: {what}"
        time.sleep(0.02)


def stopped(proc: subprocess.Popen, signum: int) -> str:
    """Send the signal; the driver's whole output once it ended with 130."""
    proc.send_signal(signum)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, out[-4000:]
    assert "Traceback" not in out and "User defined signal" not in out, out[-4000:]
    return out


def status_rows(tmp_path: Path, env: dict, name: str) -> tuple[dict[str, str], str]:
    res = subprocess.run(
        [sys.executable, "-m", "amm_cli.main", "sweep", "status", name, "--storage", "sweeps"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = {ln.split()[0]: ln.split()[1] for ln in res.stdout.splitlines() if ",seed=" in ln}
    return rows, res.stdout + res.stderr


def test_stop_and_resume(tmp_path, data_root, ray_head):
    spec = tmp_path / "resume.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-resume-test\n"
        "grid:\n  train.steps: [20, 120]\nresources: {cpu: 1}\n"
    )
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the default: mlflow.db in the working folder
    sets = ["--set", "train.eval_every=20", "--set", "train.figures=false"]
    where = ["--storage", "sweeps", "--address", ray_head]
    lock, sweep_dir = tmp_path / "sweeps" / "rs.lock", tmp_path / "sweeps" / "rs"

    def run(name: str) -> subprocess.Popen:
        return amm(
            "sweep", "run", str(spec), "--name", name, *where, *sets,
            cwd=tmp_path, env=env, start_new_session=True,
        )  # fmt: skip

    # SIGINT while the driver sets up, before anything of the sweep exists: nothing is left
    early = run("early")
    wait_for(early, (tmp_path / "sweeps" / "early.lock").exists, "the lock")
    stopped(early, signal.SIGINT)
    assert not (tmp_path / "sweeps" / "early").exists()
    assert not (tmp_path / "sweeps" / "early.lock").exists()
    assert "early" not in peek(tmp_path / "mlflow.db")

    # SIGTERM in the first moment of the sweep (its folder and parent run were just made)
    proc = run("rs")
    wait_for(proc, (sweep_dir / "amm_sweep.json").exists, "the sweep folder")
    stopped(proc, signal.SIGTERM)
    assert not lock.exists()
    runs = peek(tmp_path / "mlflow.db")
    assert runs["rs"][0] == "KILLED" and all(s != "RUNNING" for s, _ in runs.values()), runs

    # resume it; Ctrl+C once the short trial finished and the long one has a checkpoint
    proc = amm("sweep", "resume", "rs", *where, cwd=tmp_path, env=env, start_new_session=True)
    seen: list[str] = []

    def stop_point() -> bool:
        runs = peek(tmp_path / "mlflow.db")
        if runs.get("steps=120,seed=0", ("", 0))[1] and len(seen) < 3:
            rows, text = status_rows(tmp_path, env, "rs")  # the live sweep, as status sees it
            if rows.get("steps=120,seed=0") == "running":
                seen.append(text)
        return (
            runs.get("steps=20,seed=0", ("", 0))[0] == "FINISHED"
            and runs.get("steps=120,seed=0", ("", 0))[1]
            and seen
        )

    wait_for(proc, stop_point, "a finished short trial and a running long one")
    for text in seen:  # Ray's "Failed to fetch metrics ..." and other warnings are not shown
        assert "driver: running" in text and "WARNING" not in text and "Failed" not in text, text
    stopped(proc, signal.SIGINT)
    assert not lock.exists()

    runs = runs_by_name(uri, "rs")
    assert runs["rs"].info.status == "KILLED"
    assert runs["steps=20,seed=0"].info.status == "FINISHED"
    assert runs["steps=120,seed=0"].info.status == "KILLED"  # none is left RUNNING
    short_id = runs["steps=20,seed=0"].data.tags["amm.trial_id"]
    short_results = sweep_dir / f"trial_{short_id}" / "result.json"
    results_before = short_results.read_text()
    assert len(results_before.splitlines()) == 2  # one evaluation + the final result

    rows, status_out = status_rows(tmp_path, env, "rs")
    assert rows["steps=20,seed=0"] == "finished" and rows["steps=120,seed=0"] == "stopped"
    assert "Failed" not in status_out and "WARNING" not in status_out, status_out

    moved = tmp_path / "data-moved"  # the data root moved between the stop and the resume
    moved.symlink_to(data_root)
    shutil.copy(tmp_path / "mlflow.db", tmp_path / "moved.db")  # and the tracking store
    old_uri, uri = uri, f"sqlite:///{tmp_path / 'moved.db'}"
    res = amm(
        "sweep", "resume", "rs", *where, "--data-dir", str(moved), "--tracking-uri", uri,
        cwd=tmp_path, env={**env, "AMM_DATA_DIR": "/nonexistent"},
    )  # fmt: skip
    out, _ = res.communicate(timeout=300)
    assert res.returncode == 0, out[-4000:]
    # the console counts the trial that finished before: from 1, not from 0
    assert re.findall(r"^\[(\d)/2 done\]", out, re.MULTILINE)[0] == "1", out[-4000:]
    meta = json.loads((sweep_dir / "amm_sweep.json").read_text())
    assert meta["base_flat"]["data.data_dir"] == str(moved)  # kept for later resumes
    assert meta["tracking_uri"] == uri  # and the new store, for status, hints and the index
    assert f"tracking: {uri} (parent run" in status_rows(tmp_path, env, "rs")[1]
    index = json.loads((tmp_path / "runs" / "sweep_index.json").read_text())
    assert index["rs"]["tracking_uri"] == uri
    assert runs_by_name(old_uri, "rs")["steps=120,seed=0"].info.status == "KILLED"  # untouched
    runs = runs_by_name(uri, "rs")
    assert sorted(runs) == ["rs", "steps=120,seed=0", "steps=20,seed=0"]  # exactly the grid
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
