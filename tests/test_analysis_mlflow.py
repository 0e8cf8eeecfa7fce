"""Fetch from a real MLflow SQLite store, and `amm table` / `amm report` end to end.

The store is filled once per module with mlflow's own client: a sweep's parent run with child
runs (one failed), a second sweep with the paper's MNIST configuration, PNG artifacts.
"""

import html
import json
import re

import pytest
from matplotlib.figure import Figure

from amm_cli.main import main
from amm_core.config import Config
from amm_core.errors import ConfigError
from analysis import paper as pp
from analysis.fetch import fetch_mlflow, fetch_ray

ERR = "test/error_gy"
SMOKE = {
    ("learned", 10.0): [0.02, 0.03, 0.04],
    ("learned", 1.0): [0.05, 0.07, None],  # seed 2 failed
    ("random", 10.0): [0.10, 0.12, 0.14],
    ("random", 1.0): [0.2, 0.3, 0.4],
}
REPRO = [0.025, 0.030, 0.028, 0.032, 0.027]  # the paper's MNIST setup, 5 seeds


def png(path):
    fig = Figure(figsize=(1, 1), dpi=40)
    fig.add_subplot().plot([0, 1], [1, 0])
    fig.savefig(path)
    return path


def log_sweep(c, exp, name, cells, base, tags=None):
    from mlflow.entities import Metric, Param

    parent = c.create_run(exp, run_name=name, tags={"amm.sweep": name, **(tags or {})})
    ids = {}
    for (means, lam), errs in cells.items():
        for seed, e in enumerate(errs):
            over = {**base, "prior.means": means, "loss.gp_weight": lam, "seed": seed}
            flat = Config().replace(**over).flat()
            r = c.create_run(
                exp,
                run_name=f"{means}-{lam}-s{seed}",
                tags={"amm.sweep": name, "mlflow.parentRunId": parent.info.run_id},
            )
            c.log_batch(r.info.run_id, params=[Param(k, str(v)) for k, v in flat.items()])
            if e is None:
                c.set_terminated(r.info.run_id, "FAILED")
                continue
            ms = [Metric(ERR, e, 0, 100), Metric("test/nmi", 1 - e, 0, 100)]
            c.log_batch(r.info.run_id, metrics=ms)
            c.set_terminated(r.info.run_id, "FINISHED")
            ids[(means, lam, seed)] = r.info.run_id
    c.set_terminated(parent.info.run_id, "FINISHED")
    return ids


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    exp = c.create_experiment("amm-smoke", artifact_location=str(root / "artifacts"))
    base = {"model.arch": "tiny"}
    note = "**Demo budget: not a result (docs/results.md)**\n\nsweep `smoke`, 12 trials"
    tags = {"amm.num_seeds": "3", "mlflow.note.content": note}
    ids = log_sweep(c, exp, "smoke", SMOKE, base, tags=tags)
    figs = root / "figs"
    figs.mkdir()
    for name in ("tsne.png", "cluster_matrix.png"):
        png(figs / name)
    # figures on seed 1 of the best cell only: the report must find them there
    c.log_artifacts(ids[("learned", 10.0, 1)], str(figs), "figures")
    paper_cfg = pp.load_paper().experiments["mnist_amm"].config
    log_sweep(c, exp, "repro", {("learned", 10.0): REPRO}, paper_cfg)
    return uri


def amm(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_fetch_casts_and_counts(store):
    runs = fetch_mlflow("smoke", store)
    df = runs.df
    assert len(df) == 12 and runs.expected == 3 and runs.parent_run_id
    assert sorted(df["status"].value_counts().items()) == [("FAILED", 1), ("FINISHED", 11)]
    assert df["loss.gp_weight"].dtype == float and df["seed"].dtype == int
    assert df["train.figures"].map(type).eq(bool).all()
    assert set(df["prior.means"]) == {"learned", "random"}
    assert runs.varying() == ["loss.gp_weight", "prior.means"]
    assert set(runs.metrics) == {ERR, "test/nmi"}
    # the experiment as a whole: both sweeps' trials, no parent runs
    exp = fetch_mlflow("amm-smoke", store)
    assert len(exp.df) == 12 + 5 and exp.expected is None


def test_fetch_unknown_lists_what_exists(store):
    with pytest.raises(ConfigError) as e:
        fetch_mlflow("nope", store)
    assert "sweeps: repro, smoke" in str(e.value) and "amm-smoke" in str(e.value)


def test_table_cli(store, capsys):
    rc, out, _ = amm(capsys, "table", "smoke", "--tracking-uri", store, "--format", "md")
    assert rc == 0
    assert "| loss.gp_weight=10 | **3.00 ± 1.00 (n=3)** | 12.00 ± 2.00 (n=3) p=0.006* |" in out
    lam1 = "| loss.gp_weight=1 | 6.00 ± 1.41 (n=2 of 3) p=0.144 | 30.00 ± 10.00 (n=3) p=0.042* |"
    assert lam1 in out
    assert "Welch's t-test" in out
    rc, out, _ = amm(
        capsys,
        "table",
        "smoke",
        "--tracking-uri",
        store,
        "--rows",
        "prior.means",
        "--cols",
        "loss.gp_weight",
        "--metric",
        "test/nmi",
        "--format",
        "latex",
    )
    assert rc == 0 and r"\textbf{0.970 $\pm$ 0.010 (n=3)}" in out


def test_table_env_uri_and_paper_tables(store, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    rc, out, _ = amm(capsys, "table", "smoke", "--paper-table", "1", "--format", "md")
    assert rc == 0
    assert "Table 1: Test set clustering error rate" in out
    assert "| CatGAN (Springenberg, 2015) | 9.70 ± NR | paper |" in out
    assert "| AMM (ours): loss.gp_weight=10, prior.means=learned | 3.00 ± 1.00 (n=3) |" in out
    rc, out, _ = amm(capsys, "table", "repro", "--paper", "--format", "md")
    assert rc == 0
    assert "2.84 ± 0.27 (n=5) [paper AMM 2.86 ± 0.46 (n=5); Welch t=-0.08, p=0.936" in out
    assert "consistent with the paper]" in out
    rc, out, _ = amm(capsys, "table", "repro", "--paper", "--format", "csv")
    assert rc == 0 and "consistent with the paper" in out.splitlines()[1]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["table", "nope"], "sweeps: repro, smoke; experiments: "),
        (["table", "smoke", "--metric", "test/bogus"], "metrics: test/error_gy, test/nmi"),
        (["table", "smoke", "--rows", "lr"], "params that vary: loss.gp_weight, prior.means"),
        (["table", "smoke", "--paper-table", "2"], "data.labelled: 0"),
        (["table", "smoke", "--paper", "--metric", "test/nmi"], "--paper compares test/error_gy"),
        (["report", "nope"], "sweeps: repro, smoke"),
    ],
)
def test_bad_input_exit_2(store, capsys, argv, says):
    rc, out, err = amm(capsys, *argv, "--tracking-uri", store)
    assert rc == 2 and says in err and out == ""


