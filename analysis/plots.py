"""Sweep-level plots: a metric against one config axis (error against lambda) with std error
bars, one line per value of another axis (the placement of the means, `prior.means`); against a
categorical axis (a sweep's variants) as points with error bars; and the validation curves of
every cell on one figure (the mean over its seeds at each step).

Uses matplotlib's object API (`Figure`, no pyplot state), so it works headless and in threads.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from amm_core import names
from analysis import aggregate as agg

LAMBDA = "loss.gp_weight"
PLACEMENT = "prior.means"


def metric_vs_axis(
    summary: pd.DataFrame, x: str, metric: str, line: str | None = None, title: str = ""
) -> Figure:
    """`summary` from aggregate.summarize(runs, [x] (+ [line]), metric). Cells without a result
    are left out; a cell with one seed has no error bar. x is log-scaled when all values are
    positive, symlog when 0 is among them (lambda = 0 turns the penalty off)."""
    scale = 100.0 if names.is_error(metric) else 1.0
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


def metric_vs_category(
    summary: pd.DataFrame, x: str, metric: str, line: str | None = None, title: str = ""
) -> Figure:
    """Like `metric_vs_axis` for a categorical axis (variants, placements): one point with a std
    error bar per value of x, in the summary's order, side by side per value of `line`."""
    scale = 100.0 if names.is_error(metric) else 1.0
    cats = list(dict.fromkeys(summary[x].astype(str)))
    fig = Figure(figsize=(max(6, 1.2 * len(cats)), 4), dpi=100)
    ax = fig.add_subplot()
    groups = summary.groupby(line, dropna=False, sort=True) if line else [(None, summary)]
    groups = list(groups)
    for gi, (key, g) in enumerate(groups):
        g = g[g["n"] > 0]
        if g.empty:
            continue
        shift = (gi - (len(groups) - 1) / 2) * 0.15  # lines side by side, not on top
        xs = np.array([cats.index(str(v)) for v in g[x]], dtype=float) + shift
        ys = g["mean"].to_numpy(dtype=float) * scale
        err = np.nan_to_num(g["std"].to_numpy(dtype=float) * scale)
        k = key[0] if isinstance(key, tuple) else key
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=f"{line}={k}" if line else None)
    ax.set_xticks(range(len(cats)), cats, rotation=20 if len(cats) > 4 else 0)
    ax.set_xlabel(x)
    ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    ax.set_title(title or f"{metric} by {x} (mean ± std over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    if line:
        ax.legend()
    fig.tight_layout()
    return fig


def cell_label(by: list[str], key: tuple) -> str:
    return ", ".join(
        f"{a}={v:g}" if isinstance(v, float) else f"{a}={v}" for a, v in zip(by, key, strict=True)
    )


def validation_curves(
    history: pd.DataFrame, runs: pd.DataFrame, by: list[str], metric: str, title: str = ""
) -> Figure:
    """One line per cell of `by`: the mean of `metric` over the cell's seeds at each step.

    `history` has columns run_id, step, value (analysis.history); `runs` maps run_id to the cell.
    A seed that stopped early (plateau stop, time budget) leaves the mean of the later steps to
    the seeds that went on; the legend gives each cell's seed count."""
    scale = 100.0 if names.is_error(metric) else 1.0
    fig = Figure(figsize=(7, 4.5), dpi=100)
    ax = fig.add_subplot()
    h = history.merge(runs[["run_id", *by]], on="run_id", how="inner")
    groups = h.groupby(by, dropna=False, sort=True) if by else [((), h)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        curve = g.groupby("step", sort=True)["value"].mean()
        seeds = g["run_id"].nunique()
        label = (cell_label(by, key) if by else "all runs") + f" ({seeds} seeds)"
        ax.plot(curve.index.to_numpy(), curve.to_numpy(dtype=float) * scale, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    ax.set_title(title or f"{metric} over training, mean over seeds per cell")
    ax.grid(True, alpha=0.3)
    if len(ax.lines):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def numeric_axes(runs: pd.DataFrame, axes: list[str]) -> list[str]:
    types = pd.api.types
    return [a for a in axes if types.is_numeric_dtype(runs[a]) and not types.is_bool_dtype(runs[a])]


def sweep_plots(
    runs: pd.DataFrame, varying: list[str], metric: str, expected: int | None = None
) -> list[tuple[str, Figure]]:
    """The sweep's plots: error against lambda per placement when lambda varies, else against
    each numeric axis that varies (lines: the placement if it varies, else the first other
    varying axis); with only categorical axes (variants), against the first of them."""
    xs = [LAMBDA] if LAMBDA in varying else numeric_axes(runs, varying)
    out = []
    if not xs and varying:
        x = varying[0]
        line = varying[1] if len(varying) > 1 else None
        s = agg.summarize(runs, [x] + ([line] if line else []), metric, expected)
        if (s["n"] > 0).any():
            title = f"{metric} by {x}" + (f", per {line}" if line else "")
            pooled = varying[2:]
            if pooled:
                title += f" (pooled over {', '.join(pooled)})"
            out.append((title, metric_vs_category(s, x, metric, line, title)))
        return out
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
