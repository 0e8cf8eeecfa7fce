"""Where things are: one place for the data root, sweep storage and tracking store (for the
`amm` commands and the sweep runner; the data root's order itself is
`amm_core.settings.data_root`, which a run uses without amm.toml: `amm train` fills
data.data_dir in from here).

Order, for each: the command's flag, then its environment variable, then what the sweep index
says about that sweep (for commands given a sweep name), then the project file `amm.toml`, then
the default. The project is the nearest folder, from the working folder up, holding `amm.toml`
(else the working folder). `amm.toml` (all keys optional; relative paths are relative to it):

    [amm]
    data_dir = "../shared/data"
    storage = "runs/sweeps"
    tracking_uri = "sqlite:///mlflow.db"

`amm sweep run` records every sweep in `<project>/runs/sweep_index.json` (name -> sweep folder,
tracking URI), so `amm sweep status|resume NAME`, `amm table NAME` and `amm report NAME` find it
from the name alone, whatever --storage / --tracking-uri it ran with.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amm_core import settings
from amm_core.errors import ConfigError
from amm_core.fs import write_atomic
from amm_core.loader import build, within
from sweeps.store.folder import is_remote
from sweeps.store.tracking import resolve_tracking_uri

PROJECT_FILE = "amm.toml"
INDEX = "runs/sweep_index.json"


@dataclass(frozen=True)
class ProjectFile:  # the [amm] table of amm.toml
    data_dir: str = ""  # the data root
    storage: str = ""  # where sweep folders go
    tracking_uri: str = ""  # the MLflow tracking store


def project_root(start: Path | None = None) -> Path:
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / PROJECT_FILE).is_file():
            return d
    return here


def project_settings(start: Path | None = None) -> dict[str, str]:
    """The [amm] table of amm.toml, paths made absolute; {} when there is no such file."""
    root = project_root(start)
    path = root / PROJECT_FILE
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text()).get("amm", {})
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"project file '{path}': not valid TOML ({e})") from None
    with within(f"project file '{path}'"):
        given = build(ProjectFile, data, "amm.")
    return {k: _absolute(k, getattr(given, k), root) for k in data}


def _absolute(key: str, value: str, root: Path) -> str:
    if key == "tracking_uri":
        return resolve_tracking_uri(value, root)
    if is_remote(value):
        return value
    return str((root / Path(value).expanduser()).resolve())


def setting(key: str) -> str:
    """amm.toml's value for key, or ''."""
    return project_settings().get(key, "")


def resolve_data_root(flag: str | None, cfg_dir: str = "") -> Path:
    """--data-dir, else cfg.data.data_dir, else $AMM_DATA_DIR, else amm.toml's data_dir, else
    ./data (made absolute)."""
    return settings.data_root(flag or cfg_dir, lambda: setting("data_dir"))


def _index_path() -> Path:
    return project_root() / INDEX


def read_index() -> dict[str, dict[str, Any]]:
    try:
        return json.loads(_index_path().read_text())
    except (OSError, ValueError):
        return {}


def remember_sweep(name: str, sweep_dir: str, storage: str, tracking_uri: str) -> None:
    """Record a sweep in the project's index (best effort: a read-only project is no error)."""
    path = _index_path()
    index = read_index()
    index[name] = {"sweep_dir": sweep_dir, "storage": storage, "tracking_uri": tracking_uri}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(index, indent=1, sort_keys=True))
    except OSError:
        pass


def sweep_entry(name: str) -> dict[str, Any]:
    return read_index().get(name, {})


def _lookup(name: str | None, flag: str | None, env: str, key: str) -> str | None:
    """flag, else the environment's value, else the sweep index's entry for `key` (when the sweep
    is named), else amm.toml's `key`; None when none is set."""
    return flag or env or (name and sweep_entry(name).get(key)) or setting(key) or None


def storage_for(name: str | None, flag: str | None) -> str | None:
    """--storage, $AMM_SWEEP_STORAGE, the index's entry for the sweep, amm.toml; else None."""
    return _lookup(name, flag, settings.sweep_storage(default=""), "storage")


def tracking_for(name: str | None, flag: str | None) -> str | None:
    """--tracking-uri, $MLFLOW_TRACKING_URI, the index's entry for the sweep, amm.toml, None."""
    return _lookup(name, flag, settings.tracking_uri(default=""), "tracking_uri")
