"""amm.toml and the sweep index: where data, sweeps and tracking are found, flags and env first."""

from __future__ import annotations

import os
import re

import pytest

from amm_core import settings
from amm_core.errors import ConfigError
from sweeps.store import locations
from sweeps.store.locations import resolve_data_root


def test_order_flag_env_index_project_file(tmp_path, monkeypatch):
    (tmp_path / "amm.toml").write_text(
        '[amm]\ndata_dir = "d"\nstorage = "st"\ntracking_uri = "sqlite:///t.db"\n'
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # the project is found upwards
    for var in ("AMM_DATA_DIR", "AMM_SWEEP_STORAGE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_data_root(None) == tmp_path / "d"
    assert settings.data_root() == sub / "data"  # a run alone: no project file
    assert resolve_data_root("f") == settings.data_root("f") == sub / "f"
    assert locations.storage_for("x", None) == str(tmp_path / "st")
    assert locations.tracking_for("x", None) == f"sqlite:///{tmp_path / 't.db'}"
    locations.remember_sweep("x", "/s/x", "/s", "sqlite:////i.db")
    assert (tmp_path / "runs" / "sweep_index.json").is_file()
    assert locations.storage_for("x", None) == "/s" and locations.storage_for("y", None) != "/s"
    assert locations.tracking_for("x", None) == "sqlite:////i.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    monkeypatch.setenv("AMM_DATA_DIR", "/env/data")
    assert locations.tracking_for("x", None) == "http://127.0.0.1:1"
    assert str(resolve_data_root(None)) == str(settings.data_root()) == "/env/data"
    assert locations.tracking_for("x", "sqlite:////flag.db") == "sqlite:////flag.db"
    assert locations.storage_for("x", "/flag") == "/flag"


def test_bad_project_file_names_the_key(tmp_path, monkeypatch):
    (tmp_path / "amm.toml").write_text('[amm]\nstorge = "x"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "unknown key 'amm.storge' (did you mean amm.storage?); "
            "allowed under 'amm': data_dir, storage"
        ),
    ):
        locations.project_settings()
    (tmp_path / "amm.toml").write_text("[amm]\nstorage = 3\n")
    with pytest.raises(ConfigError, match="amm.toml': key 'amm.storage': expected a string, got 3"):
        locations.project_settings()
    (tmp_path / "amm.toml").write_text("[amm\n")
    with pytest.raises(ConfigError, match="amm.toml': not valid TOML"):
        locations.project_settings()


def test_environment_settings(monkeypatch):
    for var in ("AMM_DOWNLOAD_TIMEOUT", "AMM_LOCK_STALE_S", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    assert settings.download_timeout_s() == 30.0 and settings.lock_stale_s() == 300.0
    assert settings.tracking_uri() == "sqlite:///mlflow.db" and settings.tracking_uri("") == ""
    monkeypatch.setenv("AMM_DOWNLOAD_TIMEOUT", "2.5")
    assert settings.download_timeout_s() == 2.5
    monkeypatch.setenv("AMM_LOCK_STALE_S", "soon")
    with pytest.raises(ConfigError, match="AMM_LOCK_STALE_S='soon': expected seconds"):
        settings.lock_stale_s()


def test_cache_dir_ray_address_and_a_variable_set_for_a_while(tmp_path, monkeypatch):
    monkeypatch.delenv("AMM_CACHE_DIR", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert settings.cache_dir().parts[-2:] == (".cache", "amm-sweeps")
    assert settings.ray_address() == ""
    monkeypatch.setenv("AMM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert settings.cache_dir() == tmp_path and settings.ray_address() == "127.0.0.1:6379"
    with settings.env_set("RAY_ADDRESS", "x"), settings.env_set("AMM_UNSET_FOR_TEST", "1"):
        assert settings.ray_address() == "x"
    assert settings.ray_address() == "127.0.0.1:6379" and "AMM_UNSET_FOR_TEST" not in os.environ
