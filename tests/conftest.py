"""Shared fixtures. `data_root`: the real data root ($AMM_DATA_DIR, else ../shared/data)."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = Path(os.environ.get("AMM_DATA_DIR", REPO.parent / "shared" / "data"))
    assert (root / "mnist" / "MNIST" / "raw").is_dir(), (
        f"real MNIST not found under data root '{root}' (set AMM_DATA_DIR)"
    )
    return root
