"""Dataset files: MNIST / Fashion-MNIST IDX files, SVHN .mat files.

Where files are looked for, under the data root (`cfg.data.data_dir`, `$AMM_DATA_DIR`, ...):
  mnist          <root>/mnist/MNIST/raw/, <root>/MNIST/raw/            (torchvision's layout)
  fashion_mnist  <root>/fashion_mnist/FashionMNIST/raw/, <root>/FashionMNIST/raw/
  svhn           <root>/svhn/{train,test,extra}_32x32.mat
Nothing is written under the root unless data.download is true.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from amm_core.errors import DataError

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_DIRS = {
    "mnist": ("mnist/MNIST/raw", "MNIST/raw"),
    "fashion_mnist": ("fashion_mnist/FashionMNIST/raw", "FashionMNIST/raw"),
}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """One IDX file (gzipped or not; told apart by content): uint8 array with `ndim` dims."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as e:
        raise DataError(f"IDX file '{path}' could not be read: {e}") from None
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"IDX file '{path}' is truncated ({len(raw)} bytes, header incomplete)")
    zero, dtype_code, nd = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or nd != ndim:
        magic = int.from_bytes(raw[:4], "big")
        raise DataError(
            f"IDX file '{path}': bad magic number {magic} (expected {0x800 + ndim}: "
            f"uint8 with {ndim} dimensions)"
        )
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise DataError(
            f"IDX file '{path}': header says {'x'.join(map(str, dims))} = {int(np.prod(dims))} "
            f"bytes of data, file holds {len(raw) - start}"
        )
    # copy: frombuffer over bytes is read-only, torch.from_numpy wants a writable array
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims).copy()


def _find(path: Path) -> Path | None:
    for p in (path, path.with_name(path.name + ".gz")):
        if p.is_file():
            return p
    return None


def idx_dir(root: Path, dataset: str) -> Path | None:
    for rel in IDX_DIRS[dataset]:
        d = root / rel
        if all(_find(d / f) for f in IDX_FILES.values()):
            return d
    return None


def load_idx_dataset(d: Path) -> dict[str, np.ndarray]:
    """The four MNIST-format files of folder d -> train_x, train_y, test_x, test_y arrays."""
    out = {}
    for key, name in IDX_FILES.items():
        path = _find(d / name)
        if path is None:
            raise DataError(f"IDX file '{d / name}[.gz]' not found")
        a = read_idx(path, 3 if key.endswith("_x") else 1)
        out[key] = a[:, None] if key.endswith("_x") else a.astype(np.int64)
    for split in ("train", "test"):
        nx, ny = len(out[f"{split}_x"]), len(out[f"{split}_y"])
        if nx != ny:
            raise DataError(f"'{d}': {split} has {nx} images but {ny} labels")
        if ny and out[f"{split}_y"].max() > 9:
            raise DataError(f"'{d}': {split} labels must be 0..9, found {out[f'{split}_y'].max()}")
    return out


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN {train,test,extra}_32x32.mat -> (N x 3 x 32 x 32 uint8, N int64 labels, 10 -> 0)."""
    import scipy.io

    try:
        m = scipy.io.loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:  # scipy raises ValueError/TypeError/OSError/MatReadError
        raise DataError(f"SVHN file '{path}' could not be read: {e}") from None
    X, y = m.get("X"), m.get("y")
    if X is None or y is None:
        raise DataError(f"SVHN file '{path}': expected variables X and y, found {sorted(m)}")
    if X.ndim != 4 or X.shape[:3] != (32, 32, 3) or X.dtype != np.uint8:
        raise DataError(
            f"SVHN file '{path}': X is {X.dtype} {X.shape}, expected uint8 (32, 32, 3, N)"
        )
    y = np.asarray(y).reshape(-1).astype(np.int64)
    if y.shape[0] != X.shape[3]:
        raise DataError(f"SVHN file '{path}': {X.shape[3]} images but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DataError(f"SVHN file '{path}': labels must be 1..10 (10 = digit 0)")
    y[y == 10] = 0
    x = np.ascontiguousarray(X.transpose(3, 2, 0, 1))  # H W C N -> N C H W
    return x, y


def _missing_error(dataset: str, root: Path, looked: list[Path], what: str) -> DataError:
    where = "\n  ".join(str(p) for p in looked)
    target = looked[0].parent if dataset == "svhn" else looked[0]
    return DataError(
        f"dataset '{dataset}' not found under data root '{root}'. Looked for {what} in:\n  "
        f"{where}\nTo get it: rerun with --download (data.download=true; needs network, "
        f"torchvision fetches it into '{root / dataset}'), or copy the files into "
        f"'{target}'. The root comes from --data-dir, data.data_dir or $AMM_DATA_DIR."
    )


def svhn_paths(root: Path, extra: bool = False) -> dict[str, Path]:
    return {s: root / "svhn" / f"{s}_32x32.mat" for s in ("train", "test", "extra")[: 2 + extra]}


def load_arrays(dataset: str, root: Path, svhn_extra: bool = False):
    """dataset -> dict(train_x, train_y, test_x, test_y) numpy arrays (official train/test).
    Reads only: `download.ensure` fetches missing files first when data.download is true."""
    root = Path(root)
    if dataset in IDX_DIRS:
        d = idx_dir(root, dataset)
        if d is None:
            looked = [root / rel for rel in IDX_DIRS[dataset]]
            what = ", ".join(f"{f}[.gz]" for f in IDX_FILES.values())
            raise _missing_error(dataset, root, looked, what)
        return load_idx_dataset(d)
    if dataset == "svhn":
        paths = svhn_paths(root, svhn_extra)
        missing = tuple(s for s, p in paths.items() if not p.is_file())
        if missing:
            looked = [paths[s] for s in missing]
            raise _missing_error("svhn", root, looked, "the SVHN .mat files")
        out = {}
        for s in ("train", "test"):
            out[f"{s}_x"], out[f"{s}_y"] = read_svhn_mat(paths[s])
        if svhn_extra:
            ex, ey = read_svhn_mat(paths["extra"])
            out["train_x"] = np.concatenate([out["train_x"], ex])
            out["train_y"] = np.concatenate([out["train_y"], ey])
        return out
    raise DataError(
        f"key 'data.dataset': {dataset!r} is not allowed; allowed: mnist, fashion_mnist, svhn"
    )
