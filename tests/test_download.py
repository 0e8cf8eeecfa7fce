"""Fetching MNIST when it is missing, against a real HTTP mirror on 127.0.0.1 (no internet here):
the mirror serves the official .gz files from the data root; torchvision's MD5 sums are checked."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from helpers import free_port

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@contextlib.contextmanager
def mirror(folder: Path) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving `folder`; yields its URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def amm(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "amm_cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


def test_data_get_downloads_verifies_and_is_then_a_no_op(data_root, tmp_path):
    """The files and the evaluation classifier (trained once here, so that the first sweep's
    trials do not each train it); a second call does nothing and says where both are."""
    import torchvision.datasets as tvd

    from amm_core.data.download import _md5

    root, cache = tmp_path / "data", tmp_path / "cache"
    with mirror(data_root / "mnist" / "MNIST" / "raw") as url:
        env = {"AMM_DATA_MIRROR": url, "AMM_CACHE_DIR": str(cache)}
        r = amm("data", "get", "mnist", "--data-dir", str(root), env=env)
        assert r.returncode == 0, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 2 and "downloading 4 files" in lines[0] and url in lines[0], lines
        assert "training the evaluation classifier of mnist once" in lines[1], lines
        folder = root / "mnist" / "MNIST" / "raw"
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES)  # no .part left
        for name, md5 in tvd.MNIST.resources:
            assert _md5(folder / name) == md5
        (cached,) = cache.glob("classifier-mnist-*.pt")
        again = amm("data", "get", "--data-dir", str(root), env=env)
        assert again.returncode == 0 and again.stderr == "", again.stderr
        assert str(folder) in again.stdout and str(cached) in again.stdout


def test_train_download_uses_the_same_fetch(data_root, tmp_path, monkeypatch):
    from amm_core.config import DataConfig
    from amm_core.data.splits import load_splits

    with mirror(data_root / "mnist" / "MNIST" / "raw") as url:
        monkeypatch.setenv("AMM_DATA_MIRROR", url)
        s = load_splits(DataConfig(dataset="mnist", download=True), tmp_path, seed=0)
    assert len(s.train_x) + len(s.val_x) == 60000 and len(s.test_y) == 10000


def test_corrupt_mirror_file_is_rejected_and_not_kept(data_root, tmp_path):
    served = tmp_path / "mirror"
    served.mkdir()
    for f in FILES:
        shutil.copy(data_root / "mnist" / "MNIST" / "raw" / f, served / f)
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    root = tmp_path / "data"
    with mirror(served) as url:
        r = amm("data", "get", "--data-dir", str(root), env={"AMM_DATA_MIRROR": url})
    assert r.returncode == 2
    assert "MD5 checksum mismatch" in r.stderr and "t10k-labels-idx1-ubyte.gz" in r.stderr
    folder = root / "mnist" / "MNIST" / "raw"
    assert not (folder / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(folder.glob("*.part"))


def test_offline_gives_one_message_naming_files_and_folder(tmp_path):
    root = tmp_path / "data"
    url = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    r = amm("data", "get", "--data-dir", str(root), env={"AMM_DATA_MIRROR": url})
    assert r.returncode == 2
    assert r.stderr.count("amm: error:") == 1 and "Traceback" not in r.stderr
    for f in FILES:
        assert f in r.stderr
    assert str(root / "mnist" / "MNIST" / "raw") in r.stderr
    assert not (root / "mnist" / "MNIST" / "raw").exists()  # no empty folder left behind
