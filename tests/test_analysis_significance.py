"""Welch's test of every cell against the best one, on tiny hand-checked run tables."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from amm_core import names
from amm_core.config import Config
from analysis import aggregate as agg
from analysis import render, significance, tables

ERR = "test/error_gy"
NMI = "test/nmi"


def frame(cells: dict[float, list], metric: str = ERR) -> pd.DataFrame:
    """{lambda: [values, None for a failed seed]} -> a runs frame."""
    rows = []
    for lam, values in cells.items():
        for seed, v in enumerate(values):
            row = {**Config().flat(), "loss.gp_weight": lam, "seed": seed}
            row.update(status="FINISHED" if v is not None else "FAILED", **{metric: v})
            rows.append(row)
    return pd.DataFrame(rows)


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's t and Welch-Satterthwaite degrees of freedom, two-sided p from Student's t."""
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    t = (np.mean(a) - np.mean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(2 * stats.t.sf(abs(t), df))


def test_welch_p_by_hand():
    # means 2 and 5, variances 1 and 1, n 3 and 3: t = -3 / sqrt(2/3) = -3.674, df = 4
    p = significance.welch_p(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))
    assert (
        p
        == pytest.approx(2 * stats.t.sf(3 / math.sqrt(2 / 3), 4))
        == pytest.approx(0.02131, abs=1e-5)
    )
    # unequal sizes and spreads: Welch, not Student
    a, b = [0.10, 0.12, 0.14, 0.11], [0.02, 0.03, 0.07]
    assert significance.welch_p(np.array(a), np.array(b)) == pytest.approx(welch_by_hand(a, b))
    student = stats.ttest_ind(a, b, equal_var=True).pvalue
    assert not math.isclose(welch_by_hand(a, b), student, rel_tol=1e-3)
    # fewer than two seeds, or no spread in either: no test
    assert math.isnan(significance.welch_p(np.array([0.1]), np.array([0.2, 0.3])))
    assert math.isnan(significance.welch_p(np.array([0.1, 0.1]), np.array([0.2, 0.2])))
    # three equal values: no spread, even where their float std is not exactly 0
    assert math.isnan(significance.welch_p(np.full(3, 0.1), np.full(3, 0.7)))
    # the cells' test and the paper verdict's are one test
    (ma, sa), (mb, sb) = ((float(np.mean(x)), float(np.std(x, ddof=1))) for x in (a, b))
    verdict = agg.welch_verdict(ma, sa, len(a), mb, sb, len(b))
    assert verdict.p == pytest.approx(welch_by_hand(a, b)) and verdict.verdict == "worse"


def test_format_p():
    assert significance.format_p(0.0213) == "p=0.021*"
    assert significance.format_p(0.05) == "p=0.050"  # not below alpha
    assert significance.format_p(0.0004) == "p<0.001*"
    assert significance.format_p(math.nan) == "p=n/a"


# lambda 10 is the best cell (mean 3 %); lambda 1 differs clearly, lambda 100 does not,
# lambda 0.1 has one finished seed, lambda 0.01 none
CELLS = {
    0.01: [None, None],
    0.1: [0.05, None, None],
    1.0: [0.10, 0.12, 0.14],
    10.0: [0.02, 0.03, 0.04],
    100.0: [0.01, 0.05, 0.06],
}
BEST = [0.02, 0.03, 0.04]


def test_p_against_the_best_cell():
    df = frame(CELLS)
    summary = agg.summarize(df, ["loss.gp_weight"], ERR)
    p = significance.vs_best(df, ["loss.gp_weight"], ERR, summary)
    by = dict(zip(summary["loss.gp_weight"], p, strict=True))
    assert math.isnan(by[10.0])  # the best itself
    assert by[1.0] == pytest.approx(welch_by_hand([0.10, 0.12, 0.14], BEST))
    assert by[1.0] == pytest.approx(0.006458, abs=1e-6) and by[1.0] < 0.05
    assert by[100.0] == pytest.approx(welch_by_hand([0.01, 0.05, 0.06], BEST))
    assert by[100.0] == pytest.approx(0.5903, abs=1e-4) and by[100.0] > 0.05
    assert math.isnan(by[0.1]) and math.isnan(by[0.01])  # one seed; none


def test_markers_in_the_table():
    t = tables.grid_table(frame(CELLS), ["loss.gp_weight"], [], ERR)
    p100 = welch_by_hand([0.01, 0.05, 0.06], BEST)
    assert t.rows == [
        ["loss.gp_weight=0.01", "— (n=0 of 3)"],
        ["loss.gp_weight=0.1", "5.00 (n=1 of 3) p=n/a"],
        ["loss.gp_weight=1", "12.00 ± 2.00 (n=3) p=0.006*"],
        ["loss.gp_weight=10", "3.00 ± 1.00 (n=3)"],
        ["loss.gp_weight=100", f"4.00 ± 2.65 (n=3) p={p100:.3f}"],
    ]
    assert t.best == {(3, 1)}
    md = render.to_markdown(t)
    assert "| loss.gp_weight=10 | **3.00 ± 1.00 (n=3)** |" in md
    assert "Welch's t-test" in md and "equal_var=False" in md and "* p < 0.05" in md
    csv = pd.read_csv(io.StringIO(render.to_csv(t))).set_index("loss.gp_weight")
    assert csv.loc[1.0, "p_vs_best"] == pytest.approx(0.006458, abs=1e-6)
    assert math.isnan(csv.loc[10.0, "p_vs_best"]) and bool(csv.loc[10.0, "best"])


def test_higher_is_better_and_off_switch():
    df = frame({1.0: [0.5, 0.6, 0.7], 10.0: [0.8, 0.9, 0.85]}, NMI)
    t = tables.grid_table(df, ["loss.gp_weight"], [], NMI)
    p = welch_by_hand([0.5, 0.6, 0.7], [0.8, 0.9, 0.85])
    assert t.best == {(1, 1)}  # the highest NMI
    assert t.rows[0][1] == f"0.600 ± 0.100 (n=3) p={p:.3f}" + ("*" if p < 0.05 else "")
    plain = tables.grid_table(df, ["loss.gp_weight"], [], NMI, significance=False)
    assert plain.rows[0][1] == "0.600 ± 0.100 (n=3)"
    assert not any("Welch" in n for n in plain.notes)


@pytest.mark.parametrize("metric", [*names.GEN_METRICS, "test/gen/component_purity"])
def test_generation_measures_are_higher_is_better(metric):
    df = frame({1.0: [0.5, 0.6, 0.7], 10.0: [0.8, 0.9, 0.85]}, metric)
    assert tables.grid_table(df, ["loss.gp_weight"], [], metric).best == {(1, 1)}


def test_one_cell_has_nothing_to_compare():
    t = tables.grid_table(frame({10.0: BEST}), ["loss.gp_weight"], [], ERR)
    assert t.rows == [["loss.gp_weight=10", "3.00 ± 1.00 (n=3)"]]
    assert not any("Welch" in n for n in t.notes)
