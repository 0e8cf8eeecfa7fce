"""Tracked runs -> one tidy DataFrame, one row per trial.

Two sources: an MLflow tracking store (a sweep's parent run and its children, or a whole
experiment) and, as a fallback, a Ray Tune results folder. Params come back from MLflow as
strings; `cast_params` turns them back into the types of `amm_core.config.Config`.

Columns of `Runs.df`: `run_id`, `run_name`, `status` (FINISHED / FAILED / KILLED / RUNNING ...),
`stop_reason` (why a finished run ended: steps, time_budget, plateau; None when not recorded),
one column per param (dotted config keys, typed), one per metric (`test/error_gy`, ...; the last
logged value). `finished(df)` says which runs ran to the end; only those, with a finite metric,
count as a result (see aggregate.py). Tag keys and statuses: `amm_core.names`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from amm_core import names, settings
from amm_core.config import Config
from amm_core.errors import ConfigError
from amm_core.fs import json_lines
from amm_core.loader import flatten

STATUS = "status"  # the column of the run's status (names.FINISHED, ...)
STOP_REASON = names.STOP_REASON  # why a finished run ended (steps, time_budget, plateau)
BASE_COLUMNS = ("run_id", "run_name", STATUS, STOP_REASON)
# keys of a Ray result line that are bookkeeping, not metrics (sweeps/driver/trainable.py)
RESULT_BOOKKEEPING = (
    names.RESULT_NODE,
    names.RESULT_RESUMED,
    names.RESULT_FINAL,
    names.RESULT_TRAINED,
)

_DEFAULTS = Config().stored_flat()  # as tracked runs hold their params
BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


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
    description: str = ""  # the sweep's description (its spec's), from the parent run's note
    artifact_dirs: dict[str, str] = field(default_factory=dict)  # Ray: run_id -> trial folder

    def varying(self) -> list[str]:
        """Config keys (not the seed) that take more than one value over the runs; the sweep's
        `variant` first when it has several."""
        keys = [p for p in self.params if (p in _DEFAULTS or p == names.VARIANT) and p != "seed"]
        keys = sorted(keys, key=lambda k: k != names.VARIANT)
        return [k for k in keys if self.df[k].nunique(dropna=False) > 1]


def finished(df: pd.DataFrame) -> pd.Series:
    """The runs that ran to the end (MLflow status FINISHED): the only ones with a result."""
    return df[STATUS] == names.FINISHED


def cast_value(key: str, raw: Any) -> Any:
    """One param string -> the type of config field `key` (other keys: a number if it parses)."""
    if not isinstance(raw, str):
        return raw
    default = _DEFAULTS.get(key)
    if isinstance(default, bool):
        return BOOLS.get(raw.strip().lower(), raw)
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


def _pages(search: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Every page of an MLflow search (client.search_runs, client.search_experiments)."""
    out, token = [], None
    while True:
        page = search(*args, max_results=1000, page_token=token, **kwargs)
        out.extend(page)
        token = page.token
        if not token:
            return out


def _search_all(client: Any, exp_ids: list[str], filt: str) -> list[Any]:
    return _pages(client.search_runs, exp_ids, filter_string=filt)


def _sweep_parents(client: Any, exp_ids: list[str], sweep: str | None = None) -> list[Any]:
    """Parent runs (no parent of their own) tagged amm.sweep (= `sweep`, if given)."""
    where = f"= '{_q(sweep)}'" if sweep is not None else "!= ''"
    runs = _search_all(client, exp_ids, f"tags.`{names.TAG_SWEEP}` {where}") if exp_ids else []
    return [r for r in runs if names.TAG_PARENT not in r.data.tags]


def _q(s: str) -> str:
    return s.replace("\\", "\\\\").replace("'", "\\'")


def _runs_frame(runs: list[Any]) -> tuple[pd.DataFrame, set, set]:
    rows, params, metrics = [], set(), set()
    for r in runs:
        p = cast_params(r.data.params)
        if names.TAG_VARIANT in r.data.tags:  # so that tables can have a row per variant
            p[names.VARIANT] = r.data.tags[names.TAG_VARIANT]
        params.update(p)
        # the MLflow UI's copies in percent (names.percent_key): tables read the fractions
        own = {k: v for k, v in r.data.metrics.items() if not names.is_percent_copy(k)}
        metrics.update(own)
        row = {
            "run_id": r.info.run_id,
            "run_name": r.data.tags.get(names.TAG_RUN_NAME, r.info.run_name),
            STATUS: r.info.status,
            STOP_REASON: r.data.tags.get(names.TAG_STOP_REASON),
        }
        row.update(p)
        row.update(own)
        rows.append(row)
    return _frame(rows, params, metrics), params, metrics


