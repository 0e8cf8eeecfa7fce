"""Two metrics or two sweeps side by side in one table: by hand, and `amm table` on a real
MLflow store."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from helpers import sqlite_store
from scipy import stats

from amm_cli.main import main
from amm_core.config import Config
from analysis import render, tables
from analysis.side_by_side import Part, side_by_side

GY, BAYES = "test/error_gy", "test/error_bayes"
LAM = "loss.gp_weight"
# lambda -> [(error_gy, error_bayes) per seed]; G_y is best at lambda 10, eq. 18 at lambda 1
STUDY_A = {
    1.0: [(0.10, 0.04), (0.12, 0.05), (0.14, 0.06)],
    10.0: [(0.02, 0.08), (0.03, 0.10), (0.04, 0.12)],
}
# the same study on another preset, with one more lambda
STUDY_B = {
    0.1: [(0.30, 0.30), (0.40, 0.40)],
    10.0: [(0.05, 0.05), (0.06, 0.06)],
}


def frame(cells: dict) -> pd.DataFrame:
    rows = []
    for lam, seeds in cells.items():
        for seed, (gy, bayes) in enumerate(seeds):
            row = {**Config().flat(), LAM: lam, "seed": seed, "status": "FINISHED"}
            rows.append({**row, GY: gy, BAYES: bayes})
    return pd.DataFrame(rows)


def test_two_metrics_each_with_its_own_best():
    df = frame(STUDY_A)
    parts = [Part("a", m, tables.grid_table(df, [LAM], [], m)) for m in (GY, BAYES)]
    t = side_by_side(parts, [LAM], [])
    assert t.header == [LAM, GY, BAYES]
    # G_y: lambda 10 best, lambda 1 against it p=0.006; eq. 18: lambda 1 best, 10 against it
    assert t.rows == [
        ["loss.gp_weight=1", "12.00 ± 2.00 (n=3) p=0.006*", "5.00 ± 1.00 (n=3)"],
        ["loss.gp_weight=10", "3.00 ± 1.00 (n=3)", "10.00 ± 2.00 (n=3) p=0.032*"],
    ]
    assert t.best == {(1, 1), (0, 2)}
    md = render.to_markdown(t)
    assert "| loss.gp_weight=1 | 12.00 ± 2.00 (n=3) p=0.006* | **5.00 ± 1.00 (n=3)** |" in md
    assert "each column group (test/error_gy; test/error_bayes) has its own best cell" in md
    assert sum("Welch's t-test" in n for n in t.notes) == 1  # the test named once
    assert [n.split(" ")[0] for n in t.notes] == [GY, BAYES, "p:", "each"]
    csv = pd.read_csv(io.StringIO(render.to_csv(t)))
    assert list(csv["metric"]) == [f"{GY} (%)"] * 2 + [f"{BAYES} (%)"] * 2


def test_two_sweeps_union_of_rows_sorted():
    a, b = frame(STUDY_A), frame(STUDY_B)
    parts = [
        Part("a", GY, tables.grid_table(a, [LAM], [], GY)),
        Part("b", GY, tables.grid_table(b, [LAM], [], GY)),
    ]
    t = side_by_side(parts, [LAM], [])
    assert t.header == [LAM, "a", "b"] and t.title == "a vs b: test/error_gy"
    assert t.rows == [
        ["loss.gp_weight=0.1", "— (n=0 of 3)", "35.00 ± 7.07 (n=2) p=0.104"],
        ["loss.gp_weight=1", "12.00 ± 2.00 (n=3) p=0.006*", "— (n=0 of 2)"],
        ["loss.gp_weight=10", "3.00 ± 1.00 (n=3)", "5.50 ± 0.71 (n=2)"],
    ]
    assert t.best == {(2, 1), (2, 2)}
    assert set(t.data["sweep"]) == {"a", "b"}
    # the p-values are Welch's on the literal seeds
    welch = stats.ttest_ind([0.30, 0.40], [0.05, 0.06], equal_var=False).pvalue
    assert f"{welch:.3f}" == "0.104"
    welch = stats.ttest_ind([0.10, 0.12, 0.14], [0.02, 0.03, 0.04], equal_var=False).pvalue
    assert f"{welch:.3f}" == "0.006"


def test_column_axes_are_prefixed_with_the_group():
    df = frame(STUDY_A)
    df["prior.means"] = ["learned", "table3", "learned"] * 2
    parts = [Part("a", m, tables.grid_table(df, [LAM], ["prior.means"], m)) for m in (GY, BAYES)]
    t = side_by_side(parts, [LAM], ["prior.means"])
    assert t.header[1:] == [
        f"{GY}: prior.means=learned",
        f"{GY}: prior.means=table3",
        f"{BAYES}: prior.means=learned",
        f"{BAYES}: prior.means=table3",
    ]
    assert len(t.rows) == 2 and all(len(r) == 5 for r in t.rows)


def log_sweep(c, exp: str, name: str, cells: dict) -> None:
    from mlflow.entities import Metric, Param

    parent = c.create_run(exp, run_name=name, tags={"amm.sweep": name})
    for lam, seeds in cells.items():
        for seed, (gy, bayes) in enumerate(seeds):
            flat = Config().replace(**{LAM: lam, "seed": seed}).flat()
            r = c.create_run(
                exp, tags={"amm.sweep": name, "mlflow.parentRunId": parent.info.run_id}
            )
            c.log_batch(r.info.run_id, params=[Param(k, str(v)) for k, v in flat.items()])
            c.log_batch(r.info.run_id, metrics=[Metric(GY, gy, 0, 1), Metric(BAYES, bayes, 0, 1)])
            c.set_terminated(r.info.run_id, "FINISHED")
    c.set_terminated(parent.info.run_id, "FINISHED")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, c, exp = sqlite_store(tmp_path_factory, "studies")
    log_sweep(c, exp, "lambda-a", STUDY_A)
    log_sweep(c, exp, "lambda-b", STUDY_B)
    # a sweep over another key: cannot stand beside the lambda studies
    c2 = {("learned", 0): 0.1, ("table3", 0): 0.2}
    parent = c.create_run(exp, run_name="means", tags={"amm.sweep": "means"})
    for (means, seed), e in c2.items():
        r = c.create_run(exp, tags={"amm.sweep": "means", "mlflow.parentRunId": parent.info.run_id})
        c.log_param(r.info.run_id, "prior.means", means)
        c.log_param(r.info.run_id, "seed", seed)
        c.log_metric(r.info.run_id, GY, e)
        c.set_terminated(r.info.run_id, "FINISHED")
    return uri


def amm(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_table_cli_two_metrics_and_two_sweeps(store, capsys):
    rc, out, _ = amm(
        capsys, "table", "lambda-a", "--metric", GY, "--metric", BAYES, "--tracking-uri", store,
        "--format", "md",
    )  # fmt: skip
    assert rc == 0
    assert "| loss.gp_weight | test/error_gy | test/error_bayes |" in out
    assert "| loss.gp_weight=1 | 12.00 ± 2.00 (n=3) p=0.006* | **5.00 ± 1.00 (n=3)** |" in out
    assert "| loss.gp_weight=10 | **3.00 ± 1.00 (n=3)** | 10.00 ± 2.00 (n=3) p=0.032* |" in out
    rc, out, _ = amm(
        capsys, "table", "lambda-a", "lambda-b", "--tracking-uri", store, "--format", "md"
    )
    assert rc == 0
    assert "| loss.gp_weight | lambda-a | lambda-b |" in out
    assert "| loss.gp_weight=0.1 | — (n=0 of 3) | 35.00 ± 7.07 (n=2) p=0.104 |" in out
    assert "| loss.gp_weight=10 | **3.00 ± 1.00 (n=3)** | **5.50 ± 0.71 (n=2)** |" in out
    # both at once: four column groups
    rc, out, _ = amm(
        capsys, "table", "lambda-a", "lambda-b", "--metric", GY, "--metric", BAYES,
        "--tracking-uri", store, "--format", "csv",
    )  # fmt: skip
    assert rc == 0
    csv = pd.read_csv(io.StringIO(out))
    assert len(csv) == 8 and set(csv["sweep"]) == {"lambda-a", "lambda-b"}


@pytest.mark.parametrize(
    "argv, says",
    [
        (["lambda-a", "means"], "sweeps 'lambda-a' and 'means' do not share their axes"),
        (["lambda-a", "lambda-b", "--paper-table", "1"], "--paper-table lays out one sweep"),
        (["lambda-a", "--metric", GY, "--metric", "test/bogus"], "metric 'test/bogus'"),
    ],
)
def test_side_by_side_bad_input_exit_2(store, capsys, argv, says):
    rc, out, err = amm(capsys, "table", *argv, "--tracking-uri", store)
    assert rc == 2 and says in err and out == ""


def test_report_takes_one_metric(store, capsys, tmp_path):
    rc, _, err = amm(
        capsys, "report", "lambda-a", "--metric", GY, "--metric", BAYES,
        "--tracking-uri", store, "--out", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert rc == 2 and "amm report takes one --metric" in err
    assert not (tmp_path / "r.html").exists()
