"""What the tracking store knows of a sweep, whatever became of its folder: its parent run, the
trials it finished and the grid cells still missing. `amm sweep run` of a name the store already
holds (an imported sweep, a sweep whose folder was lost) runs only the missing cells, under the
same parent; `amm sweep status` of such a name prints the ledger.

A trial's identity is (config hash, seed) within its sweep (sweeps/store/portable.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from amm_core import names
from sweeps.planning.spec import SweepSpec
from sweeps.store import portable, tracking


@dataclass(frozen=True)
class Ledger:
    """A sweep's record in its tracking store, against the grid of a spec."""

    parent_run_id: str
    experiment_id: str
    finished: list[dict[str, Any]]  # the spec's cells with a finished trial run in the store
    missing: list[dict[str, Any]]  # the spec's cells without one
    stale: list[str] = field(default_factory=list)  # trial runs left RUNNING (no driver)
    other: int = 0  # finished trial runs of the sweep that are not cells of this spec


def read(spec: SweepSpec, uri: str, name: str) -> Ledger | None:
    """The ledger of sweep `name` in the store at `uri` for a grid spec, or None when the store
    has no such sweep."""
    c = tracking.client(uri)
    parent = portable.find_parent(uri, name)
    if parent is None:
        return None
    done, stale = set(), []
    for r in portable.trials_of(c, parent):
        if r.info.status == names.FINISHED:
            done.add(portable.identity(r.data.tags, r.data.params))
        elif r.info.status == names.RUNNING:
            stale.append(r.info.run_id)
    finished, missing, mine = [], [], set()
    for cell in spec.cells():
        key = (spec.trial_config(cell).hash(), str(cell.get("seed", "")))
        mine.add(key)
        (finished if key in done else missing).append(cell)
    return Ledger(
        parent.info.run_id,
        parent.info.experiment_id,
        finished,
        missing,
        stale,
        other=len(done - mine),
    )


def reopen(uri: str, ledger: Ledger, seeds: int) -> None:
    """Before the missing cells run under the old parent: trial runs a lost driver left RUNNING
    are marked KILLED and deleted (MLflow's soft delete: their cells run again, and a trial keeps
    one run), and the parent is RUNNING again with the spec's seeds per cell."""
    c = tracking.client(uri)
    for run_id in ledger.stale:
        c.set_terminated(run_id, names.KILLED)
        c.delete_run(run_id)
    c.set_tag(ledger.parent_run_id, names.TAG_NUM_SEEDS, str(seeds))
    c.update_run(ledger.parent_run_id, status=names.RUNNING)


def plan_note(ledger: Ledger, total: int) -> str:
    """The plan line's note on what the store already holds."""
    stale = ""
    if ledger.stale:
        stale = f"; {len(ledger.stale)} left RUNNING by a lost driver deleted (run again)"
    return (
        f"{len(ledger.finished)} of {total} trials already finished in the tracking store "
        f"(parent run {ledger.parent_run_id}){stale}: running the {len(ledger.missing)} missing"
    )


def store_status(name: str, uri: str) -> str | None:
    """`amm sweep status` of a sweep known only to its tracking store (no folder here): its
    trial runs by status, or None when the store has no such sweep either."""
    parent = portable.find_parent(uri, name)
    if parent is None:
        return None
    runs = sorted(portable.trials_of(tracking.client(uri), parent), key=lambda r: r.info.run_name)
    count: dict[str, int] = {}
    for r in runs:
        count[r.info.status] = count.get(r.info.status, 0) + 1
    out = [
        f"sweep {name}: no sweep folder here; from the tracking store {uri} "
        f"(parent run {parent.info.run_id})",
        "  " + (", ".join(f"{k.lower()}: {v}" for k, v in sorted(count.items())) or "no trials"),
        *(f"  {r.info.status.lower():<9} {r.info.run_name}" for r in runs),
        f"  `amm sweep run SPEC --name {name}` runs the cells without a finished trial",
    ]
    return "\n".join(out)
