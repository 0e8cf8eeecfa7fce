"""Sweep plots, validation curves and the report's figures, checked line by line and point by
point on hand-made runs (and a real MLflow store for the history and `amm report`)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from helpers import sqlite_store
from scipy import stats

from amm_cli.main import main
from amm_core.config import Config
from analysis import plots
from analysis.fetch import fetch_mlflow, fetch_ray
from analysis.history import fetch_history

ERR, VAL = "test/error_gy", "val/error_gy"
LAM = "loss.gp_weight"
LAMBDAS = [0.01, 0.1, 1.0, 10.0, 100.0]


def frame(cells: dict, key: str = LAM) -> pd.DataFrame:
    rows = []
    for value, errs in cells.items():
        for seed, e in enumerate(errs):
            rows.append(
                {
                    "run_id": f"{value}-{seed}",
                    key: value,
                    "seed": seed,
                    "status": "FINISHED",
                    ERR: e,
                }
            )
    return pd.DataFrame(rows)


def test_error_against_a_log_grid_of_lambda():
    df = frame(
        {lam: [0.1 + i / 100, 0.12 + i / 100, 0.14 + i / 100] for i, lam in enumerate(LAMBDAS)}
    )
    figs = plots.sweep_plots(df, [LAM], ERR, expected=3)
    assert [t for t, _ in figs] == [f"{ERR} against {LAM}"]
    ax = figs[0][1].axes[0]
    assert ax.get_xscale() == "log"
    (bars,) = ax.containers  # one errorbar series: one line, five points with error bars
    x, y = bars.lines[0].get_data()
    assert list(x) == LAMBDAS
    assert list(y) == pytest.approx([12.0, 13.0, 14.0, 15.0, 16.0])  # mean in percent
    segments = bars.lines[2][0].get_segments()  # the vertical bars: mean ± std (2 points)
    assert len(segments) == 5 and segments[0][:, 1] == pytest.approx([10.0, 14.0])


def test_linear_axis_and_missing_seeds_annotated():
    df = frame({1.0: [0.1, 0.2], 2.0: [0.3, None], 3.0: [0.4, 0.5]}, "optim.lr")
    df.loc[df[ERR].isna(), "status"] = "FAILED"
    figs = plots.sweep_plots(df, ["optim.lr"], ERR, 2)
    ax = figs[0][1].axes[0]
    assert ax.get_xscale() == "linear"  # 1 ... 3 is no log grid
    assert [t.get_text() for t in ax.texts] == ["n=1 of 2"]
    (bars,) = ax.containers
    assert list(bars.lines[0].get_ydata()) == pytest.approx([15.0, 30.0, 45.0])


def test_variants_are_plotted_as_categories():
    df = frame(
        {"learned": [0.05, 0.07], "table3": [0.2, 0.3], "fixed_random_1": [0.5, 0.7]}, "variant"
    )
    figs = plots.sweep_plots(df, ["variant"], ERR, 2)
    assert [t for t, _ in figs] == [f"{ERR} by variant"]
    ax = figs[0][1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fixed_random_1", "learned", "table3"]
    (bars,) = ax.containers
    x, y = bars.lines[0].get_data()
    assert list(x) == [0, 1, 2] and list(y) == pytest.approx([60.0, 6.0, 25.0])


def history_frame() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two cells x two seeds; seed 1 of lambda 10 stopped early (after step 1000)."""
    runs = frame({1.0: [0.1, 0.2], 10.0: [0.05, 0.06]})
    rows = []
    vals = {
        "1.0-0": [0.50, 0.40, 0.30],
        "1.0-1": [0.60, 0.50, 0.40],
        "10.0-0": [0.30, 0.10, 0.05],
        "10.0-1": [0.20, 0.10],
    }
    for rid, vs in vals.items():
        rows += [(rid, 500 * (i + 1), v) for i, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=["run_id", "step", "value"]), runs


