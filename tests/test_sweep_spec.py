"""Sweep specs, `amm sweep plan`, and the bad inputs that must stop a sweep before it starts.

No Ray cluster and no training here (except where noted): these tests read YAML, build configs
and call the `amm` command in-process.
"""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from amm_cli.main import main as amm
from amm_core.errors import ConfigError
from sweeps.driver.trainable import trial_config
from sweeps.planning.spec import load_spec, run_name
from sweeps.store import tracking

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
SMOKE_PRESET = REPO / "configs" / "smoke.yaml"


def write_spec(tmp_path: Path, body: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"base: {SMOKE_PRESET}\n" + body)
    return p


def test_every_shipped_spec_loads_and_builds_its_configs():
    specs = (
        sorted(SWEEPS.glob("*.yaml"))
        + sorted(SWEEPS.glob("paper/*.yaml"))
        + sorted(SWEEPS.glob("ablations/*.yaml"))
        + sorted(SWEEPS.glob("studies/*.yaml"))
        + sorted(SWEEPS.glob("studies/paper/*.yaml"))
    )
    assert len(specs) == 27
    for p in specs:
        spec = load_spec(p)
        assert spec.num_trials() >= 1, p
    # the clustering investigation (docs/results.md)
    screen = load_spec(SWEEPS / "ablations" / "screen_clustering.yaml")
    assert screen.num_trials() == 5 and "readings_cluster" in screen.variants
    long = load_spec(SWEEPS / "ablations" / "long_clustering.yaml")
    cfg = long.trial_config(long.cells()[0])
    assert long.num_trials() == 3 and cfg.loss.cluster_weight > 0 and cfg.prior.means == "learned"
    assert load_spec(SWEEPS / "ablations" / "screen_balance.yaml").num_trials() == 9
    # the cheaper phase with close fixed means: 2 starts of 500 steps, the kept one to 2,000
    close = load_spec(SWEEPS / "ablations" / "close_means.yaml")
    cfg = close.trial_config(close.cells()[0])
    assert close.num_trials() == 5 and cfg.prior.means == "random" and cfg.prior.random_scale == 1
    assert (cfg.train.restarts, cfg.train.restart_steps, cfg.train.steps) == (2, 500, 2000)
    # the demo: the clustering term on the tiny network, a step budget (no time budget: the
    # same numbers on any machine; tests/test_demo_budget.py), a demo's description
    demo = load_spec(SWEEPS / "demo.yaml")
    cfg = demo.trial_config(demo.cells()[0])
    assert demo.num_trials() == 4 and cfg.model.arch == "tiny" and cfg.loss.cluster_weight > 0
    assert cfg.train.max_minutes == 0 and "docs/results.md" in demo.description
    assert demo.cost.steps_per_sec and demo.cost.trial_overhead_s


def test_paper_specs_match_the_paper():
    mnist = load_spec(SWEEPS / "paper" / "mnist_amm.yaml")
    assert mnist.num_trials() == 5 and mnist.axes() == {"seed": [0, 1, 2, 3, 4]}
    samm = load_spec(SWEEPS / "paper" / "svhn_samm.yaml")
    cells = samm.cells()
    assert len(cells) == 20
    means = [samm.trial_config(c).prior.means for c in cells]
    assert means.count("table3") == 10 and means.count("learned") == 10
    assert {samm.trial_config(c).data.labelled for c in cells} == {1000}
    unsup = load_spec(SWEEPS / "paper" / "svhn_amm_unsup18.yaml")
    cfg = unsup.trial_config(unsup.cells()[0])
    assert (cfg.model.num_components, cfg.prior.means, cfg.data.labelled) == (18, "grid18", 0)


def test_ablation_specs():
    lam = load_spec(SWEEPS / "ablations" / "lambda.yaml")
    assert lam.grid["loss.gp_weight"] == [0.01, 0.1, 1.0, 10.0, 100.0]
    mp = load_spec(SWEEPS / "ablations" / "mean_placement.yaml")
    placed = {
        (
            mp.trial_config({"variant": v}).prior.means,
            mp.trial_config({"variant": v}).prior.init_means,
        )
        for v in mp.variants
    }
    assert placed == {
        ("learned", "none"),
        ("learned", "table3"),
        ("table3", "none"),
        ("random", "none"),
    }
    inf = load_spec(SWEEPS / "ablations" / "inference.yaml")
    assert inf.grid == {"model.inference": ["q1", "q2", "independent"]}
    lvf = load_spec(SWEEPS / "ablations" / "learned_vs_fixed.yaml")
    assert lvf.grid == {"prior.means": ["learned", "table3"]}
    opt = load_spec(SWEEPS / "ablations" / "optuna_lambda_lr.yaml")
    assert opt.search is not None and opt.scheduler is not None
    assert set(opt.search.space) == {"loss.gp_weight", "optim.lr"}
    assert {d["type"] for d in opt.search.space.values()} == {"loguniform"}


