"""analysis.aggregate on tiny tables whose answers are worked out by hand."""

import math

import pandas as pd
import pytest
from scipy import stats

from analysis import aggregate as agg

ERR = "test/error_gy"


def runs(rows):
    return pd.DataFrame(rows, columns=["status", "cell", "seed", ERR])


@pytest.fixture
def table():
    F = "FINISHED"
    return runs(
        [
            (F, "a", 0, 1.0),
            (F, "a", 1, 2.0),
            (F, "a", 2, 3.0),
            (F, "b", 0, 4.0),
            (F, "b", 1, 6.0),
            ("FAILED", "b", 2, None),  # failed: counted, not averaged
            (F, "b", 3, float("nan")),  # NaN is a failed run, never a number
            ("KILLED", "b", 4, 100.0),  # killed with a stale value: not a result
        ]
    )


def test_summary_by_hand(table):
    s = agg.summarize(table, ["cell"], ERR).set_index("cell")
    a, b = s.loc["a"], s.loc["b"]
    assert (a["mean"], a["std"], a["n"], a["n_runs"]) == (2.0, 1.0, 3, 3)
    assert b["mean"] == 5.0 and b["std"] == pytest.approx(math.sqrt(2))
    assert (b["n"], b["n_runs"]) == (2, 5)
    # expected: the most runs of any cell (5), so a is "3 of 5" too
    assert list(s["expected"]) == [5, 5]
    # 95% t interval: t(0.975, df=2) = 4.302653 (table value); half = t * 1 / sqrt(3)
    half = 4.302653 / math.sqrt(3)
    assert a["ci_low"] == pytest.approx(2 - half, abs=1e-5)
    assert a["ci_high"] == pytest.approx(2 + half, abs=1e-5)


def test_declared_seeds_and_single_seed(table):
    s = agg.summarize(table, ["cell"], ERR, expected=3).set_index("cell")
    assert s.loc["a", "expected"] == 3
    assert s.loc["b", "expected"] == 5  # never fewer than the runs that exist
    one = agg.summarize(table[table.seed == 0], ["cell"], ERR)
    assert list(one["n"]) == [1, 1] and one["std"].isna().all() and one["ci_low"].isna().all()


def test_no_grouping_and_two_axes(table):
    s = agg.summarize(table, [], ERR)
    assert len(s) == 1 and s.loc[0, "n"] == 5 and s.loc[0, "mean"] == pytest.approx(16 / 5)
    t2 = table.assign(lam=[1, 1, 10, 1, 1, 1, 10, 10])
    s2 = agg.summarize(t2, ["cell", "lam"], ERR).set_index(["cell", "lam"])
    assert s2.loc[("a", 1), "n"] == 2 and s2.loc[("b", 10), "n"] == 0
    assert math.isnan(s2.loc[("b", 10), "mean"])


def test_best_cell_direction():
    s = pd.DataFrame({"mean": [0.3, 0.1, float("nan"), 0.2]})
    assert list(agg.mark_best(s, ERR)) == [False, True, False, False]
    assert list(agg.mark_best(s, "test/nmi")) == [True, False, False, False]
    assert not agg.mark_best(pd.DataFrame({"mean": [float("nan")]}), ERR).any()


def welch_by_hand(m1, s1, n1, m2, s2, n2):
    a, b = s1**2 / n1, s2**2 / n2
    t = (m1 - m2) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))
    return t, 2 * stats.t.sf(abs(t), df)


def test_welch_consistent_by_hand():
    c = agg.welch_verdict(3.0, 0.5, 5, 2.86, 0.46, 5)
    # t = 0.14 / sqrt(0.25/5 + 0.2116/5) = 0.14 / 0.303842 = 0.46077
    assert c.t == pytest.approx(0.46077, abs=1e-4)
    t, p = welch_by_hand(3.0, 0.5, 5, 2.86, 0.46, 5)
    assert c.p == pytest.approx(p) and c.p > 0.05
    assert c.verdict == "consistent with the paper"


def test_welch_worse_and_better():
    worse = agg.welch_verdict(5.0, 0.3, 5, 2.86, 0.46, 5)
    assert worse.t == pytest.approx(2.14 / math.sqrt(0.09 / 5 + 0.2116 / 5))
    assert worse.p < 0.05 and worse.verdict == "worse"
    better = agg.welch_verdict(1.0, 0.2, 10, 2.86, 0.46, 5)
    assert better.p < 0.05 and better.verdict == "better"
    # NMI: higher is better, so a higher mean is "better"
    assert agg.welch_verdict(0.9, 0.01, 5, 0.5, 0.01, 5, lower_is_better=False).verdict == "better"


def test_welch_without_numbers():
    assert agg.welch_verdict(3.0, 0.5, 5, 9.70, None, None).verdict == (
        "no test (paper gives no std)"
    )
    one = agg.welch_verdict(3.0, float("nan"), 1, 2.86, 0.46, 5)
    assert one.verdict.startswith("no test") and math.isnan(one.p)
