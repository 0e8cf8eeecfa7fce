"""Small helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

# a run of seconds on real MNIST: the tiny network on 2,000 training images, figures off
FAST_RUN = [
    "model.arch=tiny",
    "model.latent_dim=8",
    "data.train_subset=2000",
    "data.val_size=500",
    "train.batch_size=32",
    "train.eval_every=10",
    "train.log_every=5",
    "train.figures=false",
]


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen) -> None:
    """End a process started with start_new_session=True and everything it started."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def mlflow_security_utils() -> ModuleType:
    """MLflow's own Host-header check, loaded without importing the (slow) mlflow.server package."""
    root = Path(importlib.util.find_spec("mlflow").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location(
        "_mlflow_security_utils", root / "server" / "security_utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def option(tokens: list[str], name: str) -> str:
    """Value of `--name V` or `--name=V` in a token list."""
    for i, tok in enumerate(tokens):
        if tok == name:
            return tokens[i + 1]
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    raise AssertionError(f"{name} not in {tokens}")


def stream_parameters(encoder: Any, stream: str) -> list[Any]:
    """The parameters of the encoder's y stream (G_y(x)) or z stream (G_z(x, .)) and its heads."""
    mods = [getattr(encoder, f"{stream}_{part}") for part in ("convs", "bns", "mu", "logvar")]
    return [p for m in mods for p in m.parameters()]


def old_sweep(storage: Path, name: str, **fields: Any) -> Path:
    """A sweep folder holding only its `amm_sweep.json`, with every key the driver wrote before
    the metadata became a dataclass (such folders must still load)."""
    meta = {
        "name": name, "spec_path": "/specs/smoke.yaml", "spec_text": "", "overrides": {},
        "resources": {"cpu": 1.0, "gpu": 0.0}, "tracking_uri": "sqlite:///x.db",
        "experiment": "amm", "experiment_id": "1", "parent_run_id": "0" * 32,
        "storage": str(storage), "base_flat": {}, "cells": [], "created": "2025-01-01T00:00:00",
    }  # fmt: skip
    (storage / name).mkdir(parents=True)
    (storage / name / "amm_sweep.json").write_text(json.dumps({**meta, **fields}, indent=1))
    return storage / name


def sqlite_store(tmp_path_factory: Any, experiment: str) -> tuple[str, Any, str]:
    """A fresh MLflow SQLite store with one experiment: (tracking URI, client, experiment id)."""
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = MlflowClient(tracking_uri=uri)
    return uri, c, c.create_experiment(experiment, artifact_location=str(root / "artifacts"))


def write_svhn(path: Path, n: int, seed: int) -> tuple[Any, Any]:
    """An SVHN-format .mat file of n random 32x32x3 images, labels 1..10 in turn (10 = digit 0)."""
    import numpy as np
    import scipy.io

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"X": X, "y": y})
    return X, y
