"""After a driver was killed: make Tune's saved state agree with the sweep folder and MLflow.

Tune saves its experiment state (`experiment_state-*.json`) every so often, not after each
result, so a driver killed with SIGKILL can leave a state that is behind: a trial listed as
running that had finished, a trial whose newest checkpoint Tune never registered. Before
`Tuner.restore`, `before_restore` marks every trial whose MLflow run is FINISHED as TERMINATED
(Tune then does not run it again); the trainable itself continues from the newest complete
checkpoint in its trial folder (`checkpoints`), whatever Tune registered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.fs import json_lines, write_atomic

META = ".metadata.json"  # a Tune checkpoint's metadata (ours: step, final, last)


def trial_dir(sweep_dir: str, trial_id: str) -> Path:
    return Path(sweep_dir) / names.trial_dirname(trial_id)


def checkpoints(folder: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    """(step, folder, metadata) of the trial's checkpoints in storage, oldest first."""
    out = []
    if not folder.is_dir():
        return out
    for d in folder.glob("checkpoint_*"):
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            continue  # being written, or damaged
        if isinstance(meta, dict) and "step" in meta and (d / names.STATE_FILE).is_file():
            out.append((int(meta["step"]), d, meta))
    return sorted(out, key=lambda c: (c[0], bool(c[2].get("final")), c[1].name))


def finished_on_disk(folder: Path) -> bool:
    """The trial wrote its final checkpoint (test metrics and run files) before the stop."""
    cps = checkpoints(folder)
    return bool(cps and cps[-1][2].get("final"))


def _finished_in_mlflow(cb) -> set[str]:
    done = set()
    for trial_id, run_id in cb._runs.items():
        if cb.client.get_run(run_id).info.status == names.FINISHED:
            done.add(trial_id)
    return done


def before_restore(sweep_dir: str, cb) -> list[str]:
    """Mark trials that finished (MLflow run FINISHED) as TERMINATED in Tune's newest saved
    state; returns their ids. Local or shared-filesystem storage only."""
    if "://" in sweep_dir:
        return []
    states = sorted(Path(sweep_dir).glob("experiment_state-*.json"))
    if not states:
        return []
    path = states[-1]  # the one Tune restores from (max by name)
    data = json.loads(path.read_text())
    finished = _finished_in_mlflow(cb)
    changed = []
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0])
        tid = state.get("trial_id")
        if tid not in finished or state.get("status") == "TERMINATED":
            continue
        state["status"] = "TERMINATED"
        entry[0] = json.dumps(state, indent=2)
        results = json_lines(trial_dir(sweep_dir, tid) / "result.json")  # no line cut by a kill
        if results:
            meta = json.loads(entry[1])
            meta["last_result"] = results[-1]
            entry[1] = json.dumps(meta, indent=2)
        changed.append(tid)
    if changed:
        write_atomic(path, json.dumps(data))
        print(
            f"amm: {len(changed)} trial(s) finished before the driver stopped and will not run "
            f"again: {', '.join(changed)}",
            file=sys.stderr,
        )
    return changed
