"""Several grid tables as one: two metrics (test error of G_y and of eq. 18) or two sweeps (the
same study on two presets) side by side, one column group each.

Each part is a `Table` from `tables.grid_table` on the same row axes, so every part keeps its own
best cell and its own Welch tests. Rows are the union of the parts' row keys, sorted; a part
without runs in a row gets `— (n=0 of N)` there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from analysis import significance as sig
from analysis import tables
from analysis.tables import Table


@dataclass(frozen=True)
class Part:
    sweep: str
    metric: str
    table: Table  # tables.grid_table of this sweep's runs and this metric


def labels(parts: list[Part]) -> list[str]:
    """A column group's name: the metric, the sweep, or both when both vary."""
    sweeps = len({p.sweep for p in parts}) > 1
    metrics = len({p.metric for p in parts}) > 1
    if sweeps and metrics:
        return [f"{p.sweep}: {p.metric}" for p in parts]
    return [p.sweep if sweeps else p.metric for p in parts]


def _row_keys(parts: list[Part], rows: list[str]) -> list[tuple]:
    if not rows:
        return [()]
    frames = [p.table.data[rows] for p in parts if p.table.data is not None]
    keys = pd.concat(frames, ignore_index=True).drop_duplicates()
    try:
        keys = keys.sort_values(rows, kind="stable")
    except TypeError:  # values of mixed types: keep the order of first appearance
        pass
    return list(keys.itertuples(index=False, name=None))


def side_by_side(parts: list[Part], rows: list[str], cols: list[str], title: str = "") -> Table:
    """One table with a column group per part (all built with these `rows` and `cols`)."""
    names = labels(parts)
    header = [parts[0].table.header[0]]
    body = [[tables._key_label(rows, k) if rows else "all runs"] for k in _row_keys(parts, rows)]
    best: set[tuple[int, int]] = set()
    notes: list[str] = []
    col = 1
    for name, part in zip(names, parts, strict=True):
        t = part.table
        width = len(t.header) - 1
        header += [f"{name}: {h}" for h in t.header[1:]] if cols else [name]
        mine = {r[0]: (i, r) for i, r in enumerate(t.rows)}
        exp = int(t.data["expected"].max()) if t.data is not None and len(t.data) else 0
        empty = tables.format_cell(math.nan, math.nan, 0, exp)
        for ri, line in enumerate(body):
            i, r = mine.get(line[0], (None, None))
            line += r[1:] if r is not None else [empty] * width
            if i is not None:
                best |= {(ri, col + j - 1) for (bi, j) in t.best if bi == i}
        notes += [n for n in t.notes if n not in notes]
        col += width
    notes.sort(key=lambda n: n == sig.note())  # the metrics first, then the test (stable)
    if len(parts) > 1:
        notes.append(
            "each column group (" + "; ".join(names) + ") has its own best cell and p-values"
        )
    frames = []
    for part in parts:
        if part.table.data is not None:
            d = part.table.data.copy()
            d.insert(0, "sweep", part.sweep)
            frames.append(d)
    data = pd.concat(frames, ignore_index=True) if frames else None
    if not title:
        sweeps = list(dict.fromkeys(p.sweep for p in parts))
        metrics = list(dict.fromkeys(p.metric for p in parts))
        title = f"{' vs '.join(sweeps)}: {', '.join(metrics)}"
    return Table(title, header, body, best, notes, data)
