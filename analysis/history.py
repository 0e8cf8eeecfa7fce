"""A metric over the steps of each run (validation curves), from MLflow or a Ray results folder.

`fetch_history(runs, metric)` -> a DataFrame with columns run_id, step, value: one row per
evaluation, in step order, each (run, step) once. MLflow: the metric's history of each run
(`MlflowClient.get_metric_history`); a Ray results folder: the result lines of each trial (the
final line repeats the last evaluation, kept once).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from amm_core import names
from amm_core.fs import json_lines
from analysis.fetch import Runs

COLUMNS = ["run_id", "step", "value"]


def _tidy(rows: list[tuple[str, int, float]]) -> pd.DataFrame:
    d = pd.DataFrame(rows, columns=COLUMNS)
    d["value"] = pd.to_numeric(d["value"], errors="coerce")
    d = d.dropna(subset=["value"]).drop_duplicates(["run_id", "step"], keep="last")
    return d.sort_values(["run_id", "step"], kind="stable").reset_index(drop=True)


def from_results(folder: str | Path, run_id: str, metric: str) -> list[tuple[str, int, float]]:
    """One Ray trial folder's result.json lines that hold `metric`."""
    rows = json_lines(Path(folder) / "result.json") if Path(folder).is_dir() else []
    return [
        (run_id, int(r.get(names.STEP, r.get("training_iteration", 0))), r[metric])
        for r in rows
        if metric in r
    ]


def fetch_history(runs: Runs, metric: str = names.VAL_ERROR_GY) -> pd.DataFrame:
    """Every run's history of `metric` (run_id, step, value); empty when none logged it."""
    out: list[tuple[str, int, float]] = []
    ids = list(runs.df["run_id"])
    if runs.artifact_dirs:
        for rid in ids:
            out += from_results(runs.artifact_dirs.get(rid, ""), rid, metric)
    elif runs.tracking_uri:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=runs.tracking_uri)
        for rid in ids:
            out += [(rid, m.step, m.value) for m in client.get_metric_history(rid, metric)]
    return _tidy(out)
