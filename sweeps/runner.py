"""Plan, run, resume and inspect sweeps.

A sweep lives in one folder, `<storage>/<name>/`: Ray Tune's experiment (tuner.pkl, trial
folders, checkpoints) plus `amm_sweep.json` (the spec, the tracking URI, the MLflow parent run)
and `amm_runs.json` (trial id -> MLflow run id). Everything that can be checked is checked
before Ray starts or anything is written, and a bad input raises `ConfigError` (exit 2).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from amm_core import locations, names
from amm_core.errors import ConfigError, TrackingOutage
from amm_core.fs import check_out_dir
from amm_core.locations import resolve_data_root
from sweeps import lock as sweep_lock
from sweeps import reconcile, tracking
from sweeps.spec import SweepSpec, load_spec

META_FILE = "amm_sweep.json"
DEFAULT_STORAGE = "runs/sweeps"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")
# Tune trial status -> what `amm sweep status` calls it
STATES = {
    "TERMINATED": "finished",
    "ERROR": "failed",
    "RUNNING": "running",
    "PENDING": "pending",
    "PAUSED": "pending",
}


# ------------------------------------------------------------------ storage


def check_storage(storage: str) -> None:
    """A local storage folder must be a writable folder (or creatable): one line if not."""
    if "://" not in storage:
        check_out_dir(Path(storage), "--storage")


def resolve_storage(storage: str | None) -> str:
    s = storage or os.environ.get("AMM_SWEEP_STORAGE") or DEFAULT_STORAGE
    return s if "://" in s else str(Path(s).expanduser().resolve())


def _join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path) if "://" in path else (None, path)


def _read(path: str) -> str | None:
    if "://" not in path:
        p = Path(path)
        return p.read_text() if p.is_file() else None
    fs, p = _fs(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _write(path: str, text: str) -> None:
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(path + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def _exists(path: str) -> bool:
    if "://" not in path:
        return Path(path).exists()
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def load_meta(name: str, storage: str | None = None) -> tuple[str, dict[str, Any]]:
    """(sweep folder, its amm_sweep.json) or a ConfigError naming the sweeps that exist."""
    storage = resolve_storage(storage)
    sweep_dir = _join(storage, name)
    text = _read(_join(sweep_dir, META_FILE))
    if text is None:
        known = ""
        if "://" not in storage and Path(storage).is_dir():
            found = sorted(p.parent.name for p in Path(storage).glob(f"*/{META_FILE}"))
            known = f"; sweeps there: {', '.join(found[-10:]) or 'none'}"
        raise ConfigError(
            f"no sweep named '{name}' under {storage}{known} (pass --storage if it lives elsewhere)"
        )
    return sweep_dir, json.loads(text)


# ------------------------------------------------------------------ run / resume


def _check_cluster(spec: SweepSpec) -> None:
    """A trial must fit on one node of the connected cluster."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((r.get("CPU", 0) for r in nodes), default=0)
    max_gpu = max((r.get("GPU", 0) for r in nodes), default=0)
    if spec.cpu > max_cpu:
        raise ConfigError(
            f"resources: {spec.cpu:g} CPU per trial, but the largest node of the "
            f"cluster has {max_cpu:g} CPU"
        )
    if spec.gpu > max_gpu:
        raise ConfigError(
            f"resources: {spec.gpu:g} GPU per trial, but the largest node of the "
            f"cluster has {max_gpu:g} GPU"
        )


