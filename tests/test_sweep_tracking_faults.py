"""The driver's MLflow writes under faults (docs/reliability.md), on real SQLite stores:
closing a sweep ends only its own runs (by run id), the `amm.resumed_from_step` tag follows a
trial that resumes at a step already logged, and drivers starting at once on a fresh store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers import old_sweep

from amm_core.names import RESULT_RESUMED as RESUMED_KEY
from amm_core.names import TAG_RESUMED
from sweeps.driver.callback import MlflowSweepCallback
from sweeps.store import tracking
from sweeps.store.folder import SweepFolder
from sweeps.store.outbox import Op

REPO = Path(__file__).resolve().parent.parent


def _callback(uri: str, storage: Path, sweep: str = "same-name") -> MlflowSweepCallback:
    exp_id, parent = tracking.start_parent(uri, "faults", sweep, params={}, tags={})
    old_sweep(storage, sweep, experiment_id=exp_id, parent_run_id=parent)
    return MlflowSweepCallback(SweepFolder(str(storage), sweep), uri, {})


def _start(cb: MlflowSweepCallback, trial_id: str) -> str:
    cb._send(Op.START, trial_id, name=f"run-{trial_id}", params={"seed": 0}, tags={})
    return cb.runs[trial_id]


def test_closing_a_sweep_ends_only_its_own_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    # two sweeps of one name (two storages), one experiment: the tags alone cannot tell them
    other = _callback(uri, tmp_path / "a")
    theirs = _start(other, "t1")
    mine_cb = _callback(uri, tmp_path / "b")
    mine = _start(mine_cb, "t1")  # the same trial id, a different parent: a new run
    assert mine != theirs
    mine_cb.close("KILLED")
    c = tracking.client(uri)
    assert c.get_run(mine).info.status == "KILLED"
    assert c.get_run(mine_cb.parent_id).info.status == "KILLED"
    assert c.get_run(theirs).info.status == "RUNNING"  # the other driver's runs go on
    assert c.get_run(other.parent_id).info.status == "RUNNING"


class _Trial:
    """What the callback reads of a Tune trial."""

    def __init__(self, trial_id: str) -> None:
        self.trial_id, self.config = trial_id, {"seed": 0}

    def __str__(self) -> str:
        return self.trial_id


def test_resumed_from_step_follows_a_trial_that_resumes_at_its_last_step(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    cb = _callback(uri, tmp_path, "sw")
    t = _Trial("t1")
    for step in (50, 100, 150):
        cb.on_trial_result(0, [], t, {"step": step, "val/error_gy": 0.5, RESUMED_KEY: 0})
    run_id = cb.runs["t1"]
    # a driver kill after the step-150 checkpoint; the resumed trial reports its final result
    # at step 150, from that checkpoint
    cb2 = MlflowSweepCallback(SweepFolder(str(tmp_path), "sw"), uri, {})
    assert cb2.runs == {"t1": run_id}  # amm_runs.json: reattached by run id
    final = {"step": 150, "val/error_gy": 0.5, "test/error_gy": 0.4, RESUMED_KEY: 150}
    cb2.on_trial_result(0, [], t, final)
    c = tracking.client(uri)
    run = c.get_run(run_id)
    assert run.data.tags[TAG_RESUMED] == "150"  # bookkeeping: a tag that follows each attempt
    assert RESUMED_KEY not in run.data.metrics  # not a metric cluttering the charts
    assert [m.step for m in c.get_metric_history(run_id, "val/error_gy")] == [50, 100, 150]
    assert run.data.metrics["test/error_gy"] == 0.4


INIT = """
import sys, time
from sweeps.store import tracking
uri, start = sys.argv[1], float(sys.argv[2])
import mlflow.tracking  # imports done before the common start (no store yet)
time.sleep(max(0.0, start - time.time()))
tracking.init_store(uri)
c = tracking.client(uri)
print(tracking.experiment_id(c, "shared"))
"""


def test_drivers_starting_at_once_on_a_fresh_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    start = time.time() + 10  # after every process has imported mlflow
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INIT, uri, str(start)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    try:  # creating MLflow's schema takes seconds, minutes on a loaded machine
        results = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-2000:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1  # one experiment, the same id
