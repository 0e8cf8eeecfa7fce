"""Run and resume sweeps: the sweep folder (sweeps/store/folder.py), the lock, the MLflow parent
run, the Tuner (sweeps/driver/tuner.py) and its fit. Everything that can be checked is checked
before Ray starts or anything is written, and a bad input raises `ConfigError` (exit 2).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.errors import ConfigError, TrackingOutage
from amm_core.shell import amm
from sweeps.driver import stopping, tuner
from sweeps.planning.spec import SweepSpec, load_spec
from sweeps.store import ledger, locations, reconcile, reuse, tracking
from sweeps.store import lock as sweep_lock
from sweeps.store.folder import NAME_RE, SweepFolder, SweepMeta
from sweeps.store.status import trial_states


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


def _fit(t, folder: SweepFolder, cb) -> int:
    """Run the Tuner `t` (None: stopped while it was built); end the MLflow runs whatever happens;
    0 ok, 1 failed trials, 130 stopped (a signal: sweeps/driver/stopping.py)."""
    status = names.FAILED
    try:
        stopping.check()  # a stop asked for while the driver set up: Tune never starts
        if t is None:
            raise KeyboardInterrupt
        stopping.phase(stopping.TUNE)
        t.fit()
        stopping.phase(stopping.CLEANUP)
        states = list(trial_states(folder).values())
        ended = names.FAILED if "failed" in states else names.FINISHED
        status = names.KILLED if not states or {"running", "pending"} & set(states) else ended
    except KeyboardInterrupt:  # before Tune's loop, or a second signal (no graceful stop)
        status = names.KILLED
    finally:
        stopping.phase(stopping.CLEANUP)  # signals from here on wait for the clean-up
        if cb.outbox.down_since is None:  # else it would wait for MLflow's retries; resume does it
            _summarize_parent(folder.meta)
        cb.close(status)  # this sweep's own runs, by run id
    if cb.outbox.items:  # the tracking store is down: all is on disk; resume sends it
        raise TrackingOutage(
            f"{cb.outbox.outage_line()}; sweep '{folder.name}' stopped; continue it with "
            f"`{amm()} sweep resume {folder.name}` once the tracking store answers"
        )
    return {names.FINISHED: 0, names.FAILED: 1, names.KILLED: 130}[status]


def _open_parent(
    spec: SweepSpec, folder: SweepFolder, uri: str, known: ledger.Ledger | None
) -> tuple[str, str]:
    """The sweep's parent run -> (experiment id, run id): the store's, RUNNING again, when it
    holds the sweep (imported, or its folder lost), else a new one."""
    from sweeps.store import parent

    if known is not None:
        ledger.reopen(uri, known, len(spec.seeds))
        return known.experiment_id, known.parent_run_id
    exp_id, parent_id = tracking.start_parent(
        uri,
        spec.experiment,
        folder.name,
        params={
            "spec": spec.path.name,
            "trials": spec.num_trials(),
            "cpu": spec.cpu,
            "gpu": spec.gpu,
            "axes": ",".join(spec.axes()) or "search",
        },
        tags={
            names.TAG_SPEC_PATH: str(spec.path),
            names.TAG_STORAGE: folder.path,
            # seeds per cell: analysis reports a cell with fewer finished seeds as "n=3 of 5"
            names.TAG_NUM_SEEDS: str(len(spec.seeds) if spec.search is None else 1),
        },
    )
    parent.describe(uri, parent_id, spec, folder.name)
    return exp_id, parent_id


def _copy_reused(
    uri: str,
    exp_id: str,
    parent_id: str,
    name: str,
    todo: list[dict[str, Any]],
    found: dict[int, Any],
) -> None:
    """Copy the finished trials of other sweeps that `--reuse` found (sweeps/store/reuse.py)."""
    for i, donor in found.items():
        reuse.copy(uri, exp_id, parent_id, name, todo[i], donor)
    came = sorted({d.data.tags.get(names.TAG_SWEEP, "?") for d in found.values()})
    print(
        f"sweep {name}: {len(found)} of {len(todo)} cells copied from finished trials of "
        f"{', '.join(came)} (same config hash and seed; tag {names.TAG_REUSED})"
    )


def _summarize_parent(meta: SweepMeta) -> None:
    """Best and mean objective on the parent run; a tracking hiccup must not fail the sweep."""
    from sweeps.store import parent

    try:
        parent.summarize(meta.tracking_uri, meta.experiment_id, meta.name, meta.parent_run_id)
    except Exception as e:  # noqa: BLE001 - the trials' own runs are already logged
        print(f"amm: warning: sweep summary not logged to MLflow ({e})")


def _callbacks(
    cb,
    spec: SweepSpec,
    name: str,
    uri: str,
    verbose: bool,
    resumed: SweepFolder | None = None,
    cells: list[dict[str, Any]] | None = None,
    note: str = "",
) -> list:
    """The MLflow callback, and the short console unless Ray's own output is asked for; a
    resumed sweep's console counts the trials that finished before. `cells`: the grid cells
    this run trains (default: all), `note` what the store already held (the plan's second line)."""
    from sweeps.driver import console

    if note:
        print(f"sweep {name}: {note}")
    if verbose:
        return [cb]
    short = console.start(spec, name, uri, cells)
    if resumed:
        short.done = sum(s == "finished" for s in trial_states(resumed).values())
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
    reuse_finished: bool = False,
) -> tuple[str, int]:
    """Start a new sweep -> (its name, exit code). Checks everything before anything starts.
    `reuse_finished`: cells with a finished trial of another sweep in the store are copied, not
    trained (sweeps/store/reuse.py)."""
    spec = load_spec(spec_path, overrides)
    name = name or f"{spec.path.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if not NAME_RE.match(name):
        raise ConfigError(f"sweep name {name!r}: use letters, digits, '_', '-', '.'")
    folder = SweepFolder(storage, name)
    base_cfg = spec.trial_config({})  # preset + overrides (may set data.data_dir)
    root = _data_root(base_cfg.data.data_dir, base_cfg.data.download)
    base_flat = spec.trial_config({}, root).flat()
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_tracking(uri)
    folder.check()
    with sweep_lock.acquire(folder, "run"):  # before anything of the sweep is created
        return name, _run_locked(spec, folder, address, base_flat, uri, verbose, reuse_finished)


