"""Ray start-up and the Tune `Tuner` of a sweep: built from a spec, or restored from its folder."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Iterator
from typing import Any

from amm_core import names, settings
from amm_core.errors import ConfigError
from sweeps.planning.spec import SweepSpec, run_name
from sweeps.store.folder import SweepFolder

# The Ray versions (from, to excluded) whose private Tuner internals `restore` uses; pyproject.toml
# pins `ray` to the same range.
RAY_TESTED = ((2, 52), (2, 61))


_STARTED = []  # ray_init connected or started Ray in this process (not a caller, not a test)


def ray_init(address: str | None, verbose: bool = True) -> None:
    import ray

    if ray.is_initialized():
        return
    _STARTED.append(True)
    # quiet: no worker log lines on the driver, Ray's own logging at WARNING
    kw: dict[str, Any] = {} if verbose else {"log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address:
            ray.init(address=address, **{"log_to_driver": True, **kw})
        elif settings.ray_address():  # inside `ray job submit`
            ray.init(**kw)
        else:  # a fresh local Ray, never a stale /tmp/ray/ray_current_cluster
            with _own_process_group():
                ray.init(address="local", include_dashboard=False, **kw)
                from sweeps.driver import reaper, stopping

                reaper.watch()  # a driver killed with SIGKILL leaves no Ray process behind

                stopping.rearm()  # before a SIGTERM held back while Ray started is delivered
    except ConnectionError as e:
        raise ConfigError(f"cannot connect to the Ray cluster at {address}: {e}") from None
    from sweeps.driver import stopping

    stopping.rearm()  # ray.init replaced the driver's SIGTERM handler


@contextlib.contextmanager
def _own_process_group() -> Iterator[None]:
    """Start local Ray's processes out of reach of a SIGTERM to the driver's process group
    (`timeout`, Slurm's scancel, `kill -TERM -PGID`): such a signal then reaches the driver
    alone, which stops the sweep gracefully while Ray still runs, and stops Ray last.
    A driver that does not lead its group joins a new one while Ray starts, then goes back, so
    Ray's processes keep a group of their own. A group leader cannot leave its group: there
    Ray's processes start with SIGTERM blocked (ray.shutdown then ends them with SIGKILL after
    a second each)."""
    moved, pid = False, os.getpid()
    with contextlib.suppress(OSError):
        home = os.getpgid(0)
        if home != pid:
            os.setpgid(0, 0)
            moved = True
    blocked = None if moved else signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        if moved:
            with contextlib.suppress(OSError):
                os.setpgid(0, home)
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def shutdown() -> None:
    """Disconnect from (or stop the local) Ray that ray_init started; nothing otherwise."""
    if _STARTED:
        import ray

        from sweeps.driver import reaper

        _STARTED.clear()
        try:
            ray.shutdown()
        finally:
            reaper.release()


def check_cluster(spec: SweepSpec) -> None:
    """A trial must fit on one node of the connected cluster."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    for key, need in (("CPU", spec.cpu), ("GPU", spec.gpu)):
        most = max((r.get(key, 0) for r in nodes), default=0)
        if need > most:
            hint = ""
            if key == "GPU":
                from amm_core.shell import amm
                from sweeps.planning.spec import cpu_route, spec_arg

                hint = f"; to run it on CPUs: {amm()} sweep run {spec_arg(spec)} {cpu_route(spec)}"
            raise ConfigError(
                f"resources: {need:g} {key} per trial, but the largest node of the "
                f"cluster has {most:g} {key}{hint}"
            )


def check_ray_version() -> None:
    """A clear error before a resume touches anything when Ray is outside RAY_TESTED."""
    import ray

    version = tuple(int(p) for p in ray.__version__.split(".")[:2])
    lo, hi = RAY_TESTED
    tested = f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}"
    if not lo <= version < hi:
        raise ConfigError(
            f"amm sweep resume is tested with ray{tested}; this is ray {ray.__version__} "
            f"(install `ray[default,tune]{tested}`)"
        )


def trainable(spec: SweepSpec, folder: SweepFolder):
    from ray import tune

    from sweeps.driver.trainable import train_trial

    fn = tune.with_parameters(
        train_trial,
        base=folder.meta.base_flat,
        variants=spec.variants,
        threads=max(1, int(spec.cpu)),
        folder=folder,
    )
    return tune.with_resources(fn, {"cpu": spec.cpu, "gpu": spec.gpu})


def _search_space(
    spec: SweepSpec, cells: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any], Any, int]:
    """(param space, search algorithm, samples): the grid (only `cells` of it, when given), or
    Optuna's TPE over the spec's space."""
    from ray import tune

    if spec.search is None and cells is not None:  # a part of the grid: exactly these points
        from ray.tune.search.basic_variant import BasicVariantGenerator

        space = {k: tune.choice(v) for k, v in spec.axes().items()}
        return space, BasicVariantGenerator(points_to_evaluate=cells), len(cells)
    if spec.search is None:
        return {k: tune.grid_search(v) for k, v in spec.axes().items()}, None, 1
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    s = spec.search
    space = {
        k: tune.choice(d["values"])
        if d["type"] == "choice"
        else getattr(tune, d["type"])(d["low"], d["high"])
        for k, d in s.space.items()
    }
    sampler = optuna.samplers.TPESampler(seed=s.seed)
    return space, OptunaSearch(metric=s.metric, mode=s.mode, sampler=sampler), s.num_samples


def build(
    spec: SweepSpec,
    folder: SweepFolder,
    callbacks: list,
    verbose: bool = True,
    cells: list[dict[str, Any]] | None = None,
):
    """A new Tuner for the sweep in `folder` (of the grid's `cells` only, when given)."""
    from ray import tune

    space, search_alg, num_samples = _search_space(spec, cells)
    scheduler = None
    if spec.scheduler is not None:  # the spec's scheduler fields are ASHAScheduler's arguments
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(**dataclasses.asdict(spec.scheduler))
    return tune.Tuner(
        trainable(spec, folder),
        param_space=space,
        tune_config=tune.TuneConfig(
            num_samples=num_samples,
            search_alg=search_alg,
            scheduler=scheduler,
            max_concurrent_trials=spec.max_concurrent or None,
            trial_dirname_creator=lambda t: names.trial_dirname(t.trial_id),
            trial_name_creator=lambda t: run_name(t.config),  # = the MLflow run name
        ),
        run_config=tune.RunConfig(
            name=folder.name,
            storage_path=folder.storage,
            callbacks=callbacks,
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=spec.checkpoints_to_keep),
        ),
    )


def restore(folder: SweepFolder, spec: SweepSpec, callbacks: list, verbose: bool):
    """The sweep's Tuner, unfinished and errored trials to continue, with this driver's callbacks.

    `Tuner.restore` takes no callbacks: the ones pickled with the tuner would write to the old
    tracking URI. Swapping them reaches into Ray's private `_local_tuner`, only here and only for
    the Ray versions of RAY_TESTED."""
    from ray import tune

    check_ray_version()
    tuner = tune.Tuner.restore(
        folder.path, trainable=trainable(spec, folder), resume_unfinished=True, resume_errored=True
    )
    run_config = tuner._local_tuner.get_run_config()
    run_config.callbacks = callbacks
    if not verbose:
        run_config.verbose = 0
    return tuner
