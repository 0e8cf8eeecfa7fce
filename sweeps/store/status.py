"""`amm sweep status`: every cell's state and errors, from Tune's experiment state on disk."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from typing import Any

from amm_core import names
from amm_core.fmt import percent
from amm_core.shell import amm
from sweeps.planning.spec import run_name
from sweeps.store import lock as sweep_lock
from sweeps.store.folder import SweepFolder

RESULTS = "result.json"  # a trial's results, written by its worker as they come
# Tune trial status -> what `amm sweep status` calls it
STATES = {
    "TERMINATED": "finished",
    "ERROR": "failed",
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "pending",
}


def trials(folder: SweepFolder) -> list:
    """Tune's trials of a sweep folder; none when Tune has written no experiment state yet."""
    from ray.tune import ExperimentAnalysis

    # it also reads every trial's results, and warns about trials that have none yet (a live
    # or stopped sweep): not news for `amm sweep status`
    folder.tune_state()  # unreadable: a ConfigError naming it, not "every trial missing"
    quiet = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return ExperimentAnalysis(folder.path).trials
    except (ValueError, FileNotFoundError, OSError):
        return []
    finally:
        quiet.setLevel(level)


def trial_states(folder: SweepFolder) -> dict[str, str]:
    """trial id -> finished / failed / running / pending, from Tune's experiment state."""
    return {t.trial_id: STATES.get(t.status, t.status.lower()) for t in trials(folder)}


def _state(trial, folder: SweepFolder, live: bool) -> str:
    """Tune's state of a trial; without a live driver, running/pending ones are 'stopped', and
    one whose final checkpoint is on disk is 'finished' (Tune's saved state may lag a kill).
    Tune saves a running trial as PENDING (to restart it on restore): with a live driver, one
    that has started (it reported, or its folder holds results) is 'running'."""
    state = STATES.get(trial.status, trial.status.lower())
    if live and state == "pending" and trial.status == "PENDING":
        local = folder.trial_dir(trial.trial_id)  # None on remote storage
        # Tune gives a trial that never started the result {"trial_id": ...}
        reported = bool(set(trial.last_result or {}) - {"trial_id"})
        results = None if local is None else local / RESULTS
        if reported or (results is not None and results.is_file() and results.stat().st_size):
            return "running"
    if live or state not in ("running", "pending"):
        return state
    if folder.finished_on_disk(trial.trial_id):
        return "finished"
    return "stopped"


def _last_result(trial, folder: SweepFolder) -> dict[str, Any]:
    """The trial's newest result: Tune's, or the one its newest complete checkpoint on disk
    holds when that is further on (a killed driver's Tune state lags: it may have no result)."""
    last = trial.last_result or {}
    cps = folder.checkpoints(trial.trial_id)  # none on remote storage
    if not cps or last.get(names.STEP, -1) >= cps[-1][0].step:
        return last
    record, path = cps[-1]
    newer = {**record.last, names.STEP: record.step}
    if record.final:  # the test metrics
        with contextlib.suppress(OSError, ValueError):
            newer.update(json.loads((path / names.FINAL_FILE).read_text()))
    return newer


def status(name: str, storage: str | None = None) -> str:
    """Which config x seed cells are finished, failed, running or missing; errors in percent."""
    folder = SweepFolder(storage, name)
    meta = folder.meta
    driver = sweep_lock.holder(folder)
    rows: dict[str, tuple[str, ...]] = {}
    for cell in meta.cells:  # the spec's order first
        rows[run_name(cell)] = ("missing", "", "-", "-", "")
    for t in trials(folder):
        last = _last_result(t, folder)
        rows[run_name(t.config)] = (
            _state(t, folder, driver is not None),
            str(last.get(names.STEP, "")),
            percent(last.get(names.VAL_ERROR_GY)),
            percent(last.get(names.TEST_ERROR_GY)),
            t.trial_id,
        )
    counts = Counter(row[0] for row in rows.values())
    open_ = counts["stopped"] + counts["missing"]
    if driver:
        drv = f"running ({sweep_lock.describe(driver)})"
    elif open_:
        drv = f"none ({open_} trial(s) not finished: `{amm()} sweep resume {name}` continues them)"
    else:
        done = set(counts) == {"finished"}
        drv = "none (the sweep has ended" + (": every trial finished)" if done else ")")
    lines = [
        f"sweep {name} ({folder.path})",
        f"tracking: {meta.tracking_uri} (parent run {meta.parent_run_id})",
        f"driver: {drv}",
        "",
        f"{'run name':<32} {'state':<9} {'step':>7} {'val error':>10} {'test error':>10}  trial",
    ]
    for label, (state, step, val, test, tid) in rows.items():
        lines.append(f"{label:<32} {state:<9} {step:>7} {val:>10} {test:>10}  {tid}")
    lines.append("")
    lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
