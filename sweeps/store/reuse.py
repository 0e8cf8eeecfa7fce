"""Cells a sweep need not train: studies share cells (the default preset is the reference cell of
the lambda, mean-placement and learned-vs-fixed studies), and a trial is fixed by its resolved
config and seed. `amm sweep run SPEC --reuse` copies, for each cell to run, a finished trial of
another sweep in the same tracking store with the same config hash and seed under this sweep's
parent (params, metric histories, tags, figures), named and tagged as this sweep's cell, with
`amm.reused_from` saying where it came from; only the cells without one train.
"""

from __future__ import annotations

from typing import Any

from amm_core import names
from sweeps.planning.spec import SweepSpec, run_name
from sweeps.store import portable, tracking


def _key(spec: SweepSpec, cell: dict[str, Any]) -> tuple[str, str]:
    return spec.trial_config(cell).hash(), str(cell.get("seed", ""))


def donors(uri: str, spec: SweepSpec, name: str, cells: list[dict[str, Any]]) -> dict[int, Any]:
    """Index into `cells` -> a finished trial run of another sweep with that cell's config hash
    and seed (of several, the first finished), for the cells that have one."""
    c = tracking.client(uri)
    exp_ids = portable.experiment_ids(c)
    if not exp_ids:
        return {}
    runs = c.search_runs(
        exp_ids,
        f"tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}' and attributes.status = "
        f"'{names.FINISHED}'",
        max_results=50000,
        order_by=["attributes.end_time ASC"],
    )
    found: dict[tuple[str, str], Any] = {}
    for r in runs:
        if r.data.tags.get(names.TAG_SWEEP) == name:
            continue
        found.setdefault(portable.identity(r.data.tags, r.data.params), r)
    keys = {i: _key(spec, cell) for i, cell in enumerate(cells)}
    return {i: found[k] for i, k in keys.items() if k in found}


def copy(uri: str, exp_id: str, parent_id: str, name: str, cell: dict[str, Any], donor) -> str:
    """Copy `donor` under this sweep's parent as its trial of `cell` -> the new run's id."""
    tracking.quiet_artifacts()
    c = tracking.client(uri)
    record = portable.run_record(c, donor, figures=True)
    tags = {
        **record["tags"],
        names.TAG_PARENT: parent_id,
        names.TAG_SWEEP: name,
        names.TAG_TRIAL_NAME: "reused",
        names.TAG_REUSED: f"{donor.data.tags.get(names.TAG_SWEEP, '')}/{donor.info.run_id}",
    }
    tags.pop(names.TAG_VARIANT, None)
    if names.VARIANT in cell:
        tags[names.TAG_VARIANT] = str(cell[names.VARIANT])
    tags.pop(names.TAG_RUN_NAME, None)  # the cell's own name, below
    return portable.create_run(c, exp_id, {**record, "run_name": run_name(cell)}, tags)
