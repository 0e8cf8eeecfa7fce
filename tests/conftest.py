"""Shared fixtures. `data_root`: the real data root ($AMM_DATA_DIR, else ../shared/data);
`one_thread`: torch on one thread, seeded, for small deterministic model tests."""

import os
from pathlib import Path

import pytest

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


def pytest_collection_modifyitems(items):
    """Tests that read real MNIST are `slow` too: `make test-fast` (-m "not slow") is the inner
    loop without data, clusters or servers; `make test` runs everything."""
    for item in items:
        if "data_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
