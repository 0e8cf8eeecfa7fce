"""One real smoke sweep (local Ray, MLflow in SQLite) run as a newcomer would, from a project
folder: the quiet console, trial names = run names, errors in percent, the next commands; the
sweep found by name alone afterwards (index under runs/); the MLflow parent run as a summary.
Its trials go through the restart phase (two starts), so that the phase runs inside Ray too."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
SETS = ["train.steps=20", "train.eval_every=10", "train.figures=false", "data.val_size=500"]
# each trial first trains a second start for 10 steps (train.restarts, docs/method.md section 9):
# the console counts the phase's steps against the plan's total (10 + 20)
SETS += ["train.restarts=2", "train.restart_steps=10", "loss.cluster_weight=1"]


def amm(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amm_cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, data_root):
    proj = tmp_path_factory.mktemp("project")
    # a user's project: the spec files, not the package (its code folders would shadow it)
    skip = shutil.ignore_patterns("*.py", "__pycache__", "driver", "store", "planning")
    shutil.copytree(REPO / "sweeps", proj / "sweeps", ignore=skip)
    shutil.copytree(REPO / "configs", proj / "configs")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env.pop("AMM_SWEEP_STORAGE", None)
    env.pop("AMM_DATA_DIR", None)  # --data-dir instead
    env["OMP_NUM_THREADS"] = "1"
    # non-default places, so that "found by name" has something to find
    args = ["sweep", "run", "sweeps/smoke.yaml", "--name", "nb", "--storage", "elsewhere"]
    args += ["--tracking-uri", "sqlite:///track/m.db", "--data-dir", str(data_root)]
    (proj / "track").mkdir()
    for s in SETS:
        args += ["--set", s]
    r = amm(*args, cwd=proj, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return proj, env, r


def test_console_is_quiet_and_talks_in_percent(sweep):
    proj, env, r = sweep
    err, out = r.stderr, r.stdout
    plan = err.splitlines()[0]
    # the budget in steps: what ends each trial, the same on any machine; the restart phase's
    # other start counted in, as the progress lines count to it (20 + 10)
    assert re.match(
        r"sweep nb: 4 trials of 30 steps each, 2 at a time \(1 CPU each, 2 CPUs\), ETA ~\d+s", plan
    ), err
    for noise in ("Checkpoint successfully", "Trial name", "TensorBoard", " INFO ", "Token auth"):
        assert noise not in err + out, noise
    assert err.splitlines()[1] == (
        "each trial first trains 2 starts of 10 steps (train.restarts): its first lines come "
        "after 20 steps"
    )
    evals = [ln for ln in err.splitlines() if "val error" in ln and "best" in ln]
    assert len(evals) == 8  # 4 trials x 2 evaluations
    pct = r"\d+\.\d\d %"
    assert re.search(r"lambda=10,seed=1 +step +30/30  val error " + pct + "  best " + pct, err)
    assert re.search(r"lambda=10,seed=1 +step +20/30  val error ", err)  # the adopted start
    assert len(re.findall(r"finished: val error \d+\.\d\d %, test error \d+\.\d\d %", err)) == 4
    # the summary table: rows in the spec's order, errors in percent
    rows = re.findall(r"^(lambda=\S+) +finished +20 +(\d+\.\d\d) % +(\d+\.\d\d) %", out, re.M)
    assert [n for n, *_ in rows] == [
        "lambda=1,seed=0",
        "lambda=1,seed=1",
        "lambda=10,seed=0",
        "lambda=10,seed=1",
    ]
    uri = f"sqlite:///{proj.resolve() / 'track' / 'm.db'}"
    assert f"mlflow ui --backend-store-uri {uri} --port 5000" in out
    exp_id = re.search(r"#/experiments/(\w+)/runs\?workflowType=machine_learning", out).group(1)
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment(exp_id)
    assert exp.name == "amm-smoke"  # the link is that sweep's
    # ... and opens the view the sweep stored: its trials, flat, sorted by the objective, which
    # is a column (MLflow 3's shared views; checked in Chromium for docs/mlflow-runs.png)
    assert re.search(r"/runs\?workflowType=machine_learning&viewStateShareKey=amm-nb\s", out)
    view = json.loads(exp.tags["mlflow.sharedViewState.amm-nb"])
    assert view["searchFilter"] == "tags.`amm.sweep` = 'nb' and tags.`amm.role` = 'trial'"
    # ... the errors in percent, as the console shows them (MLflow has no display format)
    assert view["orderByKey"] == "metrics.`test/error_gy_percent`" and view["orderByAsc"] is True
    assert view["selectedColumns"][:2] == [
        "metrics.`test/error_gy_percent`", "metrics.`val/error_gy_percent`"
    ]  # fmt: skip
    assert {"params.`loss.gp_weight`", "params.`seed`"} <= set(view["selectedColumns"])
    assert "amm table nb" in out and "amm report nb" in out
    # the printed commands run as pasted into a shell in the same folder, venv not on PATH
    printed = re.findall(r"^  (\S*amm (?:table|sweep status) nb)  ", out, re.M)
    assert len(printed) == 2, out
    plain = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"} | {"PATH": "/usr/bin:/bin"}
    for cmd in printed:
        run = subprocess.run(cmd, shell=True, cwd=proj, env=plain, capture_output=True, text=True)
        assert run.returncode == 0 and "nb" in run.stdout, (cmd, run.stderr[-2000:])


def test_trial_names_are_run_names(sweep):
    proj, _, _ = sweep
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(proj / "elsewhere" / "nb")).trials
    assert sorted(str(t) for t in trials) == [
        "lambda=1,seed=0",
        "lambda=1,seed=1",
        "lambda=10,seed=0",
        "lambda=10,seed=1",
    ]


def test_found_by_name_alone(sweep):
    proj, env, _ = sweep
    st = amm("sweep", "status", "nb", cwd=proj, env=env)
    assert st.returncode == 0 and "4 finished" in st.stdout, st.stderr
    # nothing is stopped: the driver line says the sweep ended, not how to resume
    assert "driver: none (the sweep has ended: every trial finished)" in st.stdout
    assert "stopped" not in st.stdout and "resume" not in st.stdout
    assert re.search(r"lambda=1,seed=0 +finished +20 +\d+\.\d\d % +\d+\.\d\d %", st.stdout)
    table = amm("table", "nb", cwd=proj, env=env)
    assert table.returncode == 0 and "(n=2)" in table.stdout, table.stderr
    # a flag still overrides the index: an empty store has no such sweep
    other = amm("table", "nb", "--tracking-uri", f"sqlite:///{proj / 'x.db'}", cwd=proj, env=env)
    assert other.returncode == 2


def test_nothing_written_beside_the_store_or_into_the_project(sweep):
    """The project folder gets only what the README names (runs/, the store), the store's folder
    only the store and runs/mlartifacts: no ./mlruns (MLflow's default artifact root), no lock."""
    from mlflow.tracking import MlflowClient

    from sweeps.store import tracking

    proj, _, _ = sweep
    made = {p.name for p in proj.iterdir()} - {"x.db"}  # test_found_by_name_alone's other store
    assert sorted(made) == ["configs", "elsewhere", "runs", "sweeps", "track"]
    assert sorted(p.name for p in (proj / "track").iterdir()) == ["m.db", "runs"]
    uri = f"sqlite:///{proj.resolve() / 'track' / 'm.db'}"
    exp = MlflowClient(uri).get_experiment_by_name("amm-smoke")
    where = proj.resolve() / "track" / "runs" / "mlartifacts" / "amm-smoke"
    assert exp.artifact_location == str(where)
    assert list(where.glob("*/artifacts/spec/smoke.yaml"))  # the parent's spec, on disk there
    assert tracking.init_lock(uri).parent != proj / "track"


def test_parent_run_is_a_summary(sweep):
    from mlflow.tracking import MlflowClient

    proj, _, _ = sweep
    c = MlflowClient(f"sqlite:///{proj / 'track' / 'm.db'}")
    exp = c.get_experiment_by_name("amm-smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # UI: Model training
    runs = c.search_runs([exp.experiment_id], "tags.`amm.sweep` = 'nb'")
    parent = next(r for r in runs if r.data.tags.get("amm.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("amm.role") == "trial"]
    m = parent.data.metrics
    errs = [r.data.metrics["test/error_gy"] for r in children]
    assert m["best/test/error_gy"] == pytest.approx(min(errs))
    assert m["mean/test/error_gy"] == pytest.approx(sum(errs) / 4)
    assert "best/val/error_gy" in m and m["trials_finished"] == 4
    # stored errors are fractions, and the run's description says so
    assert "stored as fractions: 0.25 = 25 %" in parent.data.tags["mlflow.note.content"]
    assert "smoke test" in parent.data.tags["mlflow.note.content"]
    assert [a.path for a in c.list_artifacts(parent.info.run_id, "spec")] == ["spec/smoke.yaml"]
    for r in children:  # the UI's copies in percent of the stored fractions
        m = r.data.metrics
        assert m["test/error_gy_percent"] == pytest.approx(100 * m["test/error_gy"])
        assert m["val/error_bayes_percent"] == pytest.approx(100 * m["val/error_bayes"])
    from analysis.fetch import fetch

    runs = fetch("nb", f"sqlite:///{proj / 'track' / 'm.db'}")  # analysis reads the fractions
    assert "test/error_gy" in runs.metrics and not any("percent" in k for k in runs.metrics)
    for r in children:  # bookkeeping as tags, not metrics
        assert "epoch" not in r.data.metrics and "amm/resumed_from_step" not in r.data.metrics
        assert "amm/trained_steps" not in r.data.metrics  # the console's, not the model's
        assert r.data.metrics["restart/chosen"] in (0, 1)  # the start the trial went on with
        assert re.fullmatch(r"0: -?\d+\.\d{4}, 1: -?\d+\.\d{4}", r.data.tags["amm.restart_scores"])
        assert re.fullmatch(r"0: 0\.\d{4}, 1: 0\.\d{4}", r.data.tags["amm.restart_val_errors"])
        assert r.data.tags["amm.resumed_from_step"] == "0"


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    if os.environ.get("AMM_REQUIRE_BROWSER"):  # .ci/run sets it: CI never skips this test
        pytest.fail("no chromium, but AMM_REQUIRE_BROWSER is set")
    pytest.skip(
        "no chromium on this machine: the real-browser check of `amm report` needs Debian's "
        "`chromium` package (.ci/run installs it, so CI always runs this test)"
    )


CHECK = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt);
  const out = document.createElement("pre");
  out.id = "amm-check";
  out.textContent = JSON.stringify({images: imgs.length, bad: bad,
    tables: document.querySelectorAll("table").length,
    rows: document.querySelectorAll("tbody tr").length});
  document.body.appendChild(out);
});
</script>"""


def test_report_renders_in_a_real_browser(sweep, tmp_path):
    """`amm report NAME` (found by name), opened in headless Chromium: its tables are there and
    every image decodes (the browser's own decoder, naturalWidth > 0)."""
    import json

    browser = chromium()
    proj, env, _ = sweep
    r = amm("report", "nb", "--out", str(tmp_path / "report.html"), cwd=proj, env=env)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "report.html").read_text()
    (tmp_path / "checked.html").write_text(page.replace("</body>", CHECK + "</body>"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
         "--dump-dom", (tmp_path / "checked.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="amm-check">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    res = json.loads(found.group(1).replace("&quot;", '"'))
    assert res["bad"] == [] and res["images"] >= 1, res
    assert res["tables"] >= 2 and res["rows"] >= 4, res  # the mean ± std table(s) and the runs
    assert "Runs" in dom and "test/error_gy (%)" in dom