def _run_locked(
    spec: SweepSpec,
    folder: SweepFolder,
    address: str | None,
    base_flat: dict[str, Any],
    uri: str,
    verbose: bool,
    reuse_finished: bool = False,
) -> int:
    from sweeps.driver.callback import MlflowSweepCallback
    from sweeps.store import parent

    name = folder.name
    stopping.check()
    tracking.short_retries()
    tracking.init_store(uri)  # a fresh SQLite store, set up under the locks
    known = None if spec.search is not None else ledger.read(spec, uri, name)
    if known is not None and not known.missing:
        print(
            f"sweep {name}: all {len(known.finished)} trials of the spec already finished in "
            f"the tracking store {uri} (parent run {known.parent_run_id}); nothing to run"
        )
        return 0
    if folder.exists():
        more = ""
        if known is not None:
            more = (
                f"; to run only the {len(known.missing)} cells without a finished trial under "
                f"the same parent instead, move {folder.path} away first"
            )
        raise ConfigError(
            f"a sweep named '{name}' already exists at {folder.path}; continue it "
            f"with `{amm()} sweep resume {name}` or choose another --name{more}"
        )
    todo = known.missing if known is not None else spec.cells()
    found = reuse.donors(uri, spec, name, todo) if reuse_finished and spec.search is None else {}
    rest = [cell for i, cell in enumerate(todo) if i not in found]
    if rest or spec.search is not None:  # a sweep whose every cell is reused needs no Ray
        tuner.ray_init(address, verbose)
        tuner.check_cluster(spec)
    stopping.check()  # the last point where a stop leaves nothing behind

    # from the parent run on, a stop ends in _fit: the parent KILLED, the folder resumable
    exp_id, parent_id = _open_parent(spec, folder, uri, known)
    _share_view(uri, exp_id, name, spec)
    if found:
        _copy_reused(uri, exp_id, parent_id, name, todo, found)
        if not rest:
            tracking.client(uri).set_terminated(parent_id, names.FINISHED)
            parent.summarize(uri, exp_id, name, parent_id)
            print(f"sweep {name}: every cell reused; nothing to train")
            return 0
    cells = rest if known is not None or found else None
    folder.save_meta(
        SweepMeta(
            name=name,
            spec_path=str(spec.path),
            spec_text=spec.path.read_text(),
            overrides=spec.overrides,
            resources={"cpu": spec.cpu, "gpu": spec.gpu},
            tracking_uri=uri,
            experiment=spec.experiment,
            experiment_id=exp_id,
            parent_run_id=parent_id,
            storage=folder.storage,
            base_flat=base_flat,
            cells=[dict(c) for c in (cells or spec.cells())] if spec.search is None else [],
            created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        )
    )
    locations.remember_sweep(name, folder.path, folder.storage, uri)  # found by name from now on
    cb = MlflowSweepCallback(folder, uri, spec.variants)
    new = None
    try:
        note = ledger.plan_note(known, spec.num_trials()) if known is not None else ""
        callbacks = _callbacks(cb, spec, name, uri, verbose, cells=cells, note=note)
        new = tuner.build(spec, folder, callbacks, verbose, cells=cells)
    except KeyboardInterrupt:  # a second signal: _fit ends the parent run KILLED
        pass
    except BaseException:  # nothing ran: leave the name free and no run RUNNING
        stopping.phase(stopping.CLEANUP)
        tracking.client(uri).set_terminated(parent_id, names.FAILED)
        folder.forget()
        raise
    return _fit(new, folder, cb)


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
    `data_dir` replaces the sweep's data root (data.data_dir) for the trials this resume runs."""
    tuner.check_ray_version()
    folder = SweepFolder(storage, name)
    base = folder.meta.base_flat
    if data_dir:
        base = {**base, "data.data_dir": _data_root(data_dir, bool(base.get("data.download")))}
    with sweep_lock.acquire(folder, "resume"):
        if data_dir:  # kept: later resumes need no --data-dir again
            folder.update_meta(base_flat=base)
        return _resume_locked(folder, address, tracking_uri, verbose)


