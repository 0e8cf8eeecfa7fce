"""Shared fixtures. `data_root`: the real data root ($AMM_DATA_DIR, else ../shared/data);
`one_thread`: torch on one thread, seeded, for small deterministic model tests;
`mlflow_server`: a real tracking server on a loopback port, one per test module."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import free_port, stop_group

REPO = Path(__file__).resolve().parent.parent
# The `mlflow server`s the tests start need no job runner (MLflow 3 starts several huey worker
# processes for it by default, about a core-second each on this 2-core machine); inherited by
# every subprocess.
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("AMM_DATA_DIR", REPO.parent / "shared" / "data"))
    assert (root / "mnist" / "MNIST" / "raw").is_dir(), (
        f"real MNIST not found under data root '{root}' (set AMM_DATA_DIR)"
    )
    os.environ.setdefault("AMM_DATA_DIR", str(root))  # where train.run looks without data_dir
    return root


@pytest.fixture
def one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, a free loopback port) for one test module."""
    d = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    log = open(d / "server.log", "w")  # noqa: SIM115 - closed in the finalizer
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{d / 'mlflow.db'}",
            "--artifacts-destination",
            str(d / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (d / "server.log").read_text()[-3000:]
            assert time.time() < deadline, "mlflow server did not start in 120 s"
            time.sleep(0.5)
        yield uri
    finally:
        stop_group(proc)
        log.close()


@pytest.fixture(scope="module")
def ray_head():
    """One Ray head for the sweep drivers of a test module (`--address`): each starts in
    seconds."""
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        yield c.address
    finally:
        c.shutdown()


def pytest_collection_modifyitems(items):
    """Tests that read real MNIST are `slow` too: `make test-fast` (-m "not slow") is the inner
    loop without data, clusters or servers; `make test` runs everything."""
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
