"""Sweep-level plots: a metric against one config axis (error against lambda) with std error
bars, one line per value of another axis (the placement of the means, `prior.means`).

Uses matplotlib's object API (`Figure`, no pyplot state), so it works headless and in threads.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis import aggregate as agg

LAMBDA = "loss.gp_weight"
PLACEMENT = "prior.means"


def metric_vs_axis(
    summary: pd.DataFrame, x: str, metric: str, line: str | None = None, title: str = ""
) -> Figure:
    """`summary` from aggregate.summarize(runs, [x] (+ [line]), metric). Cells without a result
    are left out; a cell with one seed has no error bar. x is log-scaled when all values are
    positive, symlog when 0 is among them (lambda = 0 turns the penalty off)."""
    scale = 100.0 if agg.is_error(metric) else 1.0
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    groups = summary.groupby(line, dropna=False, sort=True) if line else [(None, summary)]
    xs_all = []
    for key, g in groups:
        g = g[g["n"] > 0].sort_values(x)
        if g.empty:
            continue
        xs = g[x].astype(float).to_numpy()
        xs_all.extend(xs)
        ys = g["mean"].to_numpy(dtype=float) * scale
        err = np.nan_to_num(g["std"].to_numpy(dtype=float) * scale)
        k = key[0] if isinstance(key, tuple) else key
        label = f"{line}={k}" if line else None
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
        for xi, yi, n, e in zip(xs, ys, g["n"], g["expected"], strict=True):
            if n < e:  # say so where seeds are missing
                ax.annotate(
                    f"n={n} of {e}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7
                )
    xs_all = np.asarray(xs_all, dtype=float)
    if xs_all.size and (xs_all > 0).all() and (x == LAMBDA or xs_all.max() / xs_all.min() >= 10):
        ax.set_xscale("log")
    elif xs_all.size and (xs_all >= 0).all() and (xs_all > 0).any() and (xs_all == 0).any():
        ax.set_xscale("symlog", linthresh=float(xs_all[xs_all > 0].min()))
    ax.set_xlabel(x)
    ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    ax.set_title(title or f"{metric} against {x} (mean ± std over seeds)")
    ax.grid(True, alpha=0.3)
    if line:
        ax.legend()
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def numeric_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    out = []
    for a in axes:
        v = runs[a]
        if pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v):
            out.append(a)
    return out


def sweep_plots(
    runs: pd.DataFrame, varying: list[str], metric: str, expected: int | None = None
) -> list[tuple[str, Figure]]:
    """The sweep's plots: error against lambda per placement when lambda varies, else against
    each numeric axis that varies (lines: the placement if it varies, else the first other
    varying axis)."""
    xs = [LAMBDA] if LAMBDA in varying else numeric_axes(runs, varying)
    out = []
    for x in xs:
        others = [a for a in varying if a != x]
        line = PLACEMENT if PLACEMENT in others else (others[0] if others else None)
        by = [x] + ([line] if line else [])
        s = agg.summarize(runs, by, metric, expected)
        if not (s["n"] > 0).any() or math.isnan(s["mean"].max()):
            continue
        title = f"{metric} against {x}" + (f", per {line}" if line else "")
        pooled = [a for a in others if a != line]
        if pooled:
            title += f" (pooled over {', '.join(pooled)})"
        out.append((title, metric_vs_axis(s, x, metric, line, title)))
    return out