def test_report_is_self_contained(store, capsys, tmp_path):
    out_file = tmp_path / "sub" / "report.html"
    rc, out, _ = amm(capsys, "report", "smoke", "--tracking-uri", store, "--out", str(out_file))
    assert rc == 0 and str(out_file) in out
    page = out_file.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", page, re.I)
    assert "<script" not in page.lower() and "<link" not in page.lower()
    assert "3.00 ± 1.00 (n=3)" in page and "6.00 ± 1.41 (n=2 of 3)" in page
    imgs = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', page)
    # the sweep plot, then the run figures in the paper's order from the best cell's run
    # two values of lambda: categories, not a continuous axis with ticks between them
    assert imgs[0].startswith("test/error_gy by loss.gp_weight, per prior.means")
    assert imgs[1:] == ["tsne.png", "cluster_matrix.png"]
    assert "learned-10.0-s1" in page
    # errors in percent wherever a person reads them: the run's heading and the runs table
    assert re.search(r"<h3>learned-10\.0-s1 \([^)]*\): test/error_gy = 3\.00 %</h3>", page)
    assert "<th>test/error_gy (%)</th>" in page and "<td>3.00</td>" in page
    assert "= 0.03<" not in page
    # the spec's description (the parent run's note) heads the page: the demo says what it is
    assert '<p class="description">Demo budget: not a result (docs/results.md)</p>' in page
    # beside it, what the project measured, in the README's words (analysis/measured.yaml)
    from analysis.measured import headline

    assert f'<p class="reference">For reference: {html.escape(headline())}</p>' in page
    # each metric the page shows explained in one line, from amm_core.descriptions
    from amm_core.descriptions import describe

    assert '<table class="metrics"><caption>What the metrics mean</caption>' in page
    for m in ("test/error_gy", "test/nmi"):
        assert f"<tr><td>{m}</td><td>{html.escape(describe(m))}</td></tr>" in page
    assert "<td>test/error_bayes</td>" not in page  # not logged by these runs: not explained
    # the runs table scrolls inside its own box: the page never scrolls sideways
    assert '<div class="scroll"><table><caption>Runs</caption>' in page
    assert ".scroll { max-width: 100%; overflow-x: auto; }" in page
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_ray_results_folder(tmp_path, capsys):
    def trial(name, params, rows, error=False):
        d = tmp_path / "exp" / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps(params))
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
        if error:
            (d / "error.txt").write_text("boom")

    val = {"val/error_gy": 0.5, "step": 10}
    trial("t0", {"loss.gp_weight": 10.0, "seed": 0}, [val, {ERR: 0.1, "step": 20}])
    trial("t1", {"loss": {"gp_weight": 10.0}, "seed": 1}, [val, {ERR: 0.2, "step": 20}])
    trial("t2", {"loss.gp_weight": 10.0, "seed": 2}, [val], error=True)
    trial("t3", {"loss.gp_weight": 1.0, "seed": 0}, [val, {ERR: 0.4, "step": 20}])
    runs = fetch_ray(tmp_path / "exp")
    by = runs.df.set_index("run_id")
    assert list(by["status"]) == ["FINISHED", "FINISHED", "FAILED", "FINISHED"]
    assert by.loc["t1", "loss.gp_weight"] == 10.0 and by.loc["t3", ERR] == 0.4
    rc, out, _ = amm(capsys, "table", str(tmp_path / "exp"), "--format", "md")
    assert rc == 0
    assert "| loss.gp_weight=10 | **15.00 ± 7.07 (n=2 of 3)** |" in out
    assert "| loss.gp_weight=1 | 40.00 (n=1 of 3) p=n/a |" in out  # one seed: no test


def test_all_trials_failed_says_n_0(tmp_path, capsys):
    for name, lam in (("t0", 1.0), ("t1", 10.0)):
        d = tmp_path / "exp" / name
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({"loss.gp_weight": lam, "seed": 0}))
        (d / "error.txt").write_text("died")
    (tmp_path / "exp" / "t2").mkdir()  # a trial that died before writing anything: not a trial
    rc, out, _ = amm(capsys, "table", str(tmp_path / "exp"), "--format", "md")
    assert rc == 0
    assert "| loss.gp_weight=1 | — (n=0 of 1) |" in out
    assert "| loss.gp_weight=10 | — (n=0 of 1) |" in out
