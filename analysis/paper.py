"""The paper's numbers (paper_results.yaml) and which of our cells reproduce which experiment.

A cell of ours reproduces a paper experiment when every run in it has every config value the
experiment names (paper_results.yaml `config`). Pure functions on DataFrames of runs.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from amm_core.config import Config
from amm_core.errors import ConfigError

PAPER_FILE = Path(__file__).with_name("paper_results.yaml")
DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "svhn": "SVHN"}
_DEFAULTS = Config().stored_flat()  # as tracked runs hold their params


@dataclass(frozen=True)
class Experiment:
    key: str
    label: str
    table: int | None
    config: dict[str, Any]
    mean: float | None  # percent
    std: float | None
    n: int | None
    preset: str = ""  # our full preset for it (configs/): its training length is the reference


@dataclass(frozen=True)
class Row:
    """A row of a paper table: a quoted baseline, or one of the paper's own experiments."""

    label: str
    mean: float
    std: float | None
    n: int | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class Table:
    number: int
    title: str
    column: str
    where: dict[str, Any]
    ours: str  # label of our rows (AMM / SAMM)
    rows: tuple[Row, ...]
    dataset: str  # the paper's dataset (data.dataset) for this table

    def caption(self, runs: pd.DataFrame) -> str:
        """The title, naming the datasets when the runs are not on the paper's."""
        ours = sorted(map(str, _values(runs, "data.dataset")))
        if ours == [self.dataset]:
            return self.title
        shown = "/".join(DATASET_NAMES.get(d, d) for d in ours)
        return f"{self.title} (runs: {shown}, paper: {DATASET_NAMES[self.dataset]})"


@dataclass(frozen=True)
class Paper:
    source: str
    metric: str
    experiments: dict[str, Experiment]
    tables: dict[int, Table]


def load_paper(path: str | Path = PAPER_FILE) -> Paper:
    data = yaml.safe_load(Path(path).read_text())
    exps = {
        k: Experiment(
            key=k,
            label=v["label"],
            table=v.get("table"),
            config=dict(v["config"]),
            mean=v.get("mean"),
            std=v.get("std"),
            n=v.get("n"),
            preset=v.get("preset", ""),
        )
        for k, v in data["experiments"].items()
    }
    tables = {}
    for num, t in data["tables"].items():
        rows = []
        for r in t["rows"]:
            if "experiment" in r:
                e = exps[r["experiment"]]
                rows.append(Row(e.label, e.mean, e.std, e.n, experiment=e.key))
            else:
                rows.append(Row(r["label"], r["mean"], r.get("std"), r.get("n")))
        where, ours = dict(t["where"]), t["ours"]
        tables[int(num)] = Table(
            int(num), t["title"], t["column"], where, ours, tuple(rows), t["dataset"]
        )
    return Paper(data["source"], data["metric"], exps, tables)


def value_matches(actual: Any, wanted: Any) -> bool:
    """wanted: a value (numbers compare with a tolerance), a list of values, or {min, max}."""
    if isinstance(wanted, dict):
        try:
            a = float(actual)
        except (TypeError, ValueError):
            return False
        return a >= wanted.get("min", -math.inf) and a <= wanted.get("max", math.inf)
    if isinstance(wanted, list):
        return any(value_matches(actual, w) for w in wanted)
    if isinstance(wanted, bool) or isinstance(actual, bool):
        return actual == wanted
    if isinstance(wanted, int | float) and isinstance(actual, int | float):
        return math.isclose(float(actual), float(wanted), rel_tol=1e-9, abs_tol=1e-12)
    return actual == wanted


def _values(runs: pd.DataFrame, key: str) -> list[Any]:
    if key in runs.columns:
        return list(pd.unique(runs[key]))
    return [_DEFAULTS[key]] if key in _DEFAULTS else [None]


def differences(runs: pd.DataFrame, config: dict[str, Any]) -> dict[str, tuple[list, Any]]:
    """key -> (our values, the paper's) for every key where some run differs from `config`."""
    out = {}
    for key, wanted in config.items():
        vals = _values(runs, key)
        if not all(value_matches(v, wanted) for v in vals):
            out[key] = (vals, wanted)
    return out


def select(runs: pd.DataFrame, where: dict[str, Any]) -> pd.DataFrame:
    """The runs whose params satisfy every condition of `where`."""
    keep = pd.Series(True, index=runs.index)
    for key, wanted in where.items():
        col = runs[key] if key in runs.columns else pd.Series(_DEFAULTS.get(key), runs.index)
        keep &= col.map(lambda v, w=wanted: value_matches(v, w))
    return runs[keep]


def closest(
    runs: pd.DataFrame, paper: Paper, table: int | None = None
) -> tuple[Experiment | None, dict[str, tuple[list, Any]]]:
    """The paper experiment with a number that these runs differ from in the fewest keys (no
    difference = a reproduction), restricted to one table if given."""
    best, best_diff = None, None
    for e in paper.experiments.values():
        if e.mean is None or (table is not None and e.table != table):
            continue
        d = differences(runs, e.config)
        if best_diff is None or len(d) < len(best_diff):
            best, best_diff = e, d
    return best, (best_diff or {})


def describe_diff(diff: dict[str, tuple[list, Any]]) -> str:
    def show(v: Any) -> str:
        return "/".join(map(str, v)) if isinstance(v, list) else str(v)

    return ", ".join(f"{k}={show(ours)} (paper: {show(w)})" for k, (ours, w) in diff.items())


def training_diff(runs: pd.DataFrame, exp: Experiment) -> str:
    """How long these runs trained against the full preset of `exp` (the paper does not publish
    its training length): '150 steps (full preset mnist_amm: 27,500 steps)'; '' when the same.
    Runs that a time budget or a plateau stopped trained fewer steps than they were set: said."""
    if not exp.preset:
        return ""
    from amm_core import names
    from amm_core.config import load_config, total_steps
    from amm_core.presets import find_preset

    reasons = runs.get(names.STOP_REASON, pd.Series(dtype=object))
    early = int(reasons.isin([names.STOP_TIME_BUDGET, names.STOP_PLATEAU]).sum())
    fewer = f", {early} of {len(runs)} run(s) stopped earlier by a time budget or a plateau"
    fewer = fewer if early else ""
    full = total_steps(load_config(find_preset(exp.preset)))
    steps = set(_values(runs, "train.steps"))
    if steps and all(isinstance(s, numbers.Real) and s > 0 for s in steps):
        if steps == {full} and not early:
            return ""
        ours = "/".join(f"{int(s):,}" for s in sorted(steps)) + " steps"
    else:
        ours = "/".join(f"{e:g}" for e in sorted(set(_values(runs, "train.epochs")))) + " epochs"
    return f"{ours}{fewer} (full preset {exp.preset}: {full:,} steps; the paper's is not published)"


def differences_text(runs: pd.DataFrame, exp: Experiment, diff: dict) -> str:
    """The training length first (the largest difference of a short run), then the keys."""
    return ", ".join(filter(None, [training_diff(runs, exp), describe_diff(diff)]))


def table_or_error(paper: Paper, number: int) -> Table:
    if number not in paper.tables:
        raise ConfigError(
            f"--paper-table {number}: the paper has no such table here; "
            f"allowed: {', '.join(map(str, sorted(paper.tables)))}"
        )
    return paper.tables[number]
