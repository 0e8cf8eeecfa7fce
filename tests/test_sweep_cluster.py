"""Sweeps on a real multi-node Ray cluster on this machine, tracked on a real MLflow server.

One module-scoped cluster (`ray.cluster_utils.Cluster`: a head and a worker node, 1 CPU each)
and one `mlflow server` (SQLite backend, a free loopback port) serve every test here:
the smoke sweep with trials on both nodes, a trial whose worker process is killed mid-run, and
a sweep asking for more CPUs than any node has. Trials are tiny (the smoke preset, 40-100 steps).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from amm_core import names
from amm_core.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "sweeps" / "smoke.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        # the worker declares one (logical) GPU: Ray schedules by it, torch finds no CUDA and
        # trains on the CPU, which is how fractional-GPU placement is tested without a GPU
        c.add_node(num_cpus=1, num_gpus=1)
        c.wait_for_nodes()
        ray.init(address=c.address)
        yield c
    finally:
        ray.shutdown()
        c.shutdown()


def _overrides(data_root: Path, steps: int) -> dict:
    return {
        "seed": 0,  # one seed: two trials (lambda 1 and 10), one per node
        "train.steps": steps,
        "train.eval_every": 20,
        "train.log_every": 10,
        "train.figures": False,
        "data.data_dir": str(data_root),
    }


def _children(uri: str, sweep: str):
    from sweeps.store import tracking

    c = tracking.client(uri)
    exp = c.get_experiment_by_name("amm-smoke")
    runs = tracking.sweep_runs(uri, exp.experiment_id, sweep)
    parent = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "sweep"]
    children = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == "trial"]
    return c, parent, children


def _sweep(
    cluster, uri: str, data_root: Path, tmp_path: Path, name: str, body=None, steps=40,
    verbose=True, **extra,
):  # fmt: skip
    """Run a sweep on the test cluster: sweeps/smoke.yaml, or the smoke preset + spec `body`."""
    from sweeps.driver import runner

    spec = SMOKE
    if body is not None:
        spec = tmp_path / f"{name}.yaml"
        spec.write_text(f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-smoke\n{body}")
    return runner.run(
        str(spec),
        name=name,
        storage=str(tmp_path),
        address=cluster.address,
        tracking_uri=uri,
        overrides={**_overrides(data_root, steps), **extra},
        verbose=verbose,
    )


def test_smoke_sweep_runs_on_both_nodes(cluster, mlflow_server, data_root, tmp_path):
    import ray

    from sweeps.planning.spec import load_spec
    from sweeps.store.status import status as sweep_status

    # with the run figures: they reach MLflow (through the server) from either node
    name, code = _sweep(
        cluster, mlflow_server, data_root, tmp_path, "multinode", **{"train.figures": True}
    )
    assert (name, code) == ("multinode", 0)
    c, parent, children = _children(mlflow_server, "multinode")
    assert [p.info.status for p in parent] == ["FINISHED"]
    assert sorted(r.info.run_name for r in children) == ["lambda=1,seed=0", "lambda=10,seed=0"]
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    assert {r.data.tags[names.TAG_NODE] for r in children} == nodes  # one trial per node
    spec = load_spec(SMOKE, {**_overrides(data_root, 40), "train.figures": True})
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags[names.TAG_PARENT] == parent[0].info.run_id
        gp = float(r.data.params["loss.gp_weight"])
        cfg = spec.trial_config({"loss.gp_weight": gp, "seed": 0})
        assert r.data.tags[names.TAG_HASH] == cfg.hash()
        assert r.data.params["seed"] == "0" and r.data.params["train.steps"] == "40"
        assert r.data.tags["amm.version.torch"] and r.data.tags["amm.git_commit"]
        hist = c.get_metric_history(r.info.run_id, "val/error_gy")
        assert [m.step for m in hist] == [20, 40]
        # the latent-path and generation diagnostics reach MLflow per evaluation, and at the end
        for key in (*names.DIAG_METRICS, *names.GEN_METRICS):
            assert [m.step for m in c.get_metric_history(r.info.run_id, key)] == [20, 40], key
        for key in names.GEN_METRICS:  # at the end, on test images
            assert 0.0 <= r.data.metrics[names.split_metric("test", key)] <= 10.0, key
        assert 0.0 <= r.data.metrics["test/error_gy"] <= 1.0
        assert {"config.json", "final.json", "metrics.jsonl", "figures"} <= {
            a.path for a in c.list_artifacts(r.info.run_id)
        }
        figures = {a.path: a.file_size for a in c.list_artifacts(r.info.run_id, "figures")}
        assert set(figures) == {f"figures/{f}" for f in names.FIGURE_FILES}
        assert all(size > 1000 for size in figures.values())
    status = sweep_status("multinode", str(tmp_path))
    assert "2 finished" in status and "missing" not in status


def test_killed_trial_resumes_from_checkpoint(cluster, mlflow_server, data_root, tmp_path, capfd):
    """SIGKILL one trial's worker process mid-run: Tune restarts it from its last checkpoint, and
    the quiet console says so in one line (cause, step, failure k of M), without a traceback."""
    from sweeps.driver.console import quiet_logs

    quiet_logs()

    killed: dict[str, int] = {}

    def killer() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not killed:
            time.sleep(0.5)
            try:
                c, _, children = _children(mlflow_server, "fault")
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                continue
            for r in children:
                pid = r.data.tags.get(names.TAG_PID)
                # kill once Tune has registered a checkpoint (a worker killed between its
                # report and that registration restarts from the previous checkpoint)
                ckpt_step = int(r.data.tags.get(names.TAG_CKPT_STEP, 0))
                if pid and 20 <= ckpt_step < 100:
                    os.kill(int(pid), signal.SIGKILL)
                    killed[r.data.tags[names.TAG_TRIAL]] = ckpt_step
                    return

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    _, code = _sweep(cluster, mlflow_server, data_root, tmp_path, "fault", steps=100, verbose=False)
    t.join(timeout=5)
    out = capfd.readouterr()
    console = out.out + out.err
    lines = [ln for ln in console.splitlines() if "retrying from step" in ln]
    assert len(lines) == 1 and "failure 1 of 2" in lines[0], console[-3000:]
    # the cause Ray knows: its error text for a killed worker names no exception
    assert "failed (the worker process died: killed or crashed); retrying" in lines[0], lines
    assert "Traceback" not in console, console[-3000:]
    assert "died or was killed" not in console, console[-3000:]  # Ray's own note of it
    assert killed, "no trial was killed: the test did not exercise a failure"
    assert code == 0
    c, parent, children = _children(mlflow_server, "fault")
    assert [p.info.status for p in parent] == ["FINISHED"]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    ((trial_id, ckpt_step),) = killed.items()
    victim = next(r for r in children if r.data.tags[names.TAG_TRIAL] == trial_id)
    assert victim.data.tags[names.TAG_FAILURES] == "1"
    resumed = int(victim.data.tags["amm.resumed_from_step"])  # bookkeeping: a tag
    # from the checkpoint registered before the kill (or one taken just after), not from 0
    assert ckpt_step <= resumed <= ckpt_step + 20
    steps = [m.step for m in c.get_metric_history(victim.info.run_id, "val/error_gy")]
    assert steps[-1] == 100 and len(steps) == len(set(steps)) == 5  # each evaluation once
    assert 0.0 <= victim.data.metrics["test/error_gy"] <= 1.0


def test_optuna_search_with_asha(cluster, mlflow_server, data_root, tmp_path):

    body = (
        "search:\n  metric: val/error_gy\n  mode: min\n  num_samples: 3\n  seed: 0\n"
        "  space:\n    loss.gp_weight: {type: loguniform, low: 0.1, high: 10.0}\n"
        "    model.inference: {type: choice, values: [q1, q2]}\n"
        "scheduler: {metric: val/error_gy, grace_period: 20, max_t: 1000, reduction_factor: 2}\n"
        "max_concurrent: 2\nresources: {cpu: 1}\n"
    )
    _, code = _sweep(cluster, mlflow_server, data_root, tmp_path, "optuna", body, steps=60)
    assert code == 0
    c, parent, children = _children(mlflow_server, "optuna")
    assert [p.info.status for p in parent] == ["FINISHED"]
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    lams = [float(r.data.params["loss.gp_weight"]) for r in children]
    assert all(0.1 <= v <= 10.0 for v in lams) and len(set(lams)) == 3  # sampled, not a grid
    assert {r.data.params["model.inference"] for r in children} <= {"q1", "q2"}
    for r in children:  # a trial ASHA stopped early has no test metrics; the others have
        steps = [m.step for m in c.get_metric_history(r.info.run_id, "val/error_gy")]
        assert steps and steps == sorted(set(steps)) and steps[-1] <= 60
        assert (steps[-1] == 60) == ("test/error_gy" in r.data.metrics)
        assert r.info.run_name.startswith("lambda=") and r.data.tags[names.TAG_TRIAL]


def test_fractional_gpus_share_one_gpu(cluster, mlflow_server, data_root, tmp_path):
    """gpu: 0.5 per trial: both trials land on the one node with a GPU, side by side."""
    import ray

    body = "grid: {loss.gp_weight: [1.0, 10.0]}\nresources: {cpu: 0.5, gpu: 0.5}\n"
    _, code = _sweep(cluster, mlflow_server, data_root, tmp_path, "gpu", body)
    assert code == 0
    _, _, children = _children(mlflow_server, "gpu")
    gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    assert {r.data.tags[names.TAG_NODE] for r in children} == gpu_nodes
    a, b = sorted(children, key=lambda r: r.info.start_time)
    assert b.info.start_time < a.info.end_time  # they ran at the same time


def test_diverging_trial_ends_failed(cluster, mlflow_server, data_root, tmp_path):
    """A trial whose loss turns NaN fails (no number logged as its result); the other finishes."""
    from sweeps.store.status import status as sweep_status

    body = "grid: {optim.lr: [2.0e-4, 1.0e+10]}\nresources: {cpu: 1}\nmax_failures: 0\n"
    _, code = _sweep(cluster, mlflow_server, data_root, tmp_path, "nan", body)
    assert code == 1  # some trial failed
    _, parent, children = _children(mlflow_server, "nan")
    assert [p.info.status for p in parent] == ["FAILED"]
    by_name = {r.info.run_name: r for r in children}
    assert sorted(by_name) == ["lr=0.0002,seed=0", "lr=1e+10,seed=0"]
    ok, bad = by_name["lr=0.0002,seed=0"], by_name["lr=1e+10,seed=0"]
    assert ok.info.status == "FINISHED" and 0.0 <= ok.data.metrics["test/error_gy"] <= 1.0
    assert bad.info.status == "FAILED" and "test/error_gy" not in bad.data.metrics
    assert "non-finite loss" in bad.data.tags[names.TAG_ERROR]
    status = sweep_status("nan", str(tmp_path))
    assert "1 failed" in status and "1 finished" in status


def test_trial_larger_than_any_node_is_refused(cluster, mlflow_server, data_root, tmp_path):
    spec = tmp_path / "big.yaml"
    spec.write_text(
        f"base: {REPO / 'configs' / 'smoke.yaml'}\nexperiment: amm-smoke\nresources: {{cpu: 2}}\n"
    )
    from sweeps.driver import runner

    with pytest.raises(ConfigError, match="2 CPU per trial, but the largest node .* 1 CPU"):
        runner.run(
            str(spec),
            name="toobig",
            storage=str(tmp_path / "s"),
            address=cluster.address,
            tracking_uri=mlflow_server,
            overrides={"data.data_dir": str(data_root)},
        )
    assert not (tmp_path / "s" / "toobig").exists()  # nothing written, no trial started
    _, parent, children = _children(mlflow_server, "toobig")
    assert parent == [] and children == []
