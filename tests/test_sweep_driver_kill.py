"""The sweep driver killed with SIGKILL mid-sweep, then `amm sweep resume`, on a local Ray with
MLflow in SQLite.

Tune is told to save its experiment state rarely (TUNE_GLOBAL_CHECKPOINT_S, and a forced save
only every 3 checkpoints of a trial), so at the kill its saved state is behind: the short trial
FINISHED in MLflow may still be listed as running, and the long trial's newest checkpoints are
not registered. While the driver lives, a second `run` and a `resume` of the sweep are refused.
A kill of the driver alone leaves no process of its Ray a few seconds later; `status` then calls
the unfinished trials stopped (not pending), at the step of their newest checkpoint, and
`resume` takes over the dead driver's lock, does not run the finished trial again, and continues
the long one from its newest checkpoint on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from test_sweep_resume import amm, peek, runs_by_name

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def newest_step(trial_dir: Path) -> int:
    steps = [-1]
    for meta in trial_dir.glob("checkpoint_*/.metadata.json"):
        steps.append(json.loads(meta.read_text())["step"])
    return max(steps)


def session_processes(sid: int) -> list[str]:
    """The live processes (zombies aside) of session `sid`, as 'pid command'."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone
        end = text.rfind(")")
        state, _ppid, _group, session = text[end + 2 :].split()[:4]
        if state != "Z" and int(session) == sid:
            out.append(f"{stat.parent.name} {text[text.find('(') + 1 : end]}")
    return out


