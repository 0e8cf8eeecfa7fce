"""Run and resume sweeps: the sweep folder (sweeps/storage.py), the lock, the MLflow parent run,
the Tuner (sweeps/tuner.py) and its fit. Everything that can be checked is checked before Ray
starts or anything is written, and a bad input raises `ConfigError` (exit 2).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.errors import ConfigError, TrackingOutage
from amm_core.shell import amm
from sweeps import locations, reconcile, stopping, tracking, tuner
from sweeps import lock as sweep_lock
from sweeps import storage as sweep_storage
from sweeps.spec import VARIANT, SweepSpec, load_spec
from sweeps.status import trial_states


def _data_root(configured: str | None, download: bool) -> str:
    """The data root as an absolute path (trials chdir into their own folders); it must exist
    unless the config downloads the data."""
    root = locations.resolve_data_root(configured)
    if not download and not root.is_dir():
        raise ConfigError(
            f"data root {root} does not exist (fetch MNIST with `{amm()} data get mnist`, "
            "or set --data-dir, data.data_dir in the preset or $AMM_DATA_DIR)"
        )
    return str(root)


def _fit(t, meta: dict[str, Any], sweep_dir: str, cb) -> int:
    """Run the Tuner `t` (None: stopped while it was built); end the MLflow runs whatever happens;
    0 ok, 1 failed trials, 130 stopped (a signal: sweeps/stopping.py)."""
    status = names.FAILED
    try:
        stopping.check()  # a stop asked for while the driver set up: Tune never starts
        if t is None:
            raise KeyboardInterrupt
        stopping.phase(stopping.TUNE)
        t.fit()
        stopping.phase(stopping.CLEANUP)
        states = list(trial_states(sweep_dir).values())
        if any(s in ("running", "pending") for s in states) or not states:
            status = names.KILLED
        elif any(s == "failed" for s in states):
            status = names.FAILED
        else:
            status = names.FINISHED
    except KeyboardInterrupt:  # before Tune's loop, or a second signal (no graceful stop)
        status = names.KILLED
    finally:
        stopping.phase(stopping.CLEANUP)  # signals from here on wait for the clean-up
        if cb.outbox.down_since is None:  # else it would wait for MLflow's retries; resume does it
            _summarize_parent(meta)
        cb.close(status)  # this sweep's own runs, by run id
    if cb.outbox.items:  # the tracking store is down: all is on disk; resume sends it
        raise TrackingOutage(
            f"{cb.outbox.outage_line()}; sweep '{meta['name']}' stopped; continue it with "
            f"`{amm()} sweep resume {meta['name']}` once the tracking store answers"
        )
    return {names.FINISHED: 0, names.FAILED: 1, names.KILLED: 130}[status]


def _summarize_parent(meta: dict[str, Any]) -> None:
    """Best and mean objective on the parent run; a tracking hiccup must not fail the sweep."""
    from sweeps import parent

    try:
        parent.summarize(
            meta["tracking_uri"], meta["experiment_id"], meta["name"], meta["parent_run_id"]
        )
    except Exception as e:  # noqa: BLE001 - the trials' own runs are already logged
        print(f"amm: warning: sweep summary not logged to MLflow ({e})")


def _callbacks(
    cb, spec: SweepSpec, name: str, uri: str, verbose: bool, resumed_from: str | None = None
) -> list:
    """The MLflow callback, and the short console unless Ray's own output is asked for; a
    resumed sweep's console counts the trials that finished before."""
    from sweeps import console

    if verbose:
        return [cb]
    short = console.start(spec, name, uri)
    if resumed_from:
        short.done = sum(s == "finished" for s in trial_states(resumed_from).values())
    return [cb, short]


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
    name = name or f"{spec.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not sweep_storage.NAME_RE.match(name):
        raise ConfigError(f"sweep name {name!r}: use letters, digits, '_', '-', '.'")
    storage = sweep_storage.resolve_storage(storage)
    base_cfg = spec.trial_config({})  # preset + overrides (may set data.data_dir)
    root = _data_root(base_cfg.data.data_dir, base_cfg.data.download)
    base_flat = spec.trial_config({}, root).flat()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri)
    sweep_storage.check_storage(storage)
    with sweep_lock.acquire(storage, name, "run"):  # before anything of the sweep is created
        return name, _run_locked(spec, name, storage, address, base_flat, uri, verbose)


