"""The contract (amm_core/names.py) between the writers and the reader, on a real run.

A tiny training run goes through the real trainable (only Tune's and Ray's calls stubbed) and
the real driver callback into a SQLite MLflow store, as a sweep does. Every metric and tag
written must be declared in the contract, bookkeeping must stay out of the metrics, and
analysis must read the run back (from MLflow and from a Ray results folder) as one finished
result with the final metrics.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import ray
from helpers import old_sweep
from ray import tune

from amm_core import names
from amm_core.config import load_config
from analysis import aggregate, fetch
from sweeps.driver import trainable
from sweeps.driver.callback import MlflowSweepCallback
from sweeps.planning.spec import run_name
from sweeps.store import parent, tracking
from sweeps.store.folder import SweepFolder

FAST = [
    "model.arch=tiny",
    "model.latent_dim=8",
    "data.train_subset=1000",
    "data.val_size=200",
    "train.batch_size=32",
    "train.steps=20",
    "train.eval_every=10",
    "train.log_every=5",
    "train.figures=false",
]
PARAMS = {"variant": "small_lr", "seed": 0}  # a trial's swept values
VARIANTS = {"small_lr": {"optim.lr": 1e-4}}


class _Trial:
    """What the callback reads of a Tune trial."""

    def __init__(self) -> None:
        self.trial_id, self.config = "t1", dict(PARAMS)
        self.checkpoint, self.num_failures = None, 0

    def __str__(self) -> str:
        return run_name(self.config)


def _train_trial(tmp_path, data_root, monkeypatch) -> tuple[dict, list]:
    """Run the real trainable outside Ray: (base config, [(result, checkpoint)] it reported)."""
    reported = []
    monkeypatch.setattr(tune, "report", lambda r, checkpoint=None: reported.append((r, checkpoint)))
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    node = SimpleNamespace(get_node_id=lambda: "node-1")
    monkeypatch.setattr(ray, "get_runtime_context", lambda: node)
    (tmp_path / "worker").mkdir()
    monkeypatch.chdir(tmp_path / "worker")
    base = load_config(None, [*FAST, f"data.data_dir={data_root}"]).flat()
    trainable.train_trial(PARAMS, base=base, variants=VARIANTS)
    return base, reported


def test_every_tag_and_metric_written_is_declared_and_read_back(tmp_path, data_root, monkeypatch):
    base, reported = _train_trial(tmp_path, data_root, monkeypatch)
    assert [r[names.RESULT_FINAL] for r, _ in reported] == [0, 0, 1]  # the loop's `final` flag

    # the driver: parent run as the runner creates it, the callback, the summary at the end
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.init_store(uri)
    exp_id, parent_id = tracking.start_parent(
        uri, "contract", "sw", params={}, tags={names.TAG_NUM_SEEDS: "1"}
    )
    old_sweep(tmp_path / "sweeps", "sw", experiment_id=exp_id, parent_run_id=parent_id)
    folder = SweepFolder(str(tmp_path / "sweeps"), "sw")
    folder.update_meta(base_flat=base, tracking_uri=uri)
    cb = MlflowSweepCallback(folder, uri, VARIANTS)
    trial = _Trial()
    cb.on_trial_start(0, [], trial)
    for result, checkpoint in reported:
        cb.on_trial_result(0, [], trial, result)
        if checkpoint is not None:
            cb.on_checkpoint(0, [], trial, checkpoint)
            trial.checkpoint = checkpoint
    cb.on_trial_complete(0, [], trial)
    cb.close(names.FINISHED)
    parent.summarize(uri, exp_id, "sw", parent_id)

    c = tracking.client(uri)
    runs = {r.info.run_id: r for r in tracking.sweep_runs(uri, exp_id, "sw")}
    child = next(r for rid, r in runs.items() if rid != parent_id)
    assert {r.info.status for r in runs.values()} == {names.FINISHED}

    # every tag written is declared (analysis reads READ_TAGS, the others are bookkeeping)
    assert names.READ_TAGS < names.TAGS
    for r in runs.values():
        unknown = {t for t in r.data.tags if t not in names.TAGS}
        assert {t for t in unknown if not t.startswith(names.TAG_VERSION)} == set(), r.info
    assert child.data.tags[names.TAG_VARIANT] == "small_lr"
    assert child.data.tags[names.TAG_PARENT] == parent_id
    assert child.data.tags[names.TAG_RESUMED] == "0" and child.data.tags[names.TAG_NODE] == "node-1"
    assert child.data.tags[names.TAG_CKPT_STEP] == "20"
    assert child.data.tags[names.TAG_STOP_REASON] == names.STOP_STEPS  # final.json's reason

    # every metric written is declared; bookkeeping is never a metric
    assert set(child.data.metrics) <= names.METRICS, set(child.data.metrics) - names.METRICS
    assert set(names.FINAL_METRICS) <= set(child.data.metrics)
    assert [m.step for m in c.get_metric_history(child.info.run_id, names.VAL_ERROR_GY)] == [10, 20]
    summary = {f"{k}/{o}" for k in ("best", "mean") for o in names.OBJECTIVES}
    assert set(runs[parent_id].data.metrics) == summary | {names.TRIALS_FINISHED}
    artifacts = {a.path for a in c.list_artifacts(child.info.run_id)}
    assert artifacts == set(names.RUN_FILES)

    # analysis reads it back: one finished result per declared final metric
    got = fetch.fetch_mlflow("sw", uri)
    assert got.expected == 1 and len(got.df) == 1
    # ... each metric but the UI's copies of the errors in percent (names.percent_key)
    copies = {names.percent_key(m) for m in got.metrics if names.is_error(m)}
    assert copies and copies <= set(child.data.metrics)
    assert set(got.metrics) == set(child.data.metrics) - copies
    assert got.df.loc[0, names.VARIANT] == "small_lr" and got.df.loc[0, "optim.lr"] == 1e-4
    for metric in names.FINAL_METRICS:
        assert aggregate.ok_mask(got.df, metric).all(), metric

    # and from the Ray results folder of the same trial: the same metrics, finished
    folder = tmp_path / "ray" / "sw" / names.trial_dirname("t1")
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(PARAMS))
    lines = [json.dumps({**r, "training_iteration": i}) for i, (r, _) in enumerate(reported)]
    (folder / "result.json").write_text("\n".join(lines) + "\n")
    ray_runs = fetch.fetch_ray(folder.parent)
    assert set(ray_runs.metrics) == set(got.metrics)
    assert list(ray_runs.df[fetch.STATUS]) == [names.FINISHED]
