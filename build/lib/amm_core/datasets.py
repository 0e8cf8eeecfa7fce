"""Dataset files (spec section 6): MNIST / Fashion-MNIST IDX files, SVHN .mat files.

Where files are looked for, under the data root (`amm_core.locations.resolve_data_root`):
  mnist          <root>/mnist/MNIST/raw/, <root>/MNIST/raw/            (torchvision's layout)
  fashion_mnist  <root>/fashion_mnist/FashionMNIST/raw/, <root>/FashionMNIST/raw/
  svhn           <root>/svhn/{train,test,extra}_32x32.mat
Nothing is written under the root unless data.download is true.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
from pathlib import Path

import numpy as np

from amm_core.errors import DataError
from amm_core.settings import download_timeout_s

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
TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "svhn": "SVHN"}


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


def _idx_dir(root: Path, dataset: str) -> Path | None:
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


def _download(dataset: str, root: Path, where: Path, splits: tuple[str, ...] = ()) -> None:
    """Fetch through torchvision into <root>/<dataset>; DataError when it fails (offline)."""
    if dataset in IDX_DIRS:  # file by file, MD5 checked, $AMM_DATA_MIRROR honoured
        from amm_core.download import fetch

        fetch(dataset, root)
        return
    from urllib.error import URLError

    import torchvision.datasets as tvd

    target = root / dataset
    created = [p for p in (root, target) if not p.exists()]
    cls = getattr(tvd, TORCHVISION[dataset])
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(download_timeout_s())  # torchvision's urlopen has no timeout
    try:
        if dataset == "svhn":
            for s in splits:
                cls(root=str(target), split=s, download=True)
        else:
            cls(root=str(target), train=True, download=True)
    except (URLError, OSError, RuntimeError, ValueError) as e:
        for p in reversed(created):  # leave no empty folders behind
            _remove_empty_tree(p)
        raise DataError(
            f"downloading dataset '{dataset}' into '{target}' failed ({type(e).__name__}: {e}). "
            f"Without network, copy the files into '{where}' by hand and run without --download."
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _remove_empty_tree(p: Path) -> None:
    """Remove p and the folders under it, deepest first, as far as they are empty."""
    dirs = [c for c in p.rglob("*") if c.is_dir()] if p.is_dir() else []
    for d in sorted(dirs, key=lambda c: len(c.parts), reverse=True) + [p]:
        with contextlib.suppress(OSError):
            d.rmdir()


def load_arrays(dataset: str, root: Path, download: bool = False, svhn_extra: bool = False):
    """dataset -> dict(train_x, train_y, test_x, test_y) numpy arrays (official train/test)."""
    root = Path(root)
    if dataset in IDX_DIRS:
        d = _idx_dir(root, dataset)
        if d is None and download:
            _download(dataset, root, root / IDX_DIRS[dataset][0])
            d = _idx_dir(root, dataset)
        if d is None:
            looked = [root / rel for rel in IDX_DIRS[dataset]]
            what = ", ".join(f"{f}[.gz]" for f in IDX_FILES.values())
            raise _missing_error(dataset, root, looked, what)
        return load_idx_dataset(d)
    if dataset == "svhn":
        names = ("train", "test") + (("extra",) if svhn_extra else ())
        paths = {s: root / "svhn" / f"{s}_32x32.mat" for s in names}
        missing = tuple(s for s, p in paths.items() if not p.is_file())
        if missing and download:
            _download("svhn", root, root / "svhn", missing)
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
