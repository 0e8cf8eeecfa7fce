"""MLflow tracking for sweeps: one parent run per sweep, one nested child run per trial.

Only the sweep driver writes to the tracking store (a SQLite store is single-writer): trials
report to Tune, and the driver's Tune callback (sweeps/driver/callback.py) calls these functions.
Child runs carry the tags `amm.sweep` and `amm.trial_id`, so a resumed sweep finds and reuses
them instead of creating duplicates. Every run ends FINISHED, FAILED or KILLED: the driver's
callback ends its own runs by run id when the sweep ends (`MlflowSweepCallback.close`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import subprocess
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from amm_core import names, settings
from amm_core.errors import ConfigError, EnvironmentFailure


def resolve_tracking_uri(uri: str | None, workdir: Path | None = None) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db."""
    uri = uri or settings.tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative SQLite path: pin it, since trials and later commands run elsewhere
        return f"sqlite:///{(workdir or Path.cwd()).resolve() / uri[len('sqlite:///') :]}"
    if "://" not in uri:
        raise ConfigError(
            f"tracking URI {uri!r}: expected sqlite:///PATH or http(s)://HOST:PORT "
            "(a local file store is not supported)"
        )
    return uri


def check_tracking(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (ConfigError) on a tracking server that does not answer or a bad SQLite path."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
                if r.status != 200:
                    raise ConfigError(f"tracking server {uri} answered {r.status} on /health")
        except (urllib.error.URLError, OSError) as e:
            raise ConfigError(
                f"tracking server {uri} is not reachable ({e}); start it "
                "(mlflow server ...) or pass another --tracking-uri"
            ) from None
    elif uri.startswith("sqlite:///"):
        parent = Path(uri[len("sqlite:///") :]).parent
        if not parent.is_dir():
            raise ConfigError(f"tracking URI {uri}: folder {parent} does not exist")


def short_retries() -> None:
    """The driver's MLflow client: a few quick retries per request (not MLflow's default of
    minutes), so an outage reaches the outbox (sweeps/store/outbox.py) instead of stalling Tune."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def quiet_artifacts() -> None:
    """No progress bar per downloaded artifact file (an export or a reused trial's copy reads
    a dozen files a trial: the bars would fill the console)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def init_lock(uri: str) -> Path:
    """The file lock of a SQLite store's set-up: in the temporary folder, named by the store's
    path, so that nothing but the store is written beside it (a project folder stays clean)."""
    import hashlib
    import tempfile

    db = Path(uri[len("sqlite:///") :]).resolve()
    digest = hashlib.sha256(str(db).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"amm-store-init-{digest}.lock"


def init_store(uri: str) -> None:
    """Open (and on first use create) a SQLite store under a file lock (`init_lock`): two
    drivers starting at once on a fresh store would both set up its schema, and one would fail."""
    if not uri.startswith("sqlite:///"):
        return
    import fcntl

    with open(init_lock(uri), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            client(uri).search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy/MLflow errors differ by cause
            first = (str(e).splitlines() or [type(e).__name__])[0][:300]
            raise EnvironmentFailure(f"tracking store {uri} cannot be opened: {first}") from None
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def git_commit(repo: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


@functools.cache
def environment_tags() -> dict[str, str]:
    """git commit and package versions, for the parent and child runs."""
    commit = git_commit()
    tags = {names.TAG_GIT_COMMIT: commit, names.TAG_MLFLOW_GIT_COMMIT: commit}
    tags[names.TAG_PYTHON] = platform.python_version()
    for pkg in ("torch", "ray", "mlflow", "amm-sweeps", "optuna"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            tags[names.TAG_VERSION + pkg] = metadata.version(pkg)
    return tags


def artifact_root(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its runs' files: runs/mlartifacts beside
    the store (MLflow's own default, ./mlruns in the working folder, would land in the project
    folder). None for a tracking server: it has its own (mlflow server --artifacts-destination)."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri[len("sqlite:///") :]).resolve()
    return str(db.parent / settings.SQLITE_ARTIFACTS)


def experiment_id(c, name: str) -> str:
    exp = c.get_experiment_by_name(name)
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:
            # MLflow 3's UI opens an experiment of this kind in its "Model training" view
            root = artifact_root(c.tracking_uri)
            return c.create_experiment(
                name,
                artifact_location=f"{root}/{name}" if root else None,
                tags={names.TAG_EXPERIMENT_KIND: "custom_model_development"},
            )
        except MlflowException:  # another driver created it a moment ago
            exp = c.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise ConfigError(
            f"MLflow experiment '{name}' is deleted; restore it or choose another "
            "'experiment' in the spec"
        )
    return exp.experiment_id


def view_key(sweep: str) -> str:
    """The shared-view key of a sweep's trials table (sweep names are URL-safe)."""
    return f"amm-{sweep}"


def share_trials_view(c, exp_id: str, sweep: str, params: list[str]) -> str:
    """Store MLflow 3's "shared view" of this sweep's runs table on the experiment -> its key.

    The UI opens it from `#/experiments/<id>/runs?viewStateShareKey=<key>`: the sweep's trials
    only (a flat table: their parent run is filtered out), sorted by test/error_gy_percent
    (lowest first), with the objective and the validation error in percent, the NMI and the
    swept params as columns (the UI's
    own defaults show no metric). The state's keys are the UI's search facets and table state.
    """
    import json

    def col(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    # the errors in percent, as the console and the report show them (MLflow has no display
    # format: names.percent_key); test/error_bayes is the report's, not the view's
    metrics = [names.percent_key(names.TEST_ERROR_GY), names.percent_key(names.VAL_ERROR_GY)]
    metrics.append(names.TEST_NMI)
    state = {
        "searchFilter": f"tags.`{names.TAG_SWEEP}` = '{sweep}' and "
        f"tags.`{names.TAG_ROLE}` = '{names.ROLE_TRIAL}'",
        "orderByKey": col("metrics", metrics[0]),
        "orderByAsc": True,
        "lifecycleFilter": "Active",
        "selectedColumns": [col("metrics", m) for m in metrics]
        + [col("params", p) for p in params],
        "runListHidden": False,
        "viewMaximized": False,
    }
    key = view_key(sweep)
    c.set_experiment_tag(exp_id, names.TAG_SHARED_VIEW + key, json.dumps(state))
    return key


def start_parent(
    uri: str, experiment: str, sweep: str, params: dict[str, Any], tags: dict[str, str]
) -> tuple[str, str]:
    """Create the sweep's parent run -> (experiment_id, run_id)."""
    c = client(uri)
    exp_id = experiment_id(c, experiment)
    own = {names.TAG_SWEEP: sweep, names.TAG_ROLE: names.ROLE_SWEEP}
    run = c.create_run(exp_id, run_name=sweep, tags={**environment_tags(), **tags, **own})
    log_params(c, run.info.run_id, params)
    return exp_id, run.info.run_id


def log_params(c, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        c.log_batch(run_id, params=items[i : i + 100])


def log_metrics(c, run_id: str, metrics: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    items = [Metric(k, float(v), ts, int(step)) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i : i + 1000])


def start_child(
    c,
    exp_id: str,
    parent_id: str,
    sweep: str,
    trial_id: str,
    name: str,
    params: dict[str, Any],
    tags: dict[str, str],
) -> tuple[str, bool]:
    """The child run of a trial: reattached if it exists (resume, retry) -> (run_id, is_new).
    Found under this parent only, never another sweep's of the same name."""
    runs = c.search_runs(
        [exp_id],
        f"tags.`{names.TAG_SWEEP}` = '{sweep}' and tags.`{names.TAG_TRIAL}` = '{trial_id}' "
        f"and tags.`{names.TAG_PARENT}` = '{parent_id}'",
        max_results=10,
    )
    if runs:
        run_id = runs[0].info.run_id
        if c.get_run(run_id).info.status != names.RUNNING:
            c.update_run(run_id, status=names.RUNNING)
        return run_id, False
    run = c.create_run(
        exp_id,
        run_name=name,
        tags={
            **environment_tags(),
            **tags,
            names.TAG_PARENT: parent_id,
            names.TAG_SWEEP: sweep,
            names.TAG_TRIAL: trial_id,
            names.TAG_ROLE: names.ROLE_TRIAL,
        },
    )
    log_params(c, run.info.run_id, params)
    return run.info.run_id, True


def sweep_runs(uri: str, exp_id: str, sweep: str) -> list:
    """All runs (parent and children) of a sweep."""
    c = client(uri)
    return c.search_runs([exp_id], f"tags.`{names.TAG_SWEEP}` = '{sweep}'", max_results=10000)
