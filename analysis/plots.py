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
from matplotlib.ticker import NullLocator

from amm_core import names
from analysis import aggregate as agg

LAMBDA = "loss.gp_weight"
PLACEMENT = "prior.means"
MIN_CONTINUOUS = 3  # a numeric axis with fewer distinct values is drawn as categories
MAX_TICKS = 12  # a continuous axis with at most this many grid values has a tick at each


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
    values = np.unique(xs_all)
    if 0 < values.size <= MAX_TICKS:  # ticks at the grid's values, not between them
        ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.xaxis.set_minor_locator(NullLocator())
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
    cats = list(dict.fromkeys(category_text(v) for v in summary[x]))
    fig = Figure(figsize=(max(6, 1.2 * len(cats)), 4), dpi=100)
    ax = fig.add_subplot()
    groups = summary.groupby(line, dropna=False, sort=True) if line else [(None, summary)]
    groups = list(groups)
    for gi, (key, g) in enumerate(groups):
        g = g[g["n"] > 0]
        if g.empty:
            continue
        shift = (gi - (len(groups) - 1) / 2) * 0.15  # lines side by side, not on top
        xs = np.array([cats.index(category_text(v)) for v in g[x]], dtype=float) + shift
        ys = g["mean"].to_numpy(dtype=float) * scale
        err = np.nan_to_num(g["std"].to_numpy(dtype=float) * scale)
        k = key[0] if isinstance(key, tuple) else key
        ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=3, label=f"{line}={k}" if line else None)
    ax.set_xticks(range(len(cats)), cats, rotation=20 if len(cats) > 4 else 0)
    ax.set_xlim(-0.5, len(cats) - 0.5)  # each category in its own slot, not at the frame's edge
    ax.set_xlabel(x)
    ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    ax.set_title(title or f"{metric} by {x} (mean ± std over seeds)")
    ax.grid(True, axis="y", alpha=0.3)
    if line:
        ax.legend()
    fig.tight_layout()
    return fig


def category_text(v: object) -> str:
    """A grid value as a tick label: 3.0 -> '3', 0.001 -> '0.001', 'learned' as is."""
    return f"{v:g}" if isinstance(v, float) else str(v)


def cell_label(by: list[str], key: tuple) -> str:
    return ", ".join(
        f"{a}={v:g}" if isinstance(v, float) else f"{a}={v}" for a, v in zip(by, key, strict=True)
    )


def mean_curve(cell: pd.DataFrame) -> pd.Series:
    """The mean of `value` over a cell's runs at the steps every run of the cell has (history
    rows run_id, step, value), by step. Seeds that stop at different steps (a time budget, a
    plateau stop) would otherwise make the mean at their last steps the mean of fewer seeds: a
    false jump where one seed's value stands in for all."""
    runs = cell["run_id"].nunique()
    per_step = cell.groupby("step", sort=True)["run_id"].nunique()
    common = per_step.index[per_step == runs]
    return cell[cell["step"].isin(common)].groupby("step", sort=True)["value"].mean()


def validation_curves(
    history: pd.DataFrame, runs: pd.DataFrame, by: list[str], metric: str, title: str = ""
) -> Figure:
    """Per cell of `by`: each seed's curve of `metric`, thin, and the mean over the seeds
    (`mean_curve`: at the steps every seed has), thick, in the cell's colour.

    `history` has columns run_id, step, value (analysis.history); `runs` maps run_id to the cell.
    A cell of one seed is its seed's curve; the legend gives each cell's seed count."""
    scale = 100.0 if names.is_error(metric) else 1.0
    fig = Figure(figsize=(10, 5), dpi=100)
    ax = fig.add_subplot()
    h = history.merge(runs[["run_id", *by]], on="run_id", how="inner")
    groups = h.groupby(by, dropna=False, sort=True) if by else [((), h)]
    for i, (key, g) in enumerate(groups):
        key = key if isinstance(key, tuple) else (key,)
        color = f"C{i % 10}"
        seeds = g["run_id"].nunique()
        label = (cell_label(by, key) if by else "all runs") + f" ({seeds} seed{'s' * (seeds > 1)})"
        if seeds > 1:
            for _, r in g.groupby("run_id", sort=True):
                x, y = r["step"].to_numpy(), r["value"].to_numpy(dtype=float) * scale
                ax.plot(x, y, color=color, lw=0.8, alpha=0.35, gid="seed")
            label += ", mean where all have a value"
        curve = mean_curve(g)
        ax.plot(
            curve.index.to_numpy(),
            curve.to_numpy(dtype=float) * scale,
            color=color,
            lw=2,
            marker="." if len(curve) < 30 else None,
            label=label,
            gid="mean",
        )
    ax.set_xlabel("step")
    ax.set_ylabel(metric + (" (%)" if scale == 100.0 else ""))
    ax.set_title(title or f"{metric} over training per cell: its seeds (thin) and their mean")
    ax.grid(True, alpha=0.3)
    if len(ax.lines):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def numeric_axes(runs: pd.DataFrame, axes: list[str], least: int = 0) -> list[str]:
    """The axes drawn on a continuous x axis: numbers (not booleans) with at least `least`
    (default MIN_CONTINUOUS) distinct values; fewer (a grid of two) are categories."""
    types = pd.api.types
    return [
        a
        for a in axes
        if types.is_numeric_dtype(runs[a])
        and not types.is_bool_dtype(runs[a])
        and runs[a].nunique() >= (least or MIN_CONTINUOUS)
    ]


def sweep_plots(
    runs: pd.DataFrame, varying: list[str], metric: str, expected: int | None = None
) -> list[tuple[str, Figure]]:
    """The sweep's plots: error against lambda per placement when lambda varies, else against
    each numeric axis that varies (lines: the placement if it varies, else the first other
    varying axis); with only categorical axes (variants), against the first of them."""
    xs = [LAMBDA] if LAMBDA in numeric_axes(runs, varying) else numeric_axes(runs, varying)
    out = []
    if not xs and varying:
        # categories: numbers in their order, then the rest as the grid gives them
        x = varying[0]
        runs = runs.sort_values(x, kind="stable") if x in numeric_axes(runs, [x], 1) else runs
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
