"""The sweep's MLflow parent run as a summary: the spec as an artifact, its description as the
run's note, and at the end the sweep's best and mean objective as metrics, so that the MLflow runs
table can sort sweeps by result."""

from __future__ import annotations

import math
import statistics
from typing import Any

from amm_core import names
from sweeps.store import tracking


def describe(uri: str, run_id: str, spec: Any, name: str) -> None:
    """Spec file as artifact `spec/<file>`, a note with the description and the grid."""
    c = tracking.client(uri)
    c.log_artifact(run_id, str(spec.path), names.SPEC_DIR)
    axes = ", ".join(f"{k} in {v}" for k, v in spec.axes().items()) if spec.search is None else ""
    note = [
        f"**{spec.description or name}**",
        "",
        f"sweep `{name}`, spec `{spec.path.name}`, {spec.num_trials()} trials",
    ]
    if axes:
        note.append(f"grid: {axes}")
    if spec.overrides:
        note.append("overrides: " + ", ".join(f"{k}={v}" for k, v in spec.overrides.items()))
    note += [
        "",
        "errors (`*/error_gy`, `*/error_bayes`) are stored as fractions: 0.25 = 25 %; the "
        "columns `*_percent` hold the same errors in percent",
    ]
    c.set_tag(run_id, names.TAG_NOTE, "\n".join(note))


def summarize(uri: str, exp_id: str, sweep: str, parent_id: str) -> dict[str, float]:
    """best/<metric>, mean/<metric> over finished trials, logged on the parent -> them."""
    c = tracking.client(uri)
    children = [
        r
        for r in tracking.sweep_runs(uri, exp_id, sweep)
        if r.info.run_id != parent_id and r.info.status == names.FINISHED
    ]
    out: dict[str, float] = {names.TRIALS_FINISHED: float(len(children))}
    for key in names.OBJECTIVES:
        vals = [(r.data.metrics[key], r) for r in children if key in r.data.metrics]
        vals = [(v, r) for v, r in vals if math.isfinite(v)]
        if not vals:
            continue
        best_v, best_run = min(vals, key=lambda x: x[0])
        out[f"best/{key}"] = best_v
        out[f"mean/{key}"] = statistics.fmean(v for v, _ in vals)
        if key == names.OBJECTIVES[0]:
            c.set_tag(parent_id, names.TAG_BEST_RUN, best_run.info.run_name)
    # once per value: a resume that changes nothing logs nothing (no repeated rows at step 0)
    logged = c.get_run(parent_id).data.metrics
    tracking.log_metrics(c, parent_id, {k: v for k, v in out.items() if logged.get(k) != v}, 0)
    return out
