"""Group trials by config axes and summarise a metric over seeds; compare with the paper.

Pure functions on DataFrames (the frame of analysis.fetch: `status` plus param and metric
columns). A trial counts as a result only when it finished (`fetch.finished`) with a finite
metric; every other trial in a cell is counted as missing, so a cell reports `n` of
`expected`, never a silent mean of fewer seeds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from amm_core import names
from analysis.fetch import finished

# by the metric's last name part (test/gen/component_purity -> component_purity); the rest, errors
# first, lower is better
HIGHER_IS_BETTER = tuple(
    m.rsplit("/", 1)[-1]
    for m in (names.NMI, names.ARI, names.CLUSTERS_USED, names.IMAGES_PER_SEC, *names.GEN_METRICS)
)
SUMMARY_COLUMNS = ("mean", "std", "n", "n_runs", "expected", "ci_low", "ci_high")
ALPHA = 0.05  # a difference is significant below this p: the tables' `*` and the paper verdict


def higher_is_better(metric: str) -> bool:
    return metric.rsplit("/", 1)[-1] in HIGHER_IS_BETTER


def ok_mask(df: pd.DataFrame, metric: str) -> pd.Series:
    """Trials that produced a result: FINISHED and a finite value of `metric`."""
    values = pd.to_numeric(df[metric], errors="coerce")
    return finished(df) & np.isfinite(values.astype(float))


def t_interval(mean: float, std: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; NaN when n < 2."""
    if n < 2 or not math.isfinite(std):
        return (math.nan, math.nan)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return (mean - half, mean + half)


def summarize(
    df: pd.DataFrame, by: list[str], metric: str, expected: int | None = None
) -> pd.DataFrame:
    """One row per cell (a combination of the `by` values): mean, std (ddof=1), n (results),
    n_runs (trials in the cell, failed included), expected (seeds the cell should have: the
    sweep's declared count, else the largest n_runs of any cell), 95% CI (ci_low, ci_high)."""
    d = df.copy()
    d["_ok"] = ok_mask(d, metric)
    d["_v"] = pd.to_numeric(d[metric], errors="coerce").where(d["_ok"])
    rows = []
    groups = d.groupby(by, dropna=False, sort=True) if by else [((), d)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        v = g["_v"].dropna().to_numpy(dtype=float)
        n = int(v.size)
        mean = float(v.mean()) if n else math.nan
        std = float(v.std(ddof=1)) if n > 1 else math.nan
        lo, hi = t_interval(mean, std, n)
        row = dict(zip(by, key, strict=True))
        row.update(mean=mean, std=std, n=n, n_runs=int(len(g)), ci_low=lo, ci_high=hi)
        rows.append(row)
    out = pd.DataFrame(rows, columns=[*by, "mean", "std", "n", "n_runs", "ci_low", "ci_high"])
    exp = expected if expected is not None else int(out["n_runs"].max() if len(out) else 0)
    out["expected"] = [max(exp, r) for r in out["n_runs"]]
    return out[[*by, *SUMMARY_COLUMNS]]


def mark_best(summary: pd.DataFrame, metric: str) -> pd.Series:
    """True for the cell(s) with the best mean (lowest error, highest NMI/ARI)."""
    means = summary["mean"].astype(float)
    if not np.isfinite(means).any():
        return pd.Series(False, index=summary.index)
    best = means.max() if higher_is_better(metric) else means.min()
    return pd.Series(np.isclose(means, best, rtol=0, atol=1e-12), index=summary.index)


@dataclass(frozen=True)
class Comparison:
    t: float
    p: float
    verdict: str


CONSISTENT = "consistent with the paper"


def welch(m1: float, s1: float, n1: int, m2: float, s2: float, n2: int) -> tuple[float, float]:
    """The one Welch test: two-sided, unequal variances, from two summaries (mean, std with
    ddof=1, n) -> (t, p); NaNs when either has fewer than 2 values, a std is not finite, or
    neither has any spread (then the test is undefined: scipy gives 0 or NaN)."""
    nan = math.nan
    if n1 < 2 or n2 < 2 or not (math.isfinite(s1) and math.isfinite(s2)) or s1 == s2 == 0:
        return nan, nan
    with warnings.catch_warnings():  # e.g. a precision-loss warning on near-equal values
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind_from_stats(m1, s1, n1, m2, s2, n2, equal_var=False)
    return float(res.statistic), float(res.pvalue)


def welch_verdict(
    mean: float,
    std: float,
    n: int,
    paper_mean: float,
    paper_std: float | None,
    paper_n: int | None,
    lower_is_better: bool = True,
    alpha: float = ALPHA,
) -> Comparison:
    """Welch's t-test (`welch`) from two summaries (ours vs the paper's) and a plain verdict.

    p >= alpha: "consistent with the paper"; otherwise "better" or "worse" by the sign of the
    difference (for errors lower is better). Both summaries must be in the same unit.
    """
    nan = math.nan
    if paper_std is None or paper_n is None or not math.isfinite(paper_std):
        return Comparison(nan, nan, "no test (paper gives no std)")
    if n < 2 or not math.isfinite(std):
        return Comparison(nan, nan, f"no test (n={n}, need 2)")
    if std == 0 and paper_std == 0:
        return Comparison(nan, nan, "no test (both stds are 0)")
    t, p = welch(mean, std, n, paper_mean, paper_std, paper_n)
    if p >= alpha:
        return Comparison(t, p, CONSISTENT)
    ours_lower = mean < paper_mean
    return Comparison(t, p, "better" if ours_lower == lower_is_better else "worse")
