"""Sweeps that outlive their machine: `amm sweep export` / `import` and the idempotent run,
against real stores (SQLite files and a real `mlflow server` on a loopback port).

One real sweep of the smoke preset on a Ray head (2 grid cells x seed 0) is exported, its folder
deleted and one trial left RUNNING (a driver lost with it: the rerun deletes that run);
`amm sweep status` then reads the store, and `amm sweep run` of the same name runs only the cell
without a finished trial, under the same parent, never rerunning a finished one. The round trip
through a second store (SQLite, then a server) prints the same `amm table`, importing twice and
a stale partial export creates no duplicate, and two partial exports of one sweep merge.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amm_core import names

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def amm(*args: str, cwd: Path, env: dict, code: int = 0) -> str:
    res = subprocess.run(
        [sys.executable, "-m", "amm_cli.main", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == code, out[-4000:]
    return out


def trials(uri: str, sweep: str) -> list:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(uri)
    runs = c.search_runs(
        [e.experiment_id for e in c.search_experiments()], f"tags.`amm.sweep` = '{sweep}'"
    )
    return [r for r in runs if r.data.tags.get(names.TAG_ROLE) == names.ROLE_TRIAL]


def table(uri: str, cwd: Path, env: dict) -> str:
    """`amm table` without its source line (which names the store)."""
    out = amm("table", "pt", "--tracking-uri", uri, "--metric", names.TEST_ERROR_GY, cwd=cwd,
              env=env)  # fmt: skip
    return "\n".join(ln for ln in out.splitlines() if "MLflow" not in ln and "INFO" not in ln)


def test_export_import_and_the_idempotent_run(tmp_path, data_root, ray_head, mlflow_server):
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "AMM_DATA_DIR": str(data_root), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    body = (
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-portable-test\n"
        "overrides: {train.steps: 20, train.eval_every: 10, train.figures: false}\n"
        "grid:\n  loss.gp_weight: [1.0, 10.0]\nresources: {cpu: 1}\n"
    )
    (tmp_path / "one.yaml").write_text(body + "seeds: [0]\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    where = ["--storage", "sweeps", "--address", ray_head, "--tracking-uri", uri]
    amm("sweep", "run", "one.yaml", "--name", "pt", *where, cwd=tmp_path, env=env)
    first = {r.info.run_name: r for r in trials(uri, "pt")}
    assert sorted(r.info.status for r in first.values()) == [names.FINISHED] * 2

    # the folder is lost with its driver, which had one trial RUNNING
    amm("sweep", "export", "pt", "--tracking-uri", uri, "-o", "a.json", cwd=tmp_path, env=env)
    shutil.rmtree(tmp_path / "sweeps" / "pt")
    lost, kept = sorted(first)
    MlflowClient(uri).update_run(first[lost].info.run_id, status=names.RUNNING)
    status = amm("sweep", "status", "pt", "--storage", "sweeps", "--tracking-uri", uri,
                 cwd=tmp_path, env=env)  # fmt: skip
    assert "no sweep folder here" in status and "finished: 1, running: 1" in status

    out = amm("sweep", "run", "one.yaml", "--name", "pt", *where, cwd=tmp_path, env=env)
    assert "1 of 2 trials already finished" in out, out
    assert "1 left RUNNING by a lost driver deleted (run again): running the 1 missing" in out
    runs = trials(uri, "pt")
    parents = {r.data.tags[names.TAG_PARENT] for r in runs}
    assert parents == {first[kept].data.tags[names.TAG_PARENT]}  # no second parent
    done = [r for r in runs if r.info.status == names.FINISHED]
    assert len(done) == 2 and len({r.info.run_name for r in done}) == 2
    # the finished trial was not rerun: its run is the one of the first sweep
    assert [r.info.run_id for r in done if r.info.run_name == kept] == [first[kept].info.run_id]
    old = MlflowClient(uri).get_run(first[lost].info.run_id)  # soft-deleted, KILLED
    assert (old.info.status, old.info.lifecycle_stage) == (names.KILLED, "deleted")
    # a run stopped after it wrote its folder's meta but before Tune saved anything (the state
    # a stop in that moment leaves, made here without racing a signal against Tune's first
    # save): its meta names the one cell it trains, the cell's run was deleted as lost, and
    # `resume` trains that cell only, not the spec's every cell
    meta = tmp_path / "sweeps" / "pt" / "amm_sweep.json"
    saved = meta.read_text()
    assert len(json.loads(saved)["cells"]) == 1  # the lost cell, of 2
    shutil.rmtree(tmp_path / "sweeps" / "pt")
    meta.parent.mkdir(parents=True)
    meta.write_text(saved)
    redo = next(r for r in done if r.info.run_name == lost)
    MlflowClient(uri).set_terminated(redo.info.run_id, names.KILLED)
    MlflowClient(uri).delete_run(redo.info.run_id)
    out = amm("sweep", "resume", "pt", *where, cwd=tmp_path, env=env)
    assert "stopped before its first trial started; running its 1 trials" in out, out
    done = [r for r in trials(uri, "pt") if r.info.status == names.FINISHED]
    assert len(done) == 2 and len({r.info.run_name for r in done}) == 2, out
    assert first[kept].info.run_id in {r.info.run_id for r in done}  # never rerun
    shutil.rmtree(tmp_path / "sweeps" / "pt")  # lost again: every cell is finished now
    again = amm("sweep", "run", "one.yaml", "--name", "pt", *where, cwd=tmp_path, env=env)
    assert "all 2 trials of the spec already finished" in again and "nothing to run" in again

    # round trips: a second SQLite store and a real server; twice, and with a stale export
    amm("sweep", "export", "pt", "--tracking-uri", uri, "-o", "b.json.gz", cwd=tmp_path, env=env)
    doc = json.loads(gzip.decompress((tmp_path / "b.json.gz").read_bytes()))
    assert len(doc["trials"]) == 2 and doc["spec"]
    assert all(t["metrics"][names.VAL_ERROR_GY] for t in doc["trials"] if t["status"] == "FINISHED")
    before = table(uri, tmp_path, env)
    assert "(n=1)" in before
    # `amm table FILE` (make results): the export read as the sweep it holds
    from_file = amm("table", "b.json.gz", "--metric", names.TEST_ERROR_GY, cwd=tmp_path, env=env)
    assert "\n".join(ln for ln in from_file.splitlines() if "MLflow" not in ln) == before
    assert "INFO" not in from_file  # the temporary store is set up quietly
    # --trials: one row per trial, its seed and its final number, as exported
    rows = amm("table", "b.json.gz", "--trials", "--format", "csv", cwd=tmp_path, env=env)
    got = sorted(ln.split(",")[-2:] for ln in rows.splitlines()[1:] if ln)
    want = sorted(
        [str(t["seed"]), f"{t['final'][names.TEST_ERROR_GY]:.12g}"]
        for t in doc["trials"]
        if t["status"] == "FINISHED"
    )
    assert [[s, f"{float(e):.12g}"] for s, e in got] == want
    for other in (f"sqlite:///{tmp_path / 'other.db'}", mlflow_server):
        for f in ("b.json.gz", "b.json.gz", "a.json"):
            amm("sweep", "import", f, "--tracking-uri", other, cwd=tmp_path, env=env)
        got = trials(other, "pt")
        # one run per trial: the KILLED record of a trial finished later is not imported
        assert sorted(r.info.status for r in got) == [names.FINISHED] * 2
        assert table(other, tmp_path, env) == before

    # two partial exports of one sweep (one with a failed record) merge into the whole
    first, second = (json.loads(json.dumps(t)) for t in doc["trials"])
    failed = {**second, "status": names.FAILED}  # the second trial failed on this machine ...
    parts = {"c.json": [first, failed], "d.json": [second]}  # ... and finished on that one
    for name, records in parts.items():
        (tmp_path / name).write_text(json.dumps({**doc, "trials": records}))
    merged = f"sqlite:///{tmp_path / 'merged.db'}"
    for f in ("c.json", "d.json"):
        amm("sweep", "import", f, "--tracking-uri", merged, cwd=tmp_path, env=env)
    assert sorted(r.info.status for r in trials(merged, "pt")) == [names.FINISHED] * 2
    assert table(merged, tmp_path, env) == before


def test_unreadable_exports_are_refused(tmp_path):
    env = {**os.environ}
    good = {"format": "amm-sweep-export", "version": 1, "sweep": "s", "experiment": "e",
            "parent": {}, "trials": []}  # fmt: skip
    cases = {
        "truncated.json": json.dumps(good)[:40],
        "version.json": json.dumps({**good, "version": 99}),
        "other.json": json.dumps({"hello": 1}),
        "missing.json": json.dumps({k: v for k, v in good.items() if k != "trials"}),
    }
    expect = {
        "truncated.json": "is not readable",
        "version.json": "has version 99; this amm reads version 1",
        "other.json": "is not a sweep export",
        "missing.json": "key 'trials' is missing",
    }
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        out = amm("sweep", "import", name, "--tracking-uri", uri, cwd=tmp_path, env=env, code=2)
        assert expect[name] in out and "Traceback" not in out, out
    assert not (tmp_path / "mlflow.db").exists()  # nothing written