def _expected_from(run: Any) -> int | None:
    """Seeds per cell a sweep's parent declares (its tag amm.num_seeds), else None."""
    try:
        return int(float(run.data.tags[names.TAG_NUM_SEEDS]))
    except (KeyError, ValueError):
        return None


def fetch_mlflow(name: str, tracking_uri: str | None = None) -> Runs:
    """The child runs of the sweep `name` (its parent run found by the tag amm.sweep across all
    experiments), else all runs of the experiment `name` except parent runs.

    Raises ConfigError listing the sweeps and experiments that exist when `name` is neither.
    """
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or settings.tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    exps = _pages(client.search_experiments)
    exp_ids = [e.experiment_id for e in exps]
    parents = _sweep_parents(client, exp_ids, name)
    if parents:
        # a sweep run twice under one name: the newest parent is the sweep
        parent = max(parents, key=lambda r: r.info.start_time or 0)
        note = f" (newest of {len(parents)} parent runs)" if len(parents) > 1 else ""
        source = f"MLflow {uri}, sweep parent run {parent.info.run_id}{note}"
        trials = _search_all(client, exp_ids, f"tags.`{names.TAG_PARENT}` = '{parent.info.run_id}'")
    else:
        exp = next((e for e in exps if e.name == name), None)
        if exp is None:
            sweeps = sorted({r.data.tags[names.TAG_SWEEP] for r in _sweep_parents(client, exp_ids)})
            raise ConfigError(
                f"no sweep or experiment named '{name}' in {uri}; "
                f"sweeps: {', '.join(sweeps) or '(none)'}; "
                f"experiments: {', '.join(sorted(e.name for e in exps)) or '(none)'}"
            )
        parent, source = None, f"MLflow {uri}, experiment '{name}' ({exp.experiment_id})"
        runs = _search_all(client, [exp.experiment_id], "")
        parent_ids = {r.data.tags.get(names.TAG_PARENT) for r in runs}
        trials = [r for r in runs if r.info.run_id not in parent_ids]
    df, params, metrics = _runs_frame(trials)
    return Runs(
        name=name,
        source=source,
        df=df,
        params=sorted(params),
        metrics=sorted(metrics),
        expected=_expected_from(parent) if parent else None,
        parent_run_id=parent.info.run_id if parent else None,
        tracking_uri=uri,
        description=_description(parent) if parent else "",
    )


def _description(run: Any) -> str:
    """The first line of the parent run's note (sweeps/store/parent.describe writes it in bold)."""
    note = run.data.tags.get(names.TAG_NOTE, "")
    return note.splitlines()[0].strip().strip("*").strip() if note else ""


# ---------------------------------------------------------------------------- Ray Tune folder


def _last_result(path: Path) -> dict[str, Any]:
    """The last result line holding a test/* metric, else the last line, else {}."""
    rows = json_lines(path)
    return next((r for r in reversed(rows) if names.has_test_metrics(r)), rows[-1] if rows else {})


def fetch_ray(folder: str | Path) -> Runs:
    """A Ray Tune experiment folder (storage/NAME): one trial per subfolder holding params.json
    (and result.json as JSON lines). A trial folder's config.json (written by the training loop)
    fills in keys the sweep did not vary. Status: FINISHED when a row has test/* metrics."""
    config = names.CONFIG_FILE
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
        configs = sorted(t.glob(config)) or sorted(t.glob(f"checkpoint_*/{config}"))
        if configs:
            p.update(flatten(json.loads(configs[-1].read_text())))
        if (t / "params.json").is_file():  # a trial that died before starting has none
            p.update(flatten(json.loads((t / "params.json").read_text())))
        p = cast_params({k: v for k, v in p.items() if not isinstance(v, list | tuple)})
        res = _last_result(t / "result.json")
        m = {
            k: v
            for k, v in res.items()
            if "/" in str(k)
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and k not in RESULT_BOOKKEEPING
        }
        failed = any((t / f).exists() for f in ("error.txt", "error.pkl"))
        status = names.FAILED if failed else names.UNFINISHED
        status = names.FINISHED if names.has_test_metrics(m) else status
        reason = res.get(names.STOP_REASON)
        row = {"run_id": t.name, "run_name": t.name, STATUS: status, STOP_REASON: reason}
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
