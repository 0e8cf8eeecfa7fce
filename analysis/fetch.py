"""Tracked runs -> one tidy DataFrame, one row per trial.

Two sources: an MLflow tracking store (a sweep's parent run and its children, or a whole
experiment) and, as a fallback, a Ray Tune results folder. Params come back from MLflow as
strings; `cast_params` turns them back into the types of `amm_core.config.Config`.

Columns of `Runs.df`: `run_id`, `run_name`, `status` (FINISHED / FAILED / KILLED / RUNNING ...),
one column per param (dotted config keys, typed), one per metric (`test/error_gy`, ...; the last
logged value). Only FINISHED runs with a finite metric count as a result (see aggregate.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from amm_core.config import Config
from amm_core.errors import ConfigError

SWEEP_TAG = "amm.sweep"  # on a sweep's parent run and on its children
NUM_SEEDS_TAG = "amm.num_seeds"  # seeds per cell the sweep asked for (parent tag or param)
EXPECTED_TAG = "amm.expected_trials"  # alternative name for the same number
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
VARIANT_TAG = "amm.variant"  # a trial's named override set (spec `variants`), as a "variant" column
VARIANT = "variant"
FINISHED = "FINISHED"
BASE_COLUMNS = ("run_id", "run_name", "status")

_DEFAULTS = Config().flat()


@dataclass
class Runs:
    """The trials of one sweep or experiment as a DataFrame plus what the frame is about."""

    name: str
    source: str  # where the runs came from, for messages and the report
    df: pd.DataFrame
    params: list[str]  # param columns
    metrics: list[str]  # metric columns
    expected: int | None = None  # seeds per cell the sweep declared, if it did
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    artifact_dirs: dict[str, str] = field(default_factory=dict)  # Ray: run_id -> trial folder

    def varying(self) -> list[str]:
        """Config keys (not the seed) that take more than one value over the runs; the sweep's
        `variant` first when it has several."""
        keys = [p for p in self.params if (p in _DEFAULTS or p == VARIANT) and p != "seed"]
        keys = sorted(keys, key=lambda k: k != VARIANT)
        return [k for k in keys if self.df[k].nunique(dropna=False) > 1]


def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def cast_value(key: str, raw: Any) -> Any:
    """One param string -> the type of config field `key` (other keys: a number if it parses)."""
    if not isinstance(raw, str):
        return raw
    default = _DEFAULTS.get(key)
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        return raw
    if isinstance(default, int) or isinstance(default, float) or default is None:
        try:
            f = float(raw)
        except ValueError:
            return raw
        if isinstance(default, int):
            return int(f) if math.isfinite(f) and f.is_integer() else raw
        if isinstance(default, float):
            return f
        # not a config key: keep integers as int, other numbers as float, text as text
        s = raw.strip()
        return int(s) if s.lstrip("+-").isdigit() else f
    return raw


def cast_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: cast_value(k, v) for k, v in params.items()}


def _frame(rows: list[dict[str, Any]], params: set[str], metrics: set[str]) -> pd.DataFrame:
    cols = list(BASE_COLUMNS) + sorted(params) + sorted(metrics)
    df = pd.DataFrame(rows, columns=cols)
    for m in metrics:
        df[m] = pd.to_numeric(df[m], errors="coerce")
    return df


# ---------------------------------------------------------------------------- MLflow


def _search_all(client: Any, exp_ids: list[str], filt: str) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_runs(exp_ids, filter_string=filt, max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _experiments(client: Any) -> list[Any]:
    out, token = [], None
    while True:
        page = client.search_experiments(max_results=1000, page_token=token)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _sweep_names(client: Any, exp_ids: list[str]) -> list[str]:
    """Names of sweeps in the store: parent runs (no parent of their own) tagged amm.sweep."""
    runs = _search_all(client, exp_ids, f"tags.`{SWEEP_TAG}` != ''") if exp_ids else []
    return sorted({r.data.tags[SWEEP_TAG] for r in runs if PARENT_TAG not in r.data.tags})


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _runs_frame(name: str, source: str, runs: list[Any]) -> tuple[pd.DataFrame, set, set]:
    rows, params, metrics = [], set(), set()
    for r in runs:
        p = cast_params(r.data.params)
        if VARIANT_TAG in r.data.tags:  # so that tables can have a row per variant
            p[VARIANT] = r.data.tags[VARIANT_TAG]
        params.update(p)
        metrics.update(r.data.metrics)
        row = {
            "run_id": r.info.run_id,
            "run_name": r.data.tags.get(RUN_NAME_TAG, r.info.run_name),
            "status": r.info.status,
        }
        row.update(p)
        row.update(r.data.metrics)
        rows.append(row)
    return _frame(rows, params, metrics), params, metrics


def _expected_from(run: Any) -> int | None:
    """Seeds per cell a sweep's parent declares: tag or param amm.num_seeds (or
    amm.expected_trials), else its `seeds` param (a count or a list of seeds)."""
    for key in (NUM_SEEDS_TAG, EXPECTED_TAG):
        for where in (run.data.tags, run.data.params):
            if key in where:
                try:
                    return int(float(where[key]))
                except ValueError:
                    continue
    raw = run.data.params.get("seeds")
    if raw is not None:
        try:
            v = json.loads(raw)
        except json.JSONDecodeError:
            return None
        if isinstance(v, list):
            return len(v)
        if isinstance(v, int) and v > 0:
            return v
    return None


def fetch_mlflow(name: str, tracking_uri: str | None = None) -> Runs:
    """The child runs of the sweep `name` (its parent run found by tag or run name across all
    experiments), else all runs of the experiment `name` except parent runs.

    Raises ConfigError listing the sweeps and experiments that exist when `name` is neither.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    exps = _experiments(client)
    exp_ids = [e.experiment_id for e in exps]
    q = _q(name)
    parents: list[Any] = []
    if exp_ids:
        # the sweep's parent: tagged amm.sweep and not a child itself ...
        parents = [
            r
            for r in _search_all(client, exp_ids, f"tags.`{SWEEP_TAG}` = '{q}'")
            if PARENT_TAG not in r.data.tags
        ]
        if not parents:  # ... else a run of that name that has children
            parents = [
                r
                for r in _search_all(client, exp_ids, f"tags.`{RUN_NAME_TAG}` = '{q}'")
                if PARENT_TAG not in r.data.tags
                and _search_all(client, exp_ids, f"tags.`{PARENT_TAG}` = '{r.info.run_id}'")
            ]
    if parents:
        # a sweep run twice under one name: the newest parent is the sweep
        parent = max(parents, key=lambda r: r.info.start_time or 0)
        children = _search_all(client, exp_ids, f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
        df, params, metrics = _runs_frame(name, uri, children)
        note = f" (newest of {len(parents)} parent runs)" if len(parents) > 1 else ""
        return Runs(
            name=name,
            source=f"MLflow {uri}, sweep parent run {parent.info.run_id}{note}",
            df=df,
            params=sorted(params),
            metrics=sorted(metrics),
            expected=_expected_from(parent),
            parent_run_id=parent.info.run_id,
            tracking_uri=uri,
        )
    exp = next((e for e in exps if e.name == name), None)
    if exp is None:
        sweeps = _sweep_names(client, exp_ids)
        raise ConfigError(
            f"no sweep or experiment named '{name}' in {uri}; "
            f"sweeps: {', '.join(sweeps) or '(none)'}; "
            f"experiments: {', '.join(sorted(e.name for e in exps)) or '(none)'}"
        )
    runs = _search_all(client, [exp.experiment_id], "")
    parent_ids = {r.data.tags.get(PARENT_TAG) for r in runs}
    trials = [r for r in runs if r.info.run_id not in parent_ids]
    df, params, metrics = _runs_frame(name, uri, trials)
    return Runs(
        name=name,
        source=f"MLflow {uri}, experiment '{name}' ({exp.experiment_id})",
        df=df,
        params=sorted(params),
        metrics=sorted(metrics),
        tracking_uri=uri,
    )


# ---------------------------------------------------------------------------- Ray Tune folder


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _last_result(path: Path) -> dict[str, Any] | None:
    """The last JSON line holding a test/* metric, else the last line, else None."""
    last, last_test = None, None
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a trial killed mid-write leaves a partial line
        last = row
        if any(str(k).startswith("test/") for k in row):
            last_test = row
    return last_test or last


def fetch_ray(folder: str | Path) -> Runs:
    """A Ray Tune experiment folder (storage/NAME): one trial per subfolder holding params.json
    (and result.json as JSON lines). A trial folder's config.json (written by the training loop)
    fills in keys the sweep did not vary. Status: FINISHED when a row has test/* metrics."""
    folder = Path(folder)
    marks = ("params.json", "result.json", "error.txt")
    trials = sorted(
        p for p in folder.iterdir() if p.is_dir() and any((p / m).exists() for m in marks)
    )
    if not trials:
        raise ConfigError(
            f"'{folder}' holds no Ray Tune trials (no subfolder with params.json or error.txt); "
            f"entries: {', '.join(sorted(p.name for p in folder.iterdir())[:20]) or '(none)'}"
        )
    rows, params, metrics, dirs = [], set(), set(), {}
    for t in trials:
        p: dict[str, Any] = {}
        # the resolved config the loop wrote (into the trial's final checkpoint), if any
        configs = sorted(t.glob("config.json")) or sorted(t.glob("checkpoint_*/config.json"))
        if configs:
            p.update(_flatten(json.loads(configs[-1].read_text())))
        if (t / "params.json").is_file():  # a trial that died before starting has none
            p.update(_flatten(json.loads((t / "params.json").read_text())))
        p = cast_params({k: v for k, v in p.items() if not isinstance(v, list | tuple)})
        res = _last_result(t / "result.json") or {}
        m = {
            k: v
            for k, v in res.items()
            if "/" in str(k) and isinstance(v, int | float) and not isinstance(v, bool)
        }
        status = FINISHED if any(k.startswith("test/") for k in m) else "FAILED"
        if status != FINISHED and not (t / "error.txt").exists() and not (t / "error.pkl").exists():
            status = "UNFINISHED"
        row = {"run_id": t.name, "run_name": t.name, "status": status}
        row.update(p)
        row.update(m)
        rows.append(row)
        params.update(p)
        metrics.update(m)
        dirs[t.name] = str(t)
    return Runs(
        name=folder.name,
        source=f"Ray Tune results {folder}",
        df=_frame(rows, params, metrics),
        params=sorted(params),
        metrics=sorted(metrics),
        artifact_dirs=dirs,
    )


def fetch(name: str, tracking_uri: str | None = None) -> Runs:
    """`name` is a Ray results folder if such a folder exists, else an MLflow sweep/experiment."""
    if Path(name).is_dir():
        return fetch_ray(name)
    return fetch_mlflow(name, tracking_uri)