def test_a_spec_with_retired_keys_loads_with_one_note_each(tmp_path, capsys, monkeypatch):
    """search.algorithm and scheduler.type had one allowed value each; specs (and sweeps stored)
    written before still carry them."""
    from amm_core import loader

    monkeypatch.setattr(loader, "_NOTED", set())
    text = (SWEEPS / "ablations" / "optuna_lambda_lr.yaml").read_text()
    text = text.replace("search:\n", "search:\n  algorithm: optuna\n")
    text = text.replace("scheduler:\n", "scheduler:\n  type: asha\n")
    old = tmp_path / "ablations" / "old.yaml"
    old.parent.mkdir()
    old.write_text(text.replace("../../configs/", f"{SWEEPS.parent}/configs/"))
    spec = load_spec(old)
    assert spec.search == load_spec(SWEEPS / "ablations" / "optuna_lambda_lr.yaml").search
    assert capsys.readouterr().err.splitlines() == [
        "amm: note: key 'search.algorithm' is no longer a setting; ignored",
        "amm: note: key 'scheduler.type' is no longer a setting; ignored",
    ]


STUDIES = ("lambda", "mean_placement", "learned_vs_fixed")


@pytest.mark.parametrize("name", STUDIES)
def test_study_specs_and_their_gpu_versions(name, capsys):
    """sweeps/studies: 3 seeds per cell on the mixture preset with learned means (the preset the
    studies ran on), each trial on a step budget (no
    time budget, no plateau stop: any machine trains the same steps); the GPU version on the
    paper's preset has the same cells."""
    cpu = load_spec(SWEEPS / "studies" / f"{name}.yaml")
    gpu = load_spec(SWEEPS / "studies" / "paper" / f"{name}.yaml")
    assert cpu.seeds == gpu.seeds == [0, 1, 2]
    assert cpu.axes() == gpu.axes() and cpu.variants == gpu.variants
    assert cpu.base.endswith("mnist_amm_mixture_learned.yaml") and gpu.base.endswith(
        "mnist_amm.yaml"
    )
    for cell in cpu.cells():
        t = cpu.trial_config(cell).train
        assert (t.steps, t.max_minutes, t.stop_on_plateau) == (2000, 0, 0)
        assert (t.restarts, t.restart_steps) == (3, 1000)
    assert cpu.cost.steps_per_sec and gpu.cost.steps_per_sec
    assert gpu.gpu > 0
    assert amm(["sweep", "plan", str(SWEEPS / "studies" / f"{name}.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"trials: {cpu.num_trials()}" in out and "steps per trial: 4000" in out
    assert "upper bound" not in out


def test_study_cells():
    lam = load_spec(SWEEPS / "studies" / "lambda.yaml")
    assert lam.grid == {"loss.gp_weight": [0.01, 0.1, 1.0, 10.0, 100.0]}
    assert lam.num_trials() == 15

    def placements(spec):
        out = {}
        for v in spec.variants:
            p = spec.trial_config({"variant": v, "seed": 0}).prior
            out[v] = (p.means, p.init_means) + ((p.random_scale,) if "random" in v else ())
        return out

    mp = load_spec(SWEEPS / "studies" / "mean_placement.yaml")
    assert placements(mp) == {
        "learned": ("learned", "none"),
        "learned_random": ("learned", "random", 3.0),
        "fixed_random_1": ("random", "none", 1.0),
        "fixed_random_5": ("random", "none", 5.0),
        "table3": ("table3", "none"),
    }
    lvf = load_spec(SWEEPS / "studies" / "learned_vs_fixed.yaml")
    assert placements(lvf) == {
        "learned_random3": ("learned", "random", 3.0),
        "fixed_random3": ("random", "none", 3.0),
        "learned_table3": ("learned", "table3"),
        "fixed_table3": ("table3", "none"),
    }
    assert (mp.num_trials(), lvf.num_trials()) == (15, 12)


def test_samm_labels_study(capsys):
    """The SAMM plus preset over the number of labels, 3 seeds, 2,200 steps."""
    spec = load_spec(SWEEPS / "studies" / "samm_labels.yaml")
    assert spec.axes() == {"data.labelled": [100, 600, 1000, 3000], "seed": [0, 1, 2]}
    assert spec.base.endswith("mnist_samm_plus.yaml") and spec.num_trials() == 12
    assert (spec.cpu, spec.gpu) == (1, 0)
    for cell in spec.cells():
        cfg = spec.trial_config(cell)
        assert cfg.data.labelled == cell["data.labelled"] and cfg.data.stratified
        assert cfg.loss.label_weight > 0 and cfg.train.max_minutes == 60
        assert cfg.data.dataset == "mnist" and cfg.train.steps == 2200  # a step budget
    assert amm(["sweep", "plan", str(SWEEPS / "studies" / "samm_labels.yaml")]) == 0
    assert "trials: 12" in capsys.readouterr().out


def test_plan_prints_the_mnist_paper_trials(capsys):
    assert amm(["sweep", "plan", str(SWEEPS / "paper" / "mnist_amm.yaml")]) == 0
    out = capsys.readouterr().out
    assert "trials: 5" in out
    assert "resources per trial: 2 CPU, 0.25 GPU" in out
    assert [
        ln.split()[1] for ln in out.splitlines() if ln.strip()[:1].isdigit() and "seed=" in ln
    ] == [f"seed={i}" for i in range(5)]


def test_plan_offers_the_cpu_route_where_no_gpu_is(tmp_path, capsys, monkeypatch):
    import shlex

    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)  # this machine, or a GPU-less one
    spec = str(SWEEPS / "paper" / "mnist_amm.yaml")
    assert amm(["sweep", "plan", spec]) == 0
    out = capsys.readouterr().out
    assert "no GPU on this machine" in out
    (line,) = [ln.strip() for ln in out.splitlines() if " sweep run " in ln]
    assert line.endswith(" --set resources.gpu=0"), out
    # the flags as printed: plan (and run) take them, and the trials then ask for no GPU
    argv = shlex.split(line)[1:]
    assert argv[:3] == ["sweep", "run", spec] or argv[2].endswith("paper/mnist_amm.yaml")
    assert amm(["sweep", "plan", *argv[2:]]) == 0
    out = capsys.readouterr().out
    assert "resources per trial: 2 CPU, 0 GPU" in out and "wall time on this machine" in out
    assert load_spec(spec, {"resources.gpu": 0}).gpu == 0
    # a spec that asks for a GPU and no CPU: the route also gives each trial a CPU
    p = write_spec(tmp_path, "resources: {cpu: 0, gpu: 1}\ncost: {steps_per_sec: 10}\n")
    assert amm(["sweep", "plan", str(p)]) == 0
    assert "--set resources.gpu=0 --set resources.cpu=1" in capsys.readouterr().out
    assert amm(["sweep", "plan", str(p), "--set", "resources.gpu=many"]) == 2
    assert "resources.gpu: expected a number, got 'many'" in capsys.readouterr().err


def test_plan_cost_from_a_stored_figure(tmp_path, capsys):
    p = write_spec(
        tmp_path,
        "grid: {loss.gp_weight: [1, 10]}\nseeds: 3\nresources: {cpu: 2}\n"
        "cost: {steps_per_sec: 10, measured_on: test box}\n",
    )
    assert amm(["sweep", "plan", str(p), "--set", "train.steps=600"]) == 0
    out = capsys.readouterr().out
    # 6 trials x 600 steps / 10 steps/s = 360 s = 0.1 trial-hours = 0.2 CPU-hours
    assert "trials: 6" in out and "steps per trial: 600" in out
    assert "estimated cost: 0.10 trial-hours (0.20 CPU-hours, 0.00 GPU-hours)" in out
    assert "stored in the spec: test box" in out


def test_plan_cost_with_a_time_budget_and_the_plateau_stop(tmp_path, capsys):
    p = write_spec(
        tmp_path,
        "grid: {loss.gp_weight: [1, 10]}\nseeds: 3\nresources: {cpu: 2}\n"
        "overrides: {train.steps: 6000, train.max_minutes: 5, train.stop_on_plateau: 4}\n"
        "cost: {steps_per_sec: 10, measured_on: test box}\n",
    )
    assert amm(["sweep", "plan", str(p)]) == 0
    out = capsys.readouterr().out
    # 6000 steps at 10/s would take 600 s; the 5-minute budget caps each of 6 trials at 300 s:
    # 1800 s = 0.5 trial-hours; the plateau stop may end trials sooner
    assert "time budget per trial: 5 min (train.max_minutes)" in out
    assert "plateau stop: after 4 evaluations without improvement" in out
    assert (
        "estimated cost: 0.50 trial-hours (1.00 CPU-hours, 0.00 GPU-hours) "
        "(an upper bound with the plateau stop)" in out
    )


def test_plan_wall_time_counts_the_measured_overhead_and_the_time_budget(tmp_path, capsys):
    p = write_spec(
        tmp_path,
        "seeds: 4\nmax_concurrent: 1\n"
        "cost: {steps_per_sec: 10, trial_overhead_s: 20, measured_on: a whole sweep}\n",
    )
    # 4 trials one at a time, each 600 steps / 10 steps/s + 20 s, + 17 s of start-up = 337 s
    assert amm(["sweep", "plan", str(p), "--set", "train.steps=600"]) == 0
    out = capsys.readouterr().out
    assert "1 trial(s) at a time): about 5m37s (training, evaluations and figures" in out, out
    # a time budget of 30 s caps each trial's training: 4 x (30 + 20) + 17 = 217 s
    sets = ["--set", "train.steps=600", "--set", "train.max_minutes=0.5"]
    assert amm(["sweep", "plan", str(p), *sets]) == 0
    assert "about 3m37s (training" in capsys.readouterr().out


def test_set_seed_replaces_the_seed_axis(tmp_path, capsys):
    p = write_spec(tmp_path, "grid: {loss.gp_weight: [1, 10]}\nseeds: 3\n")
    assert load_spec(p).num_trials() == 6
    spec = load_spec(p, {"seed": 7})
    assert spec.seeds == [7] and [c["seed"] for c in spec.cells()] == [7, 7]
    q = write_spec(tmp_path, "seeds: 3\noverrides: {seed: 1}\n", name="q.yaml")
    assert amm(["sweep", "plan", str(q)]) == 2
    assert "either in 'seeds' or in overrides" in capsys.readouterr().err


def test_run_names_and_trial_configs():
    assert (
        run_name({"loss.gp_weight": 10.0, "prior.means": "learned", "seed": 3})
        == "lambda=10,means=learned,seed=3"
    )
    spec = load_spec(SWEEPS / "ablations" / "mean_placement.yaml")
    base = spec.trial_config({}, "/data").flat()
    cfg = trial_config(base, {"variant": "learned_from_table3", "seed": 2}, spec.variants)
    assert (cfg.prior.init_means, cfg.seed, cfg.data.data_dir) == ("table3", 2, "/data")
    for cell in spec.cells():  # the driver's and the workers' configs are the same
        assert trial_config(base, cell, spec.variants) == spec.trial_config(cell, "/data")


@pytest.mark.parametrize(
    "body, message",
    [
        ("gird: {loss.gp_weight: [1]}\n", "unknown key 'gird' (did you mean grid?)"),
        ("seeds: five\n", "key 'seeds': expected an integer or a list, got 'five'"),
        ("grid: {}\n", "key 'grid' is empty"),
        ("grid: {loss.gp_weight: []}\n", "grid axis 'loss.gp_weight' must be a non-empty list"),
        ("grid: {loss.lambda: [1]}\n", "'loss.lambda' is not a config key"),
        ("grid: {loss.gp_wieght: [1]}\n", "is not a config key (did you mean loss.gp_weight?)"),
        ("overrides: {train.step: 5}\n", "overrides: 'train.step' is not a config key (did you"),
        ("grid: {model.inference: [q2, q3]}\n", "'q3' is not allowed; allowed: q2, q1"),
        ("grid: {loss.gp_weight: [-1]}\n", "key 'loss.gp_weight' must be >= 0, got -1.0"),
        (
            "resources: {cpu: 1, gpus: 1}\n",
            "unknown key 'resources.gpus' (did you mean resources.gpu?)",
        ),
        ("resources: {cpu: one}\n", "key 'resources.cpu': expected a number, got 'one'"),
        ("resources: {cpu: 0, gpu: 0}\n", "not both 0"),
        (
            "search: {metric: val/error_gy, num_samples: 4, space: {optim.lr: {type: logu}}}\n",
            "key 'search.space.optim.lr.type': 'logu' is not allowed; allowed: choice, uniform, "
            "loguniform",
        ),
        (
            "search: {metric: val/error_gy, num_samples: 4, space: {optim.lr: "
            "{type: loguniform, low: 0, high: 1}}}\n",
            "'loguniform' needs low > 0",
        ),
        (
            "seeds: 3\nsearch: {metric: m, num_samples: 2, space: {optim.lr: "
            "{type: uniform, low: 0.1, high: 1}}}\n",
            "with 'search', leave 'grid' empty",
        ),
        (
            "search: {metric: m, space: {optim.lr: {type: choice, values: [1]}}}\n",
            "'search.num_samples' is required",
        ),
        (
            "scheduler: {type: hyperband, metric: m}\n",
            "key 'scheduler.type' was removed (its one value was 'asha')",
        ),
        (
            "scheduler: {metric: m, mode: low}\n",
            "key 'scheduler.mode': 'low' is not allowed; allowed: min, max",
        ),
        ("scheduler: {metric: m, grace_period: 10, max_t: 300}\n", "max_t 300 <= 300 training"),
    ],
)
def test_bad_specs_exit_2_naming_the_key(tmp_path, capsys, body, message):
    p = write_spec(tmp_path, body)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_spec(p)
    assert amm(["sweep", "plan", str(p)]) == 2
    assert message in capsys.readouterr().err


def test_missing_base_preset(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text("base: ../configs/nope.yaml\n")
    assert amm(["sweep", "plan", str(p)]) == 2
    assert "relative to the spec file" in capsys.readouterr().err


def test_unreachable_tracking_server_stops_before_anything(
    tmp_path, capsys, monkeypatch, data_root
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AMM_DATA_DIR", str(data_root))
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    code = amm(
        [
            "sweep",
            "run",
            str(SWEEPS / "smoke.yaml"),
            "--name",
            "x",
            "--storage",
            "st",
            "--tracking-uri",
            f"http://127.0.0.1:{port}",
        ]
    )
    assert code == 2
    assert "is not reachable" in capsys.readouterr().err
    assert time.time() - t0 < 30  # no Ray start, no retries for minutes
    assert not (tmp_path / "st").exists() and not (tmp_path / "mlflow.db").exists()


def test_existing_sweep_name_is_refused_and_left_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "st" / "x"
    old.mkdir(parents=True)
    (old / "amm_sweep.json").write_text('{"name": "x"}')
    code = amm(["sweep", "run", str(SWEEPS / "smoke.yaml"), "--name", "x", "--storage", "st"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert (old / "amm_sweep.json").read_text() == '{"name": "x"}'
    assert [p.name for p in old.iterdir()] == ["amm_sweep.json"]


def test_resume_and_status_of_an_unknown_sweep(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "st" / "known").mkdir(parents=True)
    (tmp_path / "st" / "known" / "amm_sweep.json").write_text("{}")
    assert amm(["sweep", "resume", "nope", "--storage", "st"]) == 2
    err = capsys.readouterr().err
    assert "no sweep named 'nope'" in err and "known" in err
    assert amm(["sweep", "status", "nope", "--storage", "st"]) == 2


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.resolve_tracking_uri(None, tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking.resolve_tracking_uri("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path}/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5000"
    with pytest.raises(ConfigError, match="file store is not supported"):
        tracking.resolve_tracking_uri("./mlruns", tmp_path)


def test_a_batch_of_study_cells_has_the_studies_hashes():
    """sweeps/studies/batches: each trial of a batch is a cell of a study (same config hash and
    seed), so that the study's `--reuse` copies it instead of training it again."""
    studies = [load_spec(SWEEPS / "studies" / f"{n}.yaml") for n in (*STUDIES, "additions")]
    cells = {(s.trial_config(c).hash(), c["seed"]) for s in studies for c in s.cells()}
    batches = sorted((SWEEPS / "studies" / "batches").glob("*.yaml"))
    assert batches
    for path in batches:
        batch = load_spec(path)
        for c in batch.cells():
            assert (batch.trial_config(c).hash(), c["seed"]) in cells, (path.name, c)
