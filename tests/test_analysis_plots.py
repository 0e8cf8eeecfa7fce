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
    assert list(ax.get_xticks()) == [1.0, 2.0, 3.0]  # ticks at the grid's values
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


def mean_lines(ax) -> list:
    return [ln for ln in ax.lines if ln.get_gid() == "mean"]


def test_validation_curves_each_seed_and_the_mean_where_all_seeds_are():
    history, runs = history_frame()
    fig = plots.validation_curves(history, runs, [LAM], VAL)
    ax = fig.axes[0]
    assert len([ln for ln in ax.lines if ln.get_gid() == "seed"]) == 4  # each seed drawn
    (x1, y1), (x10, y10) = (ln.get_data() for ln in mean_lines(ax))
    assert list(x1) == [500, 1000, 1500] and list(y1) == pytest.approx([55.0, 45.0, 35.0])
    # step 1500: only seed 0 went on; the mean stops where the seeds stop being all there
    assert list(x10) == [500, 1000] and list(y10) == pytest.approx([25.0, 10.0])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "loss.gp_weight=1 (2 seeds), mean where all have a value",
        "loss.gp_weight=10 (2 seeds), mean where all have a value",
    ]
    assert ax.get_ylabel() == f"{VAL} (%)"
    # a seed line and its cell's mean share a colour
    seeds = [ln for ln in ax.lines if ln.get_gid() == "seed"]
    assert seeds[0].get_color() == mean_lines(ax)[0].get_color() != seeds[2].get_color()


def test_seeds_stopped_at_different_steps_make_no_false_spike():
    """Two seeds on a time budget stop at steps 663 and 666: averaged per step, the 'mean' would
    read seed 0 alone at 663 and seed 1 alone at 666 (a drop, then a jump)."""
    runs = frame({1.0: [0.1, 0.3]})
    rows = [("1.0-0", 500, 0.10), ("1.0-1", 500, 0.30), ("1.0-0", 663, 0.05)]
    rows += [("1.0-1", 666, 0.40)]
    history = pd.DataFrame(rows, columns=["run_id", "step", "value"])
    curve = plots.mean_curve(history)
    assert list(curve.index) == [500] and curve.tolist() == pytest.approx([0.2])
    ax = plots.validation_curves(history, runs, [LAM], VAL).axes[0]
    (mean,) = mean_lines(ax)
    assert list(mean.get_xdata()) == [500]
    ends = sorted(ln.get_xdata()[-1] for ln in ax.lines if ln.get_gid() == "seed")
    assert ends == [663, 666]  # each seed drawn to its own end
    # one seed: its curve is the mean, drawn once
    one = history[history["run_id"] == "1.0-0"]
    ax = plots.validation_curves(one, runs, [LAM], VAL).axes[0]
    assert len(ax.lines) == 1 and list(ax.lines[0].get_xdata()) == [500, 663]


def test_a_grid_of_two_values_is_drawn_as_categories():
    df = frame({1.0: [0.05, 0.07], 3.0: [0.2, 0.3]}, "loss.cluster_weight")
    figs = plots.sweep_plots(df, ["loss.cluster_weight"], ERR, 2)
    assert [t for t, _ in figs] == [f"{ERR} by loss.cluster_weight"]
    ax = figs[0][1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3"]  # no 1.25 ... 2.75
    (bars,) = ax.containers
    assert list(bars.lines[0].get_ydata()) == pytest.approx([6.0, 25.0])
    # numbers as categories keep their order: 10 after 2
    df = frame({10.0: [0.1], 2.0: [0.2]}, "loss.cluster_weight")
    ax = plots.sweep_plots(df, ["loss.cluster_weight"], ERR, 1)[0][1].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "10"]


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
    assert len(mean_lines(fig.axes[0])) == 3 and len(fig.axes[0].lines) == 3 + 6
    # lambda 0.1: seeds 0 and 1 at step 500 read 0.50 and 0.51 -> 50.5 %
    assert mean_lines(fig.axes[0])[0].get_ydata()[0] == pytest.approx(50.5)


def test_report_has_the_table_the_sweep_plot_and_the_curves(store, tmp_path, capsys):
    out, pngs = tmp_path / "r.html", tmp_path / "plots"
    argv = ["report", "lam", "--tracking-uri", store, "--out", str(out), "--save-plots", str(pngs)]
    assert main(argv) == 0
    # the same plots as files, for docs/results.md to link
    assert sorted(p.name for p in pngs.iterdir()) == [
        "lam-test_error_gy_against_loss.gp_weight.png",
        "lam-val_error_gy_over_training_per_cell_its_seeds_and_their_mean.png",
    ]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs.iterdir())
    page = out.read_text()
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    curves = f"{VAL} over training per cell: its seeds and their mean"
    assert imgs == [f"{ERR} against {LAM}", curves]
    # the curves at the page's width; figures are never shrunk below their own size
    assert f'<figure class="wide"><img alt="{curves}"' in page
    assert "figure img { max-width: 100%;" in page and "520px" not in page
    assert "<h2>Validation curves</h2>" in page
    assert "<th>stop_reason</th>" in page and page.count("<td>plateau</td>") == 2
    # the table with the best cell and Welch's p of the others
    assert '<td class="best">10.50 ± 0.71 (n=2)' in page and "Welch&#x27;s t-test" in page
    # lambda 0.1 against lambda 10: [0.20, 0.21] vs [0.10, 0.11]
    p = stats.ttest_ind([0.20, 0.21], [0.10, 0.11], equal_var=False).pvalue
    assert f"<td>20.50 ± 0.71 (n=2) p={p:.3f}*</td>" in page and p < 0.05


def test_a_variant_study_is_plotted_by_variant_alone(tmp_path_factory, tmp_path):
    """Variants that set several keys (learned vs fixed means x placement): one plot by
    variant, not one by a key the variants set, pooled over another."""
    from mlflow.entities import Param

    from amm_core.names import VARIANT

    uri, c, exp = sqlite_store(tmp_path_factory, "variants")
    parent = c.create_run(exp, tags={"amm.sweep": "lvf", "amm.num_seeds": "2"})
    variants = {
        "learned_random3": {"prior.means": "learned", "prior.init_means": "random"},
        "fixed_random3": {"prior.means": "random", "prior.init_means": "none"},
        "learned_table3": {"prior.means": "learned", "prior.init_means": "table3"},
        "fixed_table3": {"prior.means": "table3", "prior.init_means": "none"},
    }
    for i, (name, keys) in enumerate(variants.items()):
        for seed in (0, 1):
            flat = {**Config().replace(**keys, seed=seed).flat(), VARIANT: name}
            rid = c.create_run(
                exp, tags={"amm.sweep": "lvf", "mlflow.parentRunId": parent.info.run_id}
            ).info.run_id
            c.log_batch(rid, params=[Param(k, str(v)) for k, v in flat.items()])
            c.log_metric(rid, ERR, 0.03 + 0.01 * i + 0.001 * seed)
            c.set_terminated(rid, "FINISHED")
    pngs = tmp_path / "plots"
    argv = ["report", "lvf", "--tracking-uri", uri, "--out", str(tmp_path / "r.html")]
    assert main([*argv, "--save-plots", str(pngs)]) == 0
    assert sorted(p.name for p in pngs.iterdir()) == ["lvf-test_error_gy_by_variant.png"]
