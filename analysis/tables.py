"""Summaries -> paper-style tables: cells like `2.91 ± 0.40 (n=5)`, the best cell marked, the
paper's number and a Welch verdict beside reproduced cells, and the layout of the paper's Tables
1 and 2. A `Table` holds plain strings; `analysis.render` turns it into md, latex, html or csv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from amm_core import names
from amm_core.config import Config
from amm_core.errors import ConfigError
from analysis import aggregate as agg
from analysis import paper as pp
from analysis import significance as sig
from analysis.fetch import STATUS
from analysis.significance import cell_runs, key_of

_CONFIG_KEYS = set(Config().flat())
# csv columns of a cell compared with the paper (empty for the others)
# metrics that count (components used, digits drawn): whole numbers in one trial
_COUNTS = {names.CLUSTERS_USED, names.GEN_DIGITS.rsplit("/", 1)[-1]}
PAPER_COLUMNS = ["paper_mean", "paper_std", "paper_n", "welch_t", "welch_p", "verdict"]


@dataclass
class Table:
    """A rendered-agnostic table: header, rows of cell strings, which cells are best."""

    title: str
    header: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column) to emphasise
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame | None = None  # the numbers behind it (csv)
    align: str = ""  # one of l/r per column; default: first left, the rest right

    def aligns(self) -> str:
        return self.align or "l" + "r" * (len(self.header) - 1)


def scale_of(metric: str) -> tuple[float, int]:
    """(factor, decimals): errors in percent with 2 decimals, NMI/ARI as fractions."""
    if names.is_error(metric):
        return 100.0, 2
    if metric.rsplit("/", 1)[-1] == names.CLUSTERS_USED:
        return 1.0, 1
    return 1.0, 3


def format_cell(
    mean: float, std: float, n: int, expected: int, scale: float = 100.0, digits: int = 2
) -> str:
    """`2.91 ± 0.40 (n=5)`; `(n=3 of 5)` when seeds are missing; `—` when no seed finished."""
    count = f"n={n}" if n >= expected else f"n={n} of {expected}"
    if n == 0 or not math.isfinite(mean):
        return f"— ({count})"
    if not math.isfinite(std):
        return f"{mean * scale:.{digits}f} ({count})"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} ({count})"


def format_paper(mean: float, std: float | None, n: int | None = None) -> str:
    s = f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f} ± NR"
    return s + (f" (n={n})" if n else "")


def _key_label(axes: list[str], key: tuple) -> str:
    return ", ".join(f"{a}={_fmt(v)}" for a, v in zip(axes, key, strict=True))


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v)) if abs(v) >= 1 or v == 0 else f"{v:g}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_axes(params: list[str], axes: list[str], varying: list[str]) -> None:
    for a in axes:
        if a not in params:
            others = [p for p in params if p not in varying]
            raise ConfigError(
                f"'{a}' is not a param of these runs; params that vary: "
                f"{', '.join(varying) or '(none)'}; other params: {', '.join(others) or '(none)'}"
            )


def check_metric(metrics: list[str], metric: str) -> None:
    if metric not in metrics:
        raise ConfigError(
            f"metric '{metric}' is logged by no run; metrics: {', '.join(metrics) or '(none)'}"
        )


def compare_cells(
    runs: pd.DataFrame,
    by: list[str],
    metric: str,
    summary: pd.DataFrame,
    paper: pp.Paper,
    table: int | None = None,
) -> dict[int, tuple[pp.Experiment, agg.Comparison]]:
    """summary row index -> (the experiment it reproduces, Welch comparison in percent)."""
    scale, _ = scale_of(metric)
    out = {}
    groups = cell_runs(runs, by)
    for i, row in summary.iterrows():
        cell = groups.get(key_of(tuple(row[a] for a in by)))
        if cell is None:
            continue
        exp, diff = pp.closest(cell, paper, table)
        if exp is None or diff:
            continue
        c = agg.welch_verdict(
            row["mean"] * scale,
            row["std"] * scale,
            int(row["n"]),
            exp.mean,
            exp.std,
            exp.n,
            lower_is_better=not agg.higher_is_better(metric),
        )
        out[i] = (exp, c)
    return out


def comparison_text(exp: pp.Experiment, c: agg.Comparison) -> str:
    stat = f"Welch t={c.t:.2f}, p={c.p:.3f}: " if math.isfinite(c.p) else ""
    return f"paper {exp.label} {format_paper(exp.mean, exp.std, exp.n)}; {stat}{c.verdict}"


def grid_table(
    runs: pd.DataFrame,
    rows: list[str],
    cols: list[str],
    metric: str,
    expected: int | None = None,
    paper: pp.Paper | None = None,
    title: str = "",
    significance: bool = True,
) -> Table:
    """Rows x columns of `metric` over seeds; every combination of the axes gets a cell, the
    best in bold, the others with Welch's p against it (`significance`: analysis/significance.py).
    """
    by = rows + cols
    summary = agg.summarize(runs, by, metric, expected)
    summary["best"] = agg.mark_best(summary, metric)
    p_best = sig.vs_best(runs, by, metric, summary) if significance else None
    scale, digits = scale_of(metric)
    exp_all = int(summary["expected"].max()) if len(summary) else (expected or 0)
    compared = compare_cells(runs, by, metric, summary, paper) if paper else {}

    def keys(axes: list[str]) -> list[tuple]:
        if not axes:
            return [()]
        return list(summary[axes].drop_duplicates().itertuples(index=False, name=None))

    row_keys, col_keys = keys(rows), keys(cols)
    index = {key_of(tuple(r[a] for a in by)): i for i, r in summary.iterrows()}
    corner = " \\ ".join(filter(None, [", ".join(rows), ", ".join(cols)])) or "cell"
    header = [corner] + ([_key_label(cols, ck) for ck in col_keys] if cols else [metric])
    body, best, notes = [], set(), []
    for ri, rk in enumerate(row_keys):
        line = [_key_label(rows, rk) if rows else "all runs"]
        for ci, ck in enumerate(col_keys):
            i = index.get(key_of(rk + ck))
            if i is None:
                line.append(format_cell(math.nan, math.nan, 0, exp_all))
                continue
            r = summary.loc[i]
            text = format_cell(r["mean"], r["std"], int(r["n"]), int(r["expected"]), scale, digits)
            if p_best is not None:
                text += sig.suffix(p_best[i], int(r["n"]), bool(r["best"]))
            if i in compared:
                text += " [" + comparison_text(*compared[i]) + "]"
            if r["best"]:
                best.add((ri, ci + 1))
            line.append(text)
        body.append(line)
    unit = " in percent" if scale == 100.0 else ""
    notes.append(f"{metric}{unit}: mean ± std (ddof=1) over seeds; n = finished seeds of expected")
    if p_best is not None:
        notes.append(sig.note())
    if paper is not None and not compared:
        exp, diff = pp.closest(runs, paper)
        if exp is not None:
            notes.append(
                f"no cell reproduces a paper experiment; closest is {exp.label} "
                f"({exp.key}), which differs in {pp.differences_text(runs, exp, diff)}"
            )
    data = _numbers(summary, metric)
    # the csv: p against the best cell; NaN for the best, n < 2 and a table of one cell
    data["p_vs_best"] = p_best if p_best is not None else math.nan
    for i, (exp, c) in compared.items():
        data.loc[i, PAPER_COLUMNS] = [exp.mean, exp.std, exp.n, c.t, c.p, c.verdict]
    return Table(title or f"{metric} by {corner}", header, body, best, notes, data)


def trials_table(runs: pd.DataFrame, axes: list[str], metrics: list[str], title: str = "") -> Table:
    """One row per trial (the axes, then its seed), one column per metric in the metric's scale
    (errors in percent): the per-seed numbers behind a mean ± std table. A trial without the
    metric shows its status (`KILLED`, `FAILED`, ...) instead of a number."""
    order = [a for a in axes if a in runs.columns] + (["seed"] if "seed" in runs.columns else [])
    d = runs.sort_values(order, kind="stable").reset_index(drop=True) if order else runs
    ok = {m: agg.ok_mask(d, m) for m in metrics}
    body = []
    for i, r in d.iterrows():
        line = [_fmt(r[a]) for a in order]
        for m in metrics:
            scale, digits = scale_of(m)
            if m.rsplit("/", 1)[-1] in _COUNTS:
                digits = 0  # a count is a whole number in a trial (a mean in a cell)
            line.append(f"{r[m] * scale:.{digits}f}" if ok[m][i] else f"— ({r[STATUS]})")
        body.append(line)
    header = [*order, *(m + (" (%)" if scale_of(m)[0] == 100.0 else "") for m in metrics)]
    align = "l" * len(order) + "r" * len(metrics)
    note = "one row per trial; a trial without a result shows its status"
    return Table(title or "trials", header, body, set(), [note], d[[*order, *metrics]], align)


def _numbers(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    scale, _ = scale_of(metric)
    d = summary.copy()
    for c in ("mean", "std", "ci_low", "ci_high"):
        d[c] = d[c] * scale
    d.insert(0, "metric", metric + (" (%)" if scale == 100.0 else ""))
    for c in PAPER_COLUMNS:
        d[c] = pd.Series([None] * len(d), index=d.index, dtype=object)
    return d


def paper_layout(
    runs: pd.DataFrame,
    params: list[str],
    number: int,
    metric: str,
    paper: pp.Paper,
    expected: int | None = None,
) -> Table:
    """The paper's Table `number`: its rows as published, then ours as measured."""
    t = pp.table_or_error(paper, number)
    mine = pp.select(runs, t.where)
    if mine.empty:
        seen = {k: sorted(map(str, pd.unique(runs[k]))) for k in t.where if k in runs.columns}
        raise ConfigError(
            f"--paper-table {number} needs runs with {t.where}; these runs have "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in seen.items())
        )
    by = [
        p for p in params if p in _CONFIG_KEYS and p != "seed" and mine[p].nunique(dropna=False) > 1
    ]
    summary = agg.summarize(mine, by, metric, expected)
    compared = compare_cells(mine, by, metric, summary, paper, table=number)
    scale, digits = scale_of(metric)
    header = ["Model", t.column, "Source", COMPARED]
    body = [[r.label, format_paper(r.mean, r.std, r.n), "paper", ""] for r in t.rows]
    means = [r.mean for r in t.rows]
    groups = cell_runs(mine, by)
    for i, r in summary.iterrows():
        key = tuple(r[a] for a in by)
        label = f"{t.ours} (ours)" + (f": {_key_label(by, key)}" if by else "")
        if i in compared:
            note = comparison_text(*compared[i])
        else:
            cell = groups[key_of(key)]
            exp, diff = pp.closest(cell, paper, number)
            how = pp.differences_text(cell, exp, diff) if exp else ""
            note = f"not the paper's setup: vs {exp.label}, {how}" if exp else ""
        cell_text = format_cell(r["mean"], r["std"], int(r["n"]), int(r["expected"]), scale, digits)
        body.append([label, cell_text, "measured", note])
        means.append(r["mean"] * scale if r["n"] else math.nan)
    finite = [m for m in means if math.isfinite(m)]
    best = set()
    if finite:
        target = max(finite) if agg.higher_is_better(metric) else min(finite)
        best = {(i, 1) for i, m in enumerate(means) if math.isfinite(m) and m == target}
    notes = [
        f"{paper.source}. Paper rows as published (NR: not reported); ours: {metric}"
        + (" in percent" if scale == 100.0 else "")
        + ", mean ± std over seeds."
    ]
    data = _numbers(summary, metric)
    data.insert(1, "model", [row[0] for row in body[len(t.rows) :]])
    return without_empty_columns(Table(t.caption(mine), header, body, best, notes, data, "lrll"))