def test_validation_curves_one_line_per_cell_mean_over_seeds():
    history, runs = history_frame()
    fig = plots.validation_curves(history, runs, [LAM], VAL)
    ax = fig.axes[0]
    assert len(ax.lines) == 2  # one per cell
    (x1, y1), (x10, y10) = (ln.get_data() for ln in ax.lines)
    assert list(x1) == [500, 1000, 1500] and list(y1) == pytest.approx([55.0, 45.0, 35.0])
    # step 1500: only seed 0 went on
    assert list(x10) == [500, 1000, 1500] and list(y10) == pytest.approx([25.0, 10.0, 5.0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["loss.gp_weight=1 (2 seeds)", "loss.gp_weight=10 (2 seeds)"]
    assert ax.get_ylabel() == f"{VAL} (%)"


def test_history_from_a_ray_results_folder(tmp_path):
    d = tmp_path / "exp" / "t0"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({LAM: 10.0, "seed": 0}))
    lines = [
        {VAL: 0.5, "step": 10},
        {VAL: 0.3, "step": 20},
        # the final result repeats the last evaluation, with the test metrics and the reason
        {VAL: 0.3, "step": 20, ERR: 0.31, "stop_reason": "plateau"},
    ]
    (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    runs = fetch_ray(tmp_path / "exp")
    assert list(runs.df["stop_reason"]) == ["plateau"]
    h = fetch_history(runs, VAL)
    assert h.values.tolist() == [["t0", 10, 0.5], ["t0", 20, 0.3]]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A lambda study in MLflow: 3 lambdas x 2 seeds, val/error_gy at steps 500, 1000, 1500."""
    from mlflow.entities import Metric, Param

    uri, c, exp = sqlite_store(tmp_path_factory, "studies")
    parent = c.create_run(exp, tags={"amm.sweep": "lam", "amm.num_seeds": "2"})
    for i, lam in enumerate([0.1, 1.0, 10.0]):
        for seed in (0, 1):
            flat = Config().replace(**{LAM: lam, "seed": seed}).flat()
            r = c.create_run(
                exp, tags={"amm.sweep": "lam", "mlflow.parentRunId": parent.info.run_id}
            )
            rid = r.info.run_id
            c.log_batch(rid, params=[Param(k, str(v)) for k, v in flat.items()])
            curve = [
                Metric(VAL, 0.5 - 0.1 * i - 0.1 * k + 0.01 * seed, 0, 500 * (k + 1))
                for k in range(3)
            ]
            c.log_batch(rid, metrics=[*curve, Metric(ERR, 0.2 - 0.05 * i + 0.01 * seed, 0, 1500)])
            # lambda 0.1 ended on the plateau stop; the others ran their steps
            c.set_tag(rid, "amm.stop_reason", "plateau" if i == 0 else "steps")
            c.set_terminated(rid, "FINISHED")
    c.set_terminated(parent.info.run_id, "FINISHED")
    return uri


def test_history_from_mlflow(store):
    runs = fetch_mlflow("lam", store)
    reasons = runs.df.groupby(LAM)["stop_reason"].agg(set).to_dict()
    assert reasons == {0.1: {"plateau"}, 1.0: {"steps"}, 10.0: {"steps"}}
    h = fetch_history(runs, VAL)
    assert len(h) == 6 * 3 and sorted(set(h["step"])) == [500, 1000, 1500]
    fig = plots.validation_curves(h, runs.df, [LAM], VAL)
    assert len(fig.axes[0].lines) == 3
    # lambda 0.1: seeds 0 and 1 at step 500 read 0.50 and 0.51 -> 50.5 %
    assert fig.axes[0].lines[0].get_ydata()[0] == pytest.approx(50.5)


def test_report_has_the_table_the_sweep_plot_and_the_curves(store, tmp_path, capsys):
    out, pngs = tmp_path / "r.html", tmp_path / "plots"
    argv = ["report", "lam", "--tracking-uri", store, "--out", str(out), "--save-plots", str(pngs)]
    assert main(argv) == 0
    # the same plots as files, for docs/results.md to link
    assert sorted(p.name for p in pngs.iterdir()) == [
        "lam-test_error_gy_against_loss.gp_weight.png",
        "lam-val_error_gy_over_training_mean_over_seeds_per_cell.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs.iterdir())
    page = out.read_text()
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    assert imgs == [f"{ERR} against {LAM}", f"{VAL} over training, mean over seeds per cell"]
    assert "<h2>Validation curves</h2>" in page
    assert "<th>stop_reason</th>" in page and page.count("<td>plateau</td>") == 2
    # the table with the best cell and Welch's p of the others
    assert '<td class="best">10.50 ± 0.71 (n=2)' in page and "Welch&#x27;s t-test" in page
    # lambda 0.1 against lambda 10: [0.20, 0.21] vs [0.10, 0.11]
    p = stats.ttest_ind([0.20, 0.21], [0.10, 0.11], equal_var=False).pvalue
    assert f"<td>20.50 ± 0.71 (n=2) p={p:.3f}*</td>" in page and p < 0.05
