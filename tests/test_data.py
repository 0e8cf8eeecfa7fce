"""Data: IDX / SVHN readers on real and self-written files, clear errors, seeded splits, sampler."""

import gzip
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from helpers import write_svhn

from amm_core.config import DataConfig
from amm_core.data import splits as data
from amm_core.data.datasets import load_arrays, read_idx, read_svhn_mat
from amm_core.data.splits import EpochSampler, derive_seed, load_splits, to_float
from amm_core.errors import DataError
from amm_core.run.checkpoint import load_checkpoint, save_checkpoint
from sweeps.store.locations import resolve_data_root

RAW = "mnist/MNIST/raw"


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_arrays("mnist", data_root)


def write_idx(path: Path, a: np.ndarray, compress: bool = False) -> Path:
    a = np.ascontiguousarray(a, dtype=np.uint8)
    blob = bytes([0, 0, 0x08, a.ndim]) + b"".join(d.to_bytes(4, "big") for d in a.shape)
    blob += a.tobytes()
    if compress:
        path, blob = path.with_name(path.name + ".gz"), gzip.compress(blob)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    return path


def fake_idx_dataset(folder: Path, n_train: int = 300, n_test: int = 40, compress=False) -> None:
    """Images that encode their own index (pixel 0 = idx % 256, pixel 1 = idx // 256)."""
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
        y = np.arange(n) % 10
        write_idx(folder / f"{split}-images-idx3-ubyte", x, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y, compress)


def image_ids(x: torch.Tensor) -> set[int]:
    x = x.cpu().long()
    return set((x[:, 0, 0, 0] + 256 * x[:, 0, 0, 1]).tolist())


def test_real_mnist(mnist):
    assert mnist["train_x"].shape == (60000, 1, 28, 28) and mnist["train_x"].dtype == np.uint8
    assert mnist["test_x"].shape == (10000, 1, 28, 28)
    assert len(mnist["train_y"]) == 60000 and len(mnist["test_y"]) == 10000
    assert mnist["train_y"][:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist["test_y"][:5].tolist() == [7, 2, 1, 0, 4]
    assert abs(mnist["train_x"].mean() / 255 - 0.1307) < 1e-4
    assert np.bincount(mnist["test_y"]).tolist()[:3] == [980, 1135, 1032]


def test_uncompressed_idx_reads_the_same(data_root, tmp_path):
    for name, nd in (("t10k-images-idx3-ubyte", 3), ("t10k-labels-idx1-ubyte", 1)):
        gz = data_root / RAW / f"{name}.gz"
        plain = tmp_path / name
        plain.write_bytes(gzip.decompress(gz.read_bytes()))
        assert np.array_equal(read_idx(plain, nd), read_idx(gz, nd))


def test_second_layout_and_uncompressed_dataset(tmp_path):
    fake_idx_dataset(tmp_path / "MNIST" / "raw")  # <root>/MNIST/raw, plain files
    a = load_arrays("mnist", tmp_path)
    assert a["train_x"].shape == (300, 1, 28, 28) and a["test_y"].tolist()[:3] == [0, 1, 2]
    fake_idx_dataset(tmp_path / "fashion" / "FashionMNIST" / "raw", 20, 10, compress=True)
    assert load_arrays("fashion_mnist", tmp_path / "fashion")["train_x"].shape[0] == 20


def test_malformed_idx_files_name_the_file(data_root, tmp_path):
    gz = (data_root / RAW / "t10k-labels-idx1-ubyte.gz").read_bytes()
    cases = {
        "truncated.gz": gz[: len(gz) // 2],  # cut gzip stream
        "garbage": b"this is not an idx file at all",
        "short": b"\x00\x00",
    }
    for name, blob in cases.items():
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataError, match=name):
            read_idx(tmp_path / name, 1)
    # valid header, missing data: header says 10000 labels, only 100 present
    plain = gzip.decompress(gz)
    (tmp_path / "cut").write_bytes(plain[:108])
    with pytest.raises(DataError, match=r"cut.*10000"):
        read_idx(tmp_path / "cut", 1)
    # labels where images are expected (wrong magic)
    (tmp_path / "labels").write_bytes(plain)
    with pytest.raises(DataError, match="magic"):
        read_idx(tmp_path / "labels", 3)


def test_missing_dataset_lists_paths_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataError) as e:
        load_arrays("mnist", root)
    msg = str(e.value)
    assert str(root / "mnist/MNIST/raw") in msg and str(root / "MNIST/raw") in msg
    assert "--download" in msg and "train-images-idx3-ubyte" in msg
    with pytest.raises(DataError, match="svhn"):
        load_arrays("svhn", root)
    assert list(root.iterdir()) == []
    with pytest.raises(DataError, match="fashion_mnist/FashionMNIST/raw"):
        load_arrays("fashion_mnist", tmp_path / "does-not-exist")
    assert not (tmp_path / "does-not-exist").exists()


