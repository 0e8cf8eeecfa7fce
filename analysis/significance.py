"""Which cells of a table differ from its best cell: Welch's t-test on the seeds.

Pure functions on the runs frame (analysis.fetch) and a summary (aggregate.summarize): the best
cell is the one `aggregate.mark_best` marks (lowest error, highest NMI/ARI); every other cell's
finished seeds are tested against the best cell's with Welch's two-sided t-test
(`aggregate.welch`, also the paper verdict's), and the cell gets `p=0.004*` (`*`: p <
`aggregate.ALPHA`) or `p=n/a` when either cell has fewer than 2 seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis import aggregate as agg

NOTE = (
    "p: Welch's t-test (two-sided, unequal variances: scipy.stats.ttest_ind equal_var=False) of "
    "each cell's seeds against the best cell's (in bold); * p < {alpha:g}; n/a: fewer than 2 "
    "seeds in the cell or in the best cell"
)


def key_of(key: tuple) -> tuple:
    """A cell key usable in a dict: NaN (a run without that param) never equals itself."""
    return tuple("<missing>" if isinstance(v, float) and math.isnan(v) else v for v in key)


def cell_runs(runs: pd.DataFrame, by: list[str]) -> dict[tuple, pd.DataFrame]:
    """Cell key (always a tuple) -> the runs in that cell."""
    if not by:
        return {(): runs}
    return {
        key_of(k if isinstance(k, tuple) else (k,)): g
        for k, g in runs.groupby(by, dropna=False, sort=True)
    }


def cell_values(runs: pd.DataFrame, by: list[str], metric: str) -> dict[tuple, np.ndarray]:
    """Cell key (a tuple of the `by` values) -> the metric of its finished seeds."""
    d = runs[agg.ok_mask(runs, metric)]
    return {k: g[metric].to_numpy(dtype=float) for k, g in cell_runs(d, by).items()}


def welch_p(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p of Welch's t-test (`aggregate.welch`) of two samples; NaN when either has
    fewer than 2 values or neither has any spread."""
    if len(a) < 2 or len(b) < 2:
        return math.nan

    def spread(x: np.ndarray) -> float:  # exactly 0 for equal values (np.std may not be)
        return float(np.std(x, ddof=1)) if np.ptp(x) else 0.0

    return agg.welch(float(np.mean(a)), spread(a), len(a), float(np.mean(b)), spread(b), len(b))[1]


def vs_best(
    runs: pd.DataFrame, by: list[str], metric: str, summary: pd.DataFrame
) -> pd.Series | None:
    """p-value of each summary row against the best row (NaN: the best itself, a cell without
    results, or n < 2); None when fewer than two cells have a result (nothing to compare)."""
    if int((summary["n"] > 0).sum()) < 2:
        return None
    best = agg.mark_best(summary, metric)
    ref = summary.index[best.to_numpy()][0]
    values = cell_values(runs, by, metric)

    def of(i: int) -> np.ndarray:
        return values.get(key_of(tuple(summary.loc[i, a] for a in by)), np.empty(0))

    base = of(ref)
    return pd.Series(
        [math.nan if best[i] else welch_p(of(i), base) for i in summary.index],
        index=summary.index,
        dtype=float,
    )


def format_p(p: float) -> str:
    """`p=0.004*` (significant at ALPHA), `p=0.210`, `p<0.001*`, `p=n/a`."""
    if not math.isfinite(p):
        return "p=n/a"
    star = "*" if p < agg.ALPHA else ""
    return f"p<0.001{star}" if p < 0.001 else f"p={p:.3f}{star}"


def suffix(p: float, n: int, best: bool) -> str:
    """What a cell gets after its mean ± std: nothing for the best cell and a cell without
    results, else ` p=...`."""
    return "" if best or n == 0 else " " + format_p(p)


def note() -> str:
    return NOTE.format(alpha=agg.ALPHA)