def test_driver_killed_then_resumed(tmp_path, data_root):
    spec = tmp_path / "kill.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-resume-test\n"
        "grid:\n  train.steps: [20, 160]\nresources: {cpu: 1}\ncheckpoints_to_keep: 3\n"
    )
    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    kill_env = {**env, "TUNE_GLOBAL_CHECKPOINT_S": "100000"}  # Tune's saved state lags
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = ["--set", "train.eval_every=20", "--set", "train.figures=false"]
    where = ["--storage", "sweeps"]
    proc = amm(
        "sweep", "run", str(spec), "--name", "kd", *where, *sets,
        cwd=tmp_path, env=kill_env, start_new_session=True,
    )  # fmt: skip
    sweep_dir = tmp_path / "sweeps" / "kd"
    try:
        deadline = time.time() + 600  # Ray and a fresh store start slowly on a busy machine
        while not (sweep_dir / "amm_sweep.json").exists():  # the sweep exists, its driver lives
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "the sweep did not start"
            time.sleep(0.2)
        # a live driver: a second run and a resume of the sweep are refused (before the kill
        # point: these take seconds, in which the long trial could otherwise finish)
        second = amm("sweep", "run", str(spec), "--name", "kd", *where, cwd=tmp_path, env=env)
        out2, _ = second.communicate(timeout=120)
        assert second.returncode == 2, out2[-3000:]
        assert f"sweep 'kd' is in use by a live driver: pid {proc.pid}" in out2
        res = amm("sweep", "resume", "kd", *where, cwd=tmp_path, env=env)
        out3, _ = res.communicate(timeout=120)
        assert res.returncode == 2 and f"live driver: pid {proc.pid}" in out3, out3[-3000:]
        while True:  # the short trial finished, the long one has checkpoints past step 40
            assert proc.poll() is None, proc.stdout.read()[-4000:]
            assert time.time() < deadline, "the sweep did not reach the kill point"
            time.sleep(0.5)
            runs = peek(tmp_path / "mlflow.db")
            # Tune saves its state when a trial has made `checkpoints_to_keep` (3) checkpoints
            # since the last save: at the long trial's step 60, then 120; killed past 80, its
            # saved result lags the newest checkpoint
            long_dirs = [d for d in sweep_dir.glob("trial_*") if newest_step(d) >= 80]
            if runs.get("steps=20,seed=0", ("", 0))[0] == "FINISHED" and long_dirs:
                break

        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a user or the OOM killer does
        proc.wait(timeout=60)
        # the Ray it started goes with it: its agents do not wait on the dead GCS (a minute or
        # more), its trial workers end with the raylet (the driver's session holds them all)
        end = time.time() + 30
        while session_processes(proc.pid) and time.time() < end:
            time.sleep(0.5)
        assert session_processes(proc.pid) == []
    finally:
        for line in session_processes(proc.pid):  # the driver and its Ray, after a failure
            with contextlib.suppress(OSError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
    (long_dir,) = long_dirs
    on_disk = newest_step(long_dir)
    runs = runs_by_name(uri, "kd")
    short_run = runs["steps=20,seed=0"]
    assert short_run.info.status == "FINISHED"
    assert runs["steps=160,seed=0"].info.status == "RUNNING"  # nobody closed it: a kill
    short_dir = sweep_dir / f"trial_{short_run.data.tags['amm.trial_id']}"
    short_results = (short_dir / "result.json").read_text()

    st = amm("sweep", "status", "kd", *where, cwd=tmp_path, env=env)
    status_out, _ = st.communicate(timeout=120)
    assert st.returncode == 0, status_out
    rows = {ln.split()[0]: ln.split()[1:3] for ln in status_out.splitlines() if "seed=" in ln}
    # the step of each trial's newest checkpoint, where Tune's lagging state has none or older
    assert rows == {
        "steps=20,seed=0": ["finished", "20"],
        "steps=160,seed=0": ["stopped", str(on_disk)],
    }, status_out
    assert "driver: none" in status_out

    res = amm("sweep", "resume", "kd", *where, cwd=tmp_path, env=env)
    out, _ = res.communicate(timeout=400)
    assert res.returncode == 0, out[-4000:]
    assert f"taking over the stale lock of sweep 'kd' (pid {proc.pid}" in out
    # Tune's saved state still had the finished trial as running: set right from MLflow
    # Tune's saved state may or may not have caught the short trial's end before the kill; when
    # it had not, the reconciliation says so (either way the trial is not run again: below)
    if "will not run again" in out:
        assert "1 trial(s) finished before the driver stopped and will not run again" in out
    assert not (tmp_path / "sweeps" / "kd.lock").exists()

    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = runs_by_name(uri, "kd")
    assert sorted(runs) == ["kd", "steps=160,seed=0", "steps=20,seed=0"]
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert (short_dir / "result.json").read_text() == short_results  # not run again
    long = runs["steps=160,seed=0"]
    resumed = int(long.data.tags["amm.resumed_from_step"])  # bookkeeping: a tag
    # from the newest checkpoint on disk, not Tune's older one (a trial worker can outlive the
    # killed driver by a moment and write one more checkpoint before it stops)
    assert on_disk <= resumed < 160 and resumed % 20 == 0
    steps = [m.step for m in c.get_metric_history(long.info.run_id, "val/error_gy")]
    assert steps == list(range(20, 161, 20))  # each evaluation once
    assert 0.0 <= long.data.metrics["test/error_gy"] <= 1.0


def test_resume_of_trials_without_tune_state_is_refused_in_one_line(tmp_path, capsys):
    """A driver killed (-9) after its trials started but before Tune saved any state: neither
    a restore nor a fresh grid would be the same sweep, so `resume` refuses before Ray starts."""
    from amm_cli.main import main

    sweep = tmp_path / "st" / "early-kill"
    (sweep / "trial_abc12_00000" / "checkpoint_000000").mkdir(parents=True)
    (sweep / "tuner.pkl").write_bytes(b"\x80")
    meta = {
        "name": "early-kill", "spec_path": "/specs/smoke.yaml", "tracking_uri": "sqlite:///x.db",
        "parent_run_id": "0" * 32, "experiment_id": "1", "storage": str(tmp_path / "st"),
        "base_flat": {}, "overrides": {}, "spec_text": "", "cells": [],
    }  # fmt: skip
    (sweep / "amm_sweep.json").write_text(json.dumps(meta))
    assert main(["sweep", "resume", "early-kill", "--storage", str(tmp_path / "st")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "stopped before Ray Tune saved the state of its trials" in err
    assert "start it again with `amm sweep run /specs/smoke.yaml --name NEW_NAME`" in err
    assert not (tmp_path / "st" / "early-kill.lock").exists()
    assert sorted(p.name for p in sweep.iterdir()) == ["amm_sweep.json", "trial_abc12_00000",
                                                        "tuner.pkl"]  # fmt: skip