def test_download_offline_fails_clearly(tmp_path, monkeypatch):
    # Make "offline" deterministic even on a machine with network: every URL goes through a
    # proxy on a closed local port (urllib builds its opener from the environment).
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)
    cfg = DataConfig(dataset="mnist", download=True)
    with pytest.raises(DataError, match=r"(?s)download.*failed.*Without network.*mnist/MNIST/raw"):
        load_splits(cfg, tmp_path, seed=0)
    assert list(tmp_path.iterdir()) == []  # no empty folders left behind


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("AMM_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_root("/a/cli", "/b/cfg") == Path("/a/cli")
    assert resolve_data_root(None, "/b/cfg") == Path("/b/cfg")
    assert resolve_data_root(None, "") == tmp_path / "env"
    monkeypatch.delenv("AMM_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == tmp_path / "data"


def test_derive_seed_is_stable_and_separates_purposes():
    assert derive_seed(0, "val_split") == derive_seed(0, "val_split")
    assert derive_seed(0, "val_split") != derive_seed(1, "val_split")
    assert derive_seed(0, "val_split") != derive_seed(0, "labelled")
    # sha256-based: the same number in every process and Python version (a frozen contract)
    assert derive_seed(0, "val_split") == 9201783194998029019
    assert 0 <= derive_seed(2**40, "x") < 2**63


def test_real_mnist_splits(data_root):
    s = load_splits(DataConfig(val_size=5000), data_root, seed=3)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (55000, 5000, 10000)
    assert s.train_x.dtype == torch.uint8 and s.train_y.dtype == torch.int64
    assert s.n_classes == 10 and s.labelled_idx.numel() == 0
    assert s.train_x.shape[1:] == (1, 28, 28)
    assert abs(float(s.class_freqs.sum()) - 1) < 1e-6 and s.class_freqs[1] > s.class_freqs[5]


def test_splits_are_seeded_disjoint_and_sized(tmp_path):
    fake_idx_dataset(tmp_path / RAW, n_train=300)
    cfg = DataConfig(val_size=50)
    a, b, c = (load_splits(cfg, tmp_path, seed=s) for s in (1, 1, 2))
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert image_ids(a.val_x) != image_ids(c.val_x)
    tr, va = image_ids(a.train_x), image_ids(a.val_x)
    assert len(tr) == 250 and len(va) == 50 and not tr & va and tr | va == set(range(300))
    assert len(a.test_x) == 40
    # labels travel with their images (label = id % 10)
    ids = a.train_x[:, 0, 0, 0].long() + 256 * a.train_x[:, 0, 0, 1].long()
    assert torch.equal(a.train_y, ids % 10)
    sub = load_splits(DataConfig(val_size=50, train_subset=100), tmp_path, seed=1)
    assert torch.equal(sub.train_x, a.train_x[:100]) and torch.equal(sub.val_x, a.val_x)
    with pytest.raises(DataError, match="data.val_size"):
        load_splits(DataConfig(val_size=300), tmp_path, seed=1)


def test_labelled_subset(tmp_path):
    fake_idx_dataset(tmp_path / RAW, n_train=300)
    cfg = DataConfig(val_size=50, labelled=40, stratified=True)
    s = load_splits(cfg, tmp_path, seed=0)
    lab = s.labelled_idx
    assert lab.numel() == 40 and lab.unique().numel() == 40 and int(lab.max()) < len(s.train_x)
    assert torch.bincount(s.train_y[lab], minlength=10).tolist() == [4] * 10
    assert torch.allclose(s.class_freqs, torch.full((10,), 0.1))
    assert torch.equal(lab, load_splits(cfg, tmp_path, seed=0).labelled_idx)
    other = load_splits(DataConfig(val_size=50, labelled=40), tmp_path, seed=5).labelled_idx
    assert other.numel() == 40 and not torch.equal(other, lab)
    with pytest.raises(DataError, match="data.labelled.*250"):
        load_splits(DataConfig(val_size=50, labelled=251), tmp_path, seed=0)
    with pytest.raises(DataError, match="multiple"):
        load_splits(DataConfig(val_size=50, labelled=45, stratified=True), tmp_path, seed=0)


def test_svhn_mat_files(tmp_path):
    X, y = write_svhn(tmp_path / "svhn" / "train_32x32.mat", 60, 0)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", 20, 1)
    x, lab = read_svhn_mat(tmp_path / "svhn" / "train_32x32.mat")
    assert x.shape == (60, 3, 32, 32) and x.dtype == np.uint8
    assert x[7, 2, 5, 9] == X[5, 9, 2, 7]  # N C H W from H W C N
    assert lab[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0] and lab.max() == 9
    s = load_splits(DataConfig(dataset="svhn", val_size=10), tmp_path, seed=0)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (50, 10, 20)
    assert s.train_x.shape[1:] == (3, 32, 32)
    with pytest.raises(DataError, match="extra_32x32.mat"):
        load_splits(DataConfig(dataset="svhn", svhn_extra=True), tmp_path, seed=0)
    write_svhn(tmp_path / "svhn" / "extra_32x32.mat", 30, 2)
    cfg = DataConfig(dataset="svhn", val_size=10, svhn_extra=True)
    assert len(load_splits(cfg, tmp_path, seed=0).train_x) == 80


def test_svhn_malformed_file(tmp_path):
    bad = tmp_path / "svhn" / "train_32x32.mat"
    bad.parent.mkdir()
    bad.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="train_32x32.mat"):
        read_svhn_mat(bad)
    scipy.io.savemat(str(bad), {"X": np.zeros((28, 28, 1, 4), np.uint8), "y": np.ones((4, 1))})
    with pytest.raises(DataError, match=r"train_32x32.mat.*\(32, 32, 3, N\)"):
        read_svhn_mat(bad)


def test_to_float():
    x = torch.tensor([[0, 128, 255]], dtype=torch.uint8)
    f = to_float(x)
    assert f.dtype == torch.float32
    assert f[0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])
    with pytest.raises(TypeError):
        to_float(f)