def _run_locked(
    spec: SweepSpec,
    name: str,
    storage: str,
    address: str | None,
    base_flat: dict[str, Any],
    uri: str,
    verbose: bool,
) -> int:
    from sweeps import parent
    from sweeps.callback import MlflowSweepCallback

    sweep_dir = sweep_storage.join(storage, name)
    if sweep_storage.exists(sweep_dir):
        raise ConfigError(
            f"a sweep named '{name}' already exists at {sweep_dir}; continue it "
            f"with `{amm()} sweep resume {name}` or choose another --name"
        )
    stopping.check()
    tracking.short_retries()
    tracking.init_store(uri)  # a fresh SQLite store, set up under the locks
    tuner.ray_init(address, verbose)
    tuner.check_cluster(spec)
    stopping.check()  # the last point where a stop leaves nothing behind

    # from the parent run on, a stop ends in _fit: the parent KILLED, the folder resumable
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
            names.TAG_SPEC_PATH: str(spec.path),
            names.TAG_STORAGE: sweep_dir,
            # seeds per grid cell: analysis reports a cell with fewer finished seeds as "n=3 of 5"
            names.TAG_NUM_SEEDS: str(len(spec.seeds) if spec.search is None else 1),
        },
    )
    parent.describe(uri, parent_id, spec, name)
    _share_view(uri, exp_id, name, spec)
    meta = {
        "name": name,
        "spec_path": str(spec.path),
        "spec_text": spec.path.read_text(),
        "overrides": spec.overrides,
        "resources": {"cpu": spec.cpu, "gpu": spec.gpu},
        "tracking_uri": uri,
        "experiment": spec.experiment,
        "experiment_id": exp_id,
        "parent_run_id": parent_id,
        "storage": storage,
        "base_flat": base_flat,
        "cells": [dict(c) for c in spec.cells()] if spec.search is None else [],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    sweep_storage.write_text(
        sweep_storage.join(sweep_dir, sweep_storage.META_FILE), json.dumps(meta, indent=1)
    )
    locations.remember_sweep(name, sweep_dir, storage, uri)  # found by name from now on
    cb = MlflowSweepCallback(uri, exp_id, parent_id, name, sweep_dir, base_flat, spec.variants)
    new = None
    try:
        callbacks = _callbacks(cb, spec, name, uri, verbose)
        new = tuner.build(spec, name, storage, base_flat, callbacks, verbose)
    except KeyboardInterrupt:  # a second signal: _fit ends the parent run KILLED
        pass
    except BaseException:  # nothing ran: leave the name free and no run RUNNING
        stopping.phase(stopping.CLEANUP)
        tracking.client(uri).set_terminated(parent_id, names.FAILED)
        sweep_storage.forget(sweep_dir)
        raise
    return _fit(new, meta, sweep_dir, cb)


def resume(
    name: str,
    *,
    storage: str | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    data_dir: str | None = None,
    verbose: bool = True,
) -> int:
    """Continue a stopped sweep: finished trials stay, others continue from their checkpoints.
    `data_dir` replaces the sweep's data root (data.data_dir) for this session's trials."""
    tuner.check_ray_version()
    sweep_dir, meta = sweep_storage.load_meta(name, storage)
    if data_dir:
        base = meta["base_flat"]
        base["data.data_dir"] = _data_root(data_dir, bool(base.get("data.download")))
    with sweep_lock.acquire(sweep_storage.resolve_storage(storage), name, "resume"):
        if data_dir:  # kept: later resumes need no --data-dir again
            sweep_storage.write_text(
                sweep_storage.join(sweep_dir, names.SWEEP_FILE), json.dumps(meta)
            )
        return _resume_locked(name, sweep_dir, meta, address, tracking_uri, verbose)


def _resume_locked(
    name: str,
    sweep_dir: str,
    meta: dict[str, Any],
    address: str | None,
    tracking_uri: str | None,
    verbose: bool,
) -> int:
    from sweeps.callback import MlflowSweepCallback

    state = reconcile.tune_state(sweep_dir)
    if state == reconcile.NO_STATE_LEFT_TRIALS:
        raise ConfigError(
            f"sweep '{name}' at {sweep_dir} stopped before Ray Tune saved the state of its "
            f"trials, so it cannot be resumed; start it again with `amm sweep run "
            f"{meta['spec_path']} --name NEW_NAME`"
        )
    if state == reconcile.NO_STATE and "://" in sweep_dir:
        raise ConfigError(
            f"sweep '{name}' at {sweep_dir} has no Tune state to resume (it stopped before its "
            f"first trial started); start it again with `amm sweep run {meta['spec_path']} "
            f"--name NEW_NAME`"
        )
    uri = tracking.resolve_tracking_uri(tracking_uri or meta["tracking_uri"])
    tracking.check_tracking(uri)
    tracking.short_retries()
    tracking.init_store(uri)
    meta["tracking_uri"] = uri
    spec = load_spec_from_meta(meta)
    stopping.check()
    tuner.ray_init(address, verbose)
    tuner.check_cluster(spec)
    stopping.check()
    base_flat = meta["base_flat"]
    cb = MlflowSweepCallback(
        uri, meta["experiment_id"], meta["parent_run_id"], name, sweep_dir, base_flat, spec.variants
    )
    if not cb.outbox.flush(force=True):  # writes a tracking outage left behind come first
        raise TrackingOutage(cb.outbox.outage_line())
    tracking.client(uri).update_run(meta["parent_run_id"], status=names.RUNNING)
    t = None
    try:  # from here on a stop ends in _fit: the parent run KILLED again
        _share_view(uri, meta["experiment_id"], name, spec)  # a sweep from before the view
        if state == reconcile.NO_STATE:  # stopped before any trial: the spec's trials afresh
            reconcile.forget_tune_files(sweep_dir)
            print(
                f"amm: sweep '{name}' stopped before its first trial started; "
                f"running its {spec.num_trials()} trials from the start",
                file=sys.stderr,
            )
            callbacks = _callbacks(cb, spec, name, uri, verbose)
            t = tuner.build(spec, name, meta["storage"], base_flat, callbacks, verbose)
        else:
            reconcile.before_restore(sweep_dir, cb)
            # the callback was pickled with the tuner; give it the (possibly new) tracking URI
            callbacks = _callbacks(cb, spec, name, uri, verbose, sweep_dir)
            t = tuner.restore(sweep_dir, spec, base_flat, callbacks, verbose)
    except KeyboardInterrupt:
        pass
    return _fit(t, meta, sweep_dir, cb)


def _share_view(uri: str, exp_id: str, name: str, spec: SweepSpec) -> None:
    """The MLflow UI's view of this sweep's trials, which the printed link opens."""
    swept = [k for k in spec.axes() if k != VARIANT]  # variants are a tag, not a param
    tracking.share_trials_view(tracking.client(uri), exp_id, name, swept)


def load_spec_from_meta(meta: dict[str, Any]) -> SweepSpec:
    """The spec as it was when the sweep started (the file may have changed since)."""
    import yaml

    from sweeps.spec import parse_spec

    data = yaml.safe_load(meta["spec_text"])
    data.pop("overrides", None)
    if "resources" in meta:  # as run (`--set resources.gpu=0` changes the file's)
        data["resources"] = meta["resources"]
    return parse_spec({**data, "overrides": meta["overrides"]}, Path(meta["spec_path"]))