def _resume_locked(
    folder: SweepFolder, address: str | None, tracking_uri: str | None, verbose: bool
) -> int:
    from sweeps.driver.callback import MlflowSweepCallback

    name, meta = folder.name, folder.meta
    state = reconcile.tune_state(folder)
    again = f"start it again with `amm sweep run {meta.spec_path} --name NEW_NAME`"
    if state == reconcile.NO_STATE_LEFT_TRIALS:
        raise ConfigError(
            f"sweep '{name}' at {folder.path} stopped before Ray Tune saved the state of its "
            f"trials, so it cannot be resumed; {again}"
        )
    if state == reconcile.NO_STATE and folder.remote:
        raise ConfigError(
            f"sweep '{name}' at {folder.path} has no Tune state to resume (it stopped before "
            f"its first trial started); {again}"
        )
    uri = tracking.resolve_tracking_uri(tracking_uri or meta.tracking_uri)
    tracking.check_tracking(uri)
    tracking.short_retries()
    tracking.init_store(uri)
    spec = load_spec_from_meta(meta)
    stopping.check()
    tuner.ray_init(address, verbose)
    tuner.check_cluster(spec)
    stopping.check()
    cb = MlflowSweepCallback(folder, uri, spec.variants)
    if not cb.outbox.flush(force=True):  # writes a tracking outage left behind come first
        raise TrackingOutage(cb.outbox.outage_line())
    tracking.client(uri).update_run(meta.parent_run_id, status=names.RUNNING)
    if uri != meta.tracking_uri:  # the store holds the sweep: later commands name it
        meta = folder.update_meta(tracking_uri=uri)
        locations.remember_sweep(name, folder.path, folder.storage, uri)
    t = None
    try:  # from here on a stop ends in _fit: the parent run KILLED again
        _share_view(uri, meta.experiment_id, name, spec)  # a sweep from before the view
        # the cells this sweep trains: a run against a store that held finished trials of
        # its name trains only the missing ones (its meta keeps them); else the spec's
        cells = meta.cells if spec.search is None and meta.cells else None
        if state == reconcile.NO_STATE:  # stopped before any trial: its trials afresh
            reconcile.forget_tune_files(folder)
            n = len(cells) if cells else spec.num_trials()
            print(
                f"amm: sweep '{name}' stopped before its first trial started; "
                f"running its {n} trials from the start",
                file=sys.stderr,
            )
            callbacks = _callbacks(cb, spec, name, uri, verbose, cells=cells)
            t = tuner.build(spec, folder, callbacks, verbose, cells=cells)
        else:
            reconcile.before_restore(folder, cb.client)
            # the callback was pickled with the tuner; give it the (possibly new) tracking URI
            callbacks = _callbacks(cb, spec, name, uri, verbose, folder, cells=cells)
            t = tuner.restore(folder, spec, callbacks, verbose)
    except KeyboardInterrupt:
        pass
    return _fit(t, folder, cb)


def _share_view(uri: str, exp_id: str, name: str, spec: SweepSpec) -> None:
    """The MLflow UI's view of this sweep's trials, which the printed link opens."""
    swept = [k for k in spec.axes() if k != names.VARIANT]  # variants are a tag, not a param
    tracking.share_trials_view(tracking.client(uri), exp_id, name, swept)


def load_spec_from_meta(meta: SweepMeta) -> SweepSpec:
    """The spec as it was when the sweep started (the file may have changed since)."""
    import yaml

    from sweeps.planning.spec import parse_spec

    data = yaml.safe_load(meta.spec_text)
    data.pop("overrides", None)
    if meta.resources is not None:  # as run (`--set resources.gpu=0` changes the file's)
        data["resources"] = meta.resources
    return parse_spec({**data, "overrides": meta.overrides}, Path(meta.spec_path))