COMPARED = "Compared with the paper"


def comparisons_as_notes(t: Table) -> Table:
    """A paper layout with its comparison column taken out: each filled cell a note under the
    table ('AMM (ours): paper AMM 2.86 ± 0.46 (n=5); ...'). For a page, where a column empty in
    the paper's rows is a wide blank."""
    if COMPARED not in t.header:
        return t
    j = t.header.index(COMPARED)
    notes = [f"{r[0]}: {r[j]}" for r in t.rows if r[j].strip()]
    rows = [[*r[:j], "", *r[j + 1 :]] for r in t.rows]  # emptied, then dropped
    return without_empty_columns(replace(t, rows=rows, notes=[*notes, *t.notes]))


def without_empty_columns(t: Table) -> Table:
    """The table less the columns whose every cell is empty (the comparison column when no
    cell of ours compares with the paper); `best` and the alignment follow."""
    keep = [j for j in range(len(t.header)) if any(r[j].strip() for r in t.rows)]
    if len(keep) == len(t.header):
        return t
    new = {j: i for i, j in enumerate(keep)}
    aligns = t.aligns()
    return Table(
        t.title,
        [t.header[j] for j in keep],
        [[r[j] for j in keep] for r in t.rows],
        {(i, new[j]) for i, j in t.best if j in new},
        t.notes,
        t.data,
        "".join(aligns[j] for j in keep),
    )