def _ray_init(address: str | None, verbose: bool = True) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    # quiet: no worker log lines on the driver, Ray's own logging at WARNING
    kw: dict[str, Any] = {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **{"log_to_driver": True, **kw})
        elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`
            ray.init(**kw)
        else:  # a fresh local Ray, never a stale /tmp/ray/ray_current_cluster
            ray.init(address="local", include_dashboard=False, **kw)
    except ConnectionError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {e}") from None


def _trainable(spec: SweepSpec, base_flat: dict[str, Any], sweep_dir: str | None = None):
    from ray import tune

    from sweeps.trainable import train_trial

    fn = tune.with_parameters(
        train_trial,
        base=base_flat,
        variants=spec.variants,
        threads=max(1, int(spec.cpu)),
        sweep_dir=sweep_dir,
    )
    return tune.with_resources(fn, {"cpu": spec.cpu, "gpu": spec.gpu})


def _trial_name(trial) -> str:
    """Tune's trial name = the MLflow run name, e.g. lambda=1,seed=0."""
    from sweeps.spec import run_name

    return run_name(trial.config)


def _tuner(
    spec: SweepSpec,
    name: str,
    storage: str,
    base_flat: dict[str, Any],
    callback,
    console=None,
    verbose: bool = True,
):
    from ray import tune

    space: dict[str, Any] = {}
    search_alg = None
    num_samples = 1
    if spec.search is None:
        space = {k: tune.grid_search(v) for k, v in spec.axes().items()}
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        s = spec.search
        for k, d in s.space.items():
            space[k] = (
                tune.choice(d["values"])
                if d["type"] == "choice"
                else getattr(tune, d["type"])(d["low"], d["high"])
            )
        search_alg = OptunaSearch(
            metric=s.metric, mode=s.mode, sampler=optuna.samplers.TPESampler(seed=s.seed)
        )
        num_samples = s.num_samples
    scheduler = None
    if spec.scheduler is not None:
        from ray.tune.schedulers import ASHAScheduler

        sc = spec.scheduler
        scheduler = ASHAScheduler(
            time_attr=sc.time_attr,
            metric=sc.metric,
            mode=sc.mode,
            max_t=sc.max_t,
            grace_period=sc.grace_period,
            reduction_factor=sc.reduction_factor,
        )
    return tune.Tuner(
        _trainable(spec, base_flat, _join(storage, name)),
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=spec.max_concurrent or None,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            trial_name_creator=_trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[callback] + ([console] if console is not None else []),
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep),
        ),
    )


def _fit(tuner, meta: dict[str, Any], sweep_dir: str, cb) -> int:
    """Run the Tuner; end the MLflow runs whatever happens; 0 ok, 1 failed trials, 130 stopped."""
    # SIGTERM (e.g. `ray job stop`, a scheduler) stops the sweep like Ctrl+C: Tune saves state
    old = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGUSR1))
    status = "FAILED"
    try:
        tuner.fit()
        states = [s for s in trial_states(sweep_dir).values()]
        if any(s in ("running", "pending") for s in states) or not states:
            status = "KILLED"
        elif any(s == "failed" for s in states):
            status = "FAILED"
        else:
            status = "FINISHED"
    except KeyboardInterrupt:  # a second Ctrl+C skips Tune's graceful stop
        status = "KILLED"
        raise
    finally:
        signal.signal(signal.SIGTERM, old)
        _summarize_parent(meta)
        cb.close(status)  # this sweep's own runs, by run id
    if cb.outbox.items:  # the tracking store is down: all is on disk; resume sends it
        raise TrackingOutage(
            f"{cb.outbox.outage_line()}; sweep '{meta['name']}' stopped; continue it with "
            f"`amm sweep resume {meta['name']}` once the tracking store answers"
        )
    return {"FINISHED": 0, "FAILED": 1, "KILLED": 130}[status]


def _summarize_parent(meta: dict[str, Any]) -> None:
    """Best and mean objective on the parent run; a tracking hiccup must not fail the sweep."""
    from sweeps import parent

    try:
        parent.summarize(
            meta["tracking_uri"], meta["experiment_id"], meta["name"], meta["parent_run_id"]
        )
    except Exception as e:  # noqa: BLE001 - the trials' own runs are already logged
        print(f"amm: warning: sweep summary not logged to MLflow ({e})")


def run(
    spec_path: str,
    *,
    name: str | None = None,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    overrides: dict[str, Any] | None = None,
    verbose: bool = True,
) -> tuple[str, int]:
    """Start a new sweep -> (its name, exit code). Checks everything before anything starts."""
    spec = load_spec(spec_path, overrides)
    name = name or f"{spec.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME_RE.match(name):
        raise ConfigError(f"sweep name {name!r}: use letters, digits, '_', '-', '.'")
    storage = resolve_storage(storage)
    sweep_dir = _join(storage, name)
    base_cfg = spec.trial_config({})  # preset + overrides (may set data.data_dir)
    data_root = resolve_data_root(None, base_cfg.data.data_dir)
    if not base_cfg.data.download and not data_root.is_dir():
        raise ConfigError(
            f"data root {data_root} does not exist (fetch MNIST with `amm data get mnist`, "
            "or set --data-dir, data.data_dir in the preset or $AMM_DATA_DIR)"
        )
    # trials chdir into their own folders: pin the data root as an absolute path
    base_flat = spec.trial_config({}, str(data_root)).flat()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri)
    check_storage(storage)
    lock = sweep_lock.acquire(storage, name, "run")  # before anything of the sweep is created
    try:
        return name, _run_locked(spec, name, storage, sweep_dir, address, base_flat, uri, verbose)
    finally:
        lock.release()


def _run_locked(
    spec: SweepSpec,
    name: str,
    storage: str,
    sweep_dir: str,
    address: str | None,
    base_flat: dict[str, Any],
    uri: str,
    verbose: bool,
) -> int:
    from sweeps.callback import MlflowSweepCallback

    if _exists(sweep_dir):
        raise ConfigError(
            f"a sweep named '{name}' already exists at {sweep_dir}; continue it "
            f"with `amm sweep resume {name}` or choose another --name"
        )
    tracking.short_retries()
    tracking.init_store(uri)  # a fresh SQLite store, set up under the locks
    _ray_init(address, verbose)
    _check_cluster(spec)

    exp_id, parent_id = tracking.start_parent(
        uri,
        spec.experiment,
        name,
        params={
            "spec": spec.path.name,
            "trials": spec.num_trials(),
            "cpu": spec.cpu,
            "gpu": spec.gpu,
            "axes": ",".join(spec.axes()) or "search",
        },
        tags={
            "amm.spec_path": str(spec.path),
            "amm.storage": sweep_dir,
            # seeds per grid cell: analysis reports a cell with fewer finished seeds as "n=3 of 5"
            "amm.num_seeds": str(len(spec.seeds) if spec.search is None else 1),
        },
    )
    from sweeps import parent

    parent.describe(uri, parent_id, spec, name)
    meta = {
        "name": name,
        "spec_path": str(spec.path),
        "spec_text": spec.path.read_text(),
        "overrides": spec.overrides,
        "tracking_uri": uri,
        "experiment": spec.experiment,
        "experiment_id": exp_id,
        "parent_run_id": parent_id,
        "storage": storage,
        "base_flat": base_flat,
        "cells": [dict(c) for c in spec.cells()] if spec.search is None else [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write(_join(sweep_dir, META_FILE), json.dumps(meta, indent=1))
    locations.remember_sweep(name, sweep_dir, storage, uri)  # found by name from now on
    cb = MlflowSweepCallback(uri, exp_id, parent_id, name, sweep_dir, base_flat, spec.variants)
    from sweeps import console as sweep_console

    try:
        console = None if verbose else sweep_console.start(spec, name, uri)
        tuner = _tuner(spec, name, storage, base_flat, cb, console, verbose)
    except BaseException:  # nothing ran: leave the name free and no run RUNNING
        tracking.client(uri).set_terminated(parent_id, "FAILED")
        _forget(sweep_dir)
        raise
    return _fit(tuner, meta, sweep_dir, cb)


def _forget(sweep_dir: str) -> None:
    """Remove a sweep folder whose Tuner never started (only what `run` wrote there)."""
    if "://" not in sweep_dir:
        import shutil

        shutil.rmtree(sweep_dir, ignore_errors=True)


def resume(
    name: str,
    *,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    verbose: bool = True,
) -> int:
    """Continue a stopped sweep: finished trials stay, others continue from their checkpoints."""
    sweep_dir, meta = load_meta(name, storage)
    lock = sweep_lock.acquire(resolve_storage(storage), name, "resume")
    try:
        return _resume_locked(name, sweep_dir, meta, address, tracking_uri, verbose)
    finally:
        lock.release()


def _resume_locked(
    name: str,
    sweep_dir: str,
    meta: dict[str, Any],
    address: str | None,
    tracking_uri: str | None,
    verbose: bool,
) -> int:
    from ray import tune

    from sweeps.callback import MlflowSweepCallback

    if not tune.Tuner.can_restore(sweep_dir):
        raise ConfigError(
            f"sweep '{name}' at {sweep_dir} has no Tune state to resume "
            "(it stopped before its first trial started)"
        )
    uri = tracking.resolve_tracking_uri(tracking_uri or meta["tracking_uri"])
    tracking.check_tracking(uri)
    tracking.short_retries()
    tracking.init_store(uri)
    meta["tracking_uri"] = uri
    spec = load_spec_from_meta(meta)
    _ray_init(address, verbose)
    _check_cluster(spec)
    cb = MlflowSweepCallback(
        uri,
        meta["experiment_id"],
        meta["parent_run_id"],
        name,
        sweep_dir,
        meta["base_flat"],
        spec.variants,
    )
    if not cb.outbox.flush(force=True):  # writes a tracking outage left behind come first
        raise TrackingOutage(cb.outbox.outage_line())
    tracking.reopen_parent(uri, meta["parent_run_id"])
    reconcile.before_restore(sweep_dir, cb)
    tuner = tune.Tuner.restore(
        sweep_dir,
        trainable=_trainable(spec, meta["base_flat"], sweep_dir),
        resume_unfinished=True,
        resume_errored=True,
    )
    from sweeps import console as sweep_console

    # the callback was pickled with the tuner; give it the (possibly new) tracking URI
    console = None if verbose else sweep_console.start(spec, name, uri)
    tuner._local_tuner.get_run_config().callbacks = [cb] + ([console] if console else [])
    if not verbose:
        tuner._local_tuner.get_run_config().verbose = 0
    return _fit(tuner, meta, sweep_dir, cb)


def load_spec_from_meta(meta: dict[str, Any]) -> SweepSpec:
    """The spec as it was when the sweep started (the file may have changed since)."""
    import yaml

    from sweeps.spec import parse_spec

    data = yaml.safe_load(meta["spec_text"])
    data.pop("overrides", None)
    return parse_spec({**data, "overrides": meta["overrides"]}, Path(meta["spec_path"]))


# ------------------------------------------------------------------ status


def _trials(sweep_dir: str) -> list:
    """Tune's trials of a sweep folder; none when Tune has written no experiment state yet."""
    from ray.tune import ExperimentAnalysis

    try:
        return ExperimentAnalysis(sweep_dir).trials
    except (ValueError, FileNotFoundError, OSError):
        return []


def trial_states(sweep_dir: str) -> dict[str, str]:
    """trial id -> finished / failed / running / pending, from Tune's experiment state."""
    return {t.trial_id: STATES.get(t.status, t.status.lower()) for t in _trials(sweep_dir)}


def _state(trial, sweep_dir: str, live: bool) -> str:
    """Tune's state of a trial; without a live driver, running/pending ones are 'stopped', and
    one whose final checkpoint is on disk is 'finished' (Tune's saved state may lag a kill)."""
    from sweeps.reconcile import finished_on_disk, trial_dir

    state = STATES.get(trial.status, trial.status.lower())
    if live or state not in ("running", "pending"):
        return state
    if "://" not in sweep_dir and finished_on_disk(trial_dir(sweep_dir, trial.trial_id)):
        return "finished"
    return "stopped"


def status(name: str, storage: str | None = None) -> str:
    """Which config x seed cells are finished, failed, running or missing; errors in percent."""
    from sweeps.console import percent
    from sweeps.spec import run_name

    sweep_dir, meta = load_meta(name, storage)
    driver = sweep_lock.holder(resolve_storage(storage), name)
    rows: dict[str, tuple[str, ...]] = {}
    for cell in meta.get("cells", []):  # the spec's order first
        rows[run_name(cell)] = ("missing", "", "-", "-", "")
    for t in _trials(sweep_dir):
        last = t.last_result or {}
        rows[run_name(t.config)] = (
            _state(t, sweep_dir, driver is not None),
            str(last.get(names.STEP, "")),
            percent(last.get(names.VAL_ERROR_GY)),
            percent(last.get(names.TEST_ERROR_GY)),
            t.trial_id,
        )
    lines = [
        f"sweep {name} ({sweep_dir})",
        f"tracking: {meta['tracking_uri']} (parent run {meta['parent_run_id']})",
        "driver: "
        + (
            f"running ({sweep_lock.describe(driver)})"
            if driver
            else "none (trials not finished are 'stopped': `amm sweep resume` continues them)"
        ),
        "",
        f"{'run name':<32} {'state':<9} {'step':>7} {'val error':>10} {'test error':>10}  trial",
    ]
    for label, (state, step, val, test, tid) in rows.items():
        lines.append(f"{label:<32} {state:<9} {step:>7} {val:>10} {test:>10}  {tid}")
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row[0]] = counts.get(row[0], 0) + 1
    lines.append("")
    lines.append(", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return "\n".join(lines)
