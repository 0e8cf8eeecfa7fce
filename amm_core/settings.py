"""Every environment variable amm reads, with its default, in one place.

Where a command has a flag, the flag wins; the order of flag, environment, sweep index and
`amm.toml` is `sweeps.store.locations`'. A variable set but empty counts as unset; one that must be
a number and is not is a `ConfigError` naming it. Variables amm only sets for the libraries it
drives (MLflow's retries, Tune's output) are set where they take effect; `env_set` sets one for
a while.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from amm_core.errors import ConfigError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # the working folder's mlflow.db
DEFAULT_STORAGE = "runs/sweeps"  # sweep folders, relative to the working folder
DEFAULT_REPORTS = "runs/reports"  # `amm report`'s pages, relative to the working folder


def report_path(sweep: str) -> str:
    """Where `amm report SWEEP` writes by default: runs/reports/SWEEP.html (a sweep export file
    or a Tune folder named by its file or folder name)."""
    stem = os.path.basename(sweep.rstrip("/"))
    for suffix in (".gz", ".json", ".amm-sweep"):  # an export file: NAME.amm-sweep.json.gz
        stem = stem.removesuffix(suffix)
    return f"{DEFAULT_REPORTS}/{stem or 'report'}.html"


# the runs' files (figures, spec) of a SQLite store's experiments, relative to the store's folder
SQLITE_ARTIFACTS = "runs/mlartifacts"


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected seconds") from None


def data_dir(default: str = "") -> str:  # the data root
    return os.environ.get("AMM_DATA_DIR") or default


def data_root(given: str = "", project: Callable[[], str] = str) -> Path:
    """The data root, decided here only: `given` (a flag, else data.data_dir), else
    $AMM_DATA_DIR, else `project()` (amm.toml's data_dir, for the `amm` commands), else ./data;
    made absolute."""
    return Path(given or data_dir() or project() or "data").expanduser().absolute()


def cache_dir() -> Path:  # the evaluation classifier's cache
    env = os.environ.get("AMM_CACHE_DIR", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "amm-sweeps"


def data_mirror() -> str:  # a mirror tried first for MNIST / Fashion-MNIST downloads
    return os.environ.get("AMM_DATA_MIRROR", "")


def download_timeout_s() -> float:  # seconds a download may stall
    return _seconds("AMM_DOWNLOAD_TIMEOUT", 30.0)


def sweep_storage(default: str = DEFAULT_STORAGE) -> str:  # folder or URI of the sweep folders
    return os.environ.get("AMM_SWEEP_STORAGE") or default


def tracking_uri(default: str = DEFAULT_TRACKING_URI) -> str:  # the MLflow tracking store
    return os.environ.get("MLFLOW_TRACKING_URI") or default


def lock_stale_s() -> float:  # a sweep lock without a heartbeat this long is stale
    return _seconds("AMM_LOCK_STALE_S", 300.0)


def step_delay_s() -> float:
    """Seconds the training loop sleeps after each step: a slower machine, simulated (tests:
    a run on a step budget gives the same numbers at any speed). 0: none."""
    return _seconds("AMM_STEP_DELAY_S", 0.0)


def tracking_outage_s() -> float:  # a sweep stops after the tracking store is down this long
    return _seconds("AMM_TRACKING_OUTAGE_S", 900.0)


def no_color() -> bool:  # the https://no-color.org convention: no bold in `amm table`
    return bool(os.environ.get("NO_COLOR"))


def ray_address() -> str:  # set by `ray job submit`: the driver joins that cluster
    return os.environ.get("RAY_ADDRESS", "")


@contextlib.contextmanager
def env_set(name: str, value: str) -> Iterator[None]:
    """`name=value` for a library amm drives (e.g. Ray Tune) while inside; the old value after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
