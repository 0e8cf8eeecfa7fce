"""After a driver was killed: make Tune's saved state agree with the sweep folder and MLflow.

Tune saves its experiment state (`experiment_state-*.json`) every so often, not after each
result, so a driver killed with SIGKILL can leave a state that is behind: a trial listed as
running that had finished, a trial whose newest checkpoint Tune never registered. Before
`Tuner.restore`, `before_restore` marks every trial whose MLflow run is FINISHED as TERMINATED
(Tune then does not run it again); the trainable itself continues from the newest complete
checkpoint in its trial folder (`SweepFolder.checkpoints`), whatever Tune registered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from amm_core import names
from amm_core.fs import json_lines, write_atomic
from sweeps.store.folder import SweepFolder

# what Tune's saved state of a sweep folder allows `resume` to do (tune_state)
HAS_TRIALS, NO_STATE, NO_STATE_LEFT_TRIALS = "trials", "none", "none, trials ran"
# Tune's own files in the experiment folder (amm's are amm_*, trials' trial_*)
TUNE_FILES = ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json",
              "basic-variant-state-*.json", ".validate_storage_marker")  # fmt: skip


def tune_state(folder: SweepFolder) -> str:
    """HAS_TRIALS: Tune saved trials to restore. NO_STATE: no trial was ever saved or started
    (a stop before Tune's loop, or in its first turn): the sweep can run its spec's trials
    afresh. NO_STATE_LEFT_TRIALS: trials ran but Tune saved none of them (a kill -9 before
    Tune's first save): neither restore nor a fresh start would be the same sweep."""
    if folder.remote:  # what Tune itself can restore
        from ray import tune

        return HAS_TRIALS if tune.Tuner.can_restore(folder.path) else NO_STATE
    if (folder.tune_state() or {}).get("trial_data"):  # unreadable: a ConfigError naming it
        return HAS_TRIALS
    ran = folder.runs() or any(Path(folder.path).glob("trial_*"))
    return NO_STATE_LEFT_TRIALS if ran else NO_STATE


def forget_tune_files(folder: SweepFolder) -> None:
    """Remove Tune's files of a sweep folder without trials (see tune_state), keep amm's."""
    for pattern in TUNE_FILES:
        for p in Path(folder.path).glob(pattern):
            p.unlink()


def before_restore(folder: SweepFolder, client) -> list[str]:
    """Mark trials that finished (MLflow run FINISHED) as TERMINATED in Tune's newest saved
    state; returns their ids. Local or shared-filesystem storage only."""
    if folder.remote:
        return []
    states = sorted(Path(folder.path).glob("experiment_state-*.json"))
    if not states:
        return []
    path = states[-1]  # the one Tune restores from (max by name)
    data = json.loads(path.read_text())
    runs = folder.runs().items()
    finished = {t for t, r in runs if client.get_run(r).info.status == names.FINISHED}
    changed = []
    for entry in data.get("trial_data", []):
        state = json.loads(entry[0])
        tid = state.get("trial_id")
        if tid not in finished or state.get("status") == "TERMINATED":
            continue
        state["status"] = "TERMINATED"
        entry[0] = json.dumps(state, indent=2)
        results = json_lines(folder.trial_dir(tid) / "result.json")  # no line cut by a kill
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
