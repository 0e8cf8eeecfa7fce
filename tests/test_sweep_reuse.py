"""`amm sweep run --reuse`: a cell with a finished trial of another sweep in the store (same config
hash and seed) is copied under the new sweep's parent instead of trained.

The donor sweep is written by `amm sweep import` of a small export made here (a real SQLite
store, no training); a spec whose every cell it covers then runs without Ray.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_sweep_portable import amm as run_amm

from amm_core import names
from sweeps.planning.spec import load_spec, run_name
from sweeps.store import portable, reuse

REPO = Path(__file__).resolve().parent.parent


def amm(*args: str, cwd: Path) -> str:
    """`amm` as a user runs it (tests/test_sweep_portable.py), with RAY_ADDRESS pointing nowhere:
    a Ray start would fail loudly."""
    return run_amm(*args, cwd=cwd, env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})


def spec(tmp: Path, name: str, body: str) -> Path:
    p = tmp / f"{name}.yaml"
    p.write_text(f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-reuse-test\n{body}")
    return p


def donor_export(tmp: Path, spec_path: Path) -> Path:
    """An export of sweep 'donor': one finished trial per cell, error 0.1 * (index + 1)."""
    s = load_spec(str(spec_path))
    trials = []
    for i, cell in enumerate(s.cells()):
        cfg = s.trial_config(cell)
        tags = {names.TAG_HASH: cfg.hash(), names.TAG_ROLE: names.ROLE_TRIAL}
        if names.VARIANT in cell:
            tags[names.TAG_VARIANT] = cell[names.VARIANT]
        err = 0.1 * (i + 1)
        trials.append({
            "run_name": run_name(cell), "status": names.FINISHED, "start_time": 1000 + i,
            "end_time": 2000 + i, "params": {k: str(v) for k, v in cfg.flat().items()},
            "tags": tags, "final": {names.TEST_ERROR_GY: err},
            "metrics": {names.TEST_ERROR_GY: [[10, err + 0.05, 1500], [20, err, 1600]]},
        })  # fmt: skip
    doc = {
        "format": portable.FORMAT, "version": portable.VERSION, "sweep": "donor",
        "experiment": "amm-reuse-test", "spec": {}, "trials": trials,
        "parent": {"run_name": "donor", "status": names.FINISHED, "params": {}, "tags": {}},
    }  # fmt: skip
    out = tmp / "donor.json"
    out.write_text(json.dumps(doc))
    return out


def test_reuse_copies_finished_cells_and_trains_none(tmp_path, data_root):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    donor = spec(tmp_path, "donor", "variants:\n  low: {loss.gp_weight: 1.0}\n"
                 "  high: {loss.gp_weight: 10.0}\nseeds: [0, 1]\n")  # fmt: skip
    amm("sweep", "import", str(donor_export(tmp_path, donor)), "--tracking-uri", uri, cwd=tmp_path)

    # which cells another sweep's trials cover: same config (gp 10), same seed; not seed 2
    grid = spec(tmp_path, "grid", "grid:\n  loss.gp_weight: [10.0, 100.0]\nseeds: [1, 2]\n")
    s = load_spec(str(grid))
    found = reuse.donors(uri, s, "new", s.cells())
    assert {i: s.cells()[i] for i in found} == {0: {"loss.gp_weight": 10.0, "seed": 1}}
    assert found[0].data.tags[names.TAG_VARIANT] == "high"
    assert reuse.donors(uri, s, "donor", s.cells()) == {}  # a sweep never reuses its own

    # a spec whose every cell is covered runs without Ray (RAY_ADDRESS points nowhere)
    one = spec(tmp_path, "one", "grid:\n  loss.gp_weight: [10.0]\nseeds: [0, 1]\n")
    out = amm("sweep", "run", str(one), "--name", "new", "--reuse", "--tracking-uri", uri,
              "--storage", "sweeps", cwd=tmp_path)  # fmt: skip
    assert "2 of 2 cells copied from finished trials of donor" in out, out
    assert "nothing to train" in out, out
    c = MlflowClient(uri)
    parent = portable.find_parent(uri, "new")
    assert parent.info.status == names.FINISHED
    runs = {r.info.run_name: r for r in portable.trials_of(c, parent)}
    assert sorted(runs) == [run_name(c) for c in load_spec(str(one)).cells()]
    olds = {r.info.run_id: r for r in portable.trials_of(c, portable.find_parent(uri, "donor"))}
    for r in runs.values():
        assert r.info.status == names.FINISHED
        assert names.TAG_VARIANT not in r.data.tags  # the donor's variant name is not this cell's
        sweep, run_id = r.data.tags[names.TAG_REUSED].split("/")
        assert sweep == "donor" and run_id in olds
        assert r.data.params == olds[run_id].data.params
        hist = [(m.step, m.value) for m in c.get_metric_history(r.info.run_id,
                                                                 names.TEST_ERROR_GY)]  # fmt: skip
        old = [(m.step, m.value) for m in c.get_metric_history(run_id, names.TEST_ERROR_GY)]
        assert sorted(hist) == sorted(old) and len(hist) == 2
    assert not (tmp_path / "sweeps" / "new").exists()  # nothing trained: no sweep folder

    # the table reads the copies like trained trials: seeds 0 and 1 of "high" (0.3 and 0.4)
    out = amm("table", "new", "--tracking-uri", uri, "--metric", names.TEST_ERROR_GY,
              cwd=tmp_path)  # fmt: skip
    assert "35.00 ± 7.07" in out, out

    # again: the store holds every cell of "new" finished; nothing is copied twice
    out = amm("sweep", "run", str(one), "--name", "new", "--reuse", "--tracking-uri", uri,
              "--storage", "sweeps", cwd=tmp_path)  # fmt: skip
    assert "nothing to run" in out, out
    assert len(portable.trials_of(c, parent)) == 2