def test_sampler_epochs_are_permutations():
    s = EpochSampler(103, 10, torch.Generator().manual_seed(0))
    assert s.batches_per_epoch == 10
    e0 = torch.cat([next(s) for _ in range(10)])
    assert s.epoch == 1 and s.position == 0
    e1 = torch.cat([next(s) for _ in range(10)])
    assert e0.unique().numel() == 100 and e1.unique().numel() == 100
    assert not torch.equal(e0, e1)
    with pytest.raises(DataError, match="batch of 20"):
        EpochSampler(10, 20, torch.Generator())


@pytest.mark.parametrize("k", [0, 7, 10, 13])
def test_sampler_resumes_exactly(tmp_path, k):
    straight = EpochSampler(103, 10, data.generator(0, "sampler"))
    expected = [next(straight) for _ in range(35)]
    first = EpochSampler(103, 10, data.generator(0, "sampler"))
    got = [next(first) for _ in range(k)]
    save_checkpoint(tmp_path / "ck", {"sampler": first.state_dict()})
    second = EpochSampler(103, 10, torch.Generator().manual_seed(999))
    second.load_state_dict(load_checkpoint(tmp_path / "ck")["sampler"])
    assert second.epoch + second.position / second.batches_per_epoch == pytest.approx(k / 10)
    got += [next(second) for _ in range(35 - k)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    with pytest.raises(DataError, match="batch size changed"):
        EpochSampler(103, 5, torch.Generator()).load_state_dict(first.state_dict())


def test_labelled_sampler_stays_in_subset():
    idx = torch.tensor([3, 8, 11, 40, 41, 42, 90])
    s = EpochSampler(len(idx), 3, torch.Generator().manual_seed(1), indices=idx)
    seen = torch.cat([next(s) for _ in range(6)])
    assert set(seen.tolist()) <= set(idx.tolist())
    assert next(s).unique().numel() == 3
