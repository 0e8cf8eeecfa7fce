"""Datasets (spec section 6): MNIST / Fashion-MNIST IDX files, SVHN .mat files; seeded splits.

Images stay uint8 (N x C x H x W) on the training device; a batch is `x[idx]` with `idx` from an
`EpochSampler`, scaled by `to_float`. No per-image Python work, no DataLoader workers.

Where files are looked for, under the data root (`locations.resolve_data_root`):
  mnist          <root>/mnist/MNIST/raw/, <root>/MNIST/raw/            (torchvision's layout)
  fashion_mnist  <root>/fashion_mnist/FashionMNIST/raw/, <root>/FashionMNIST/raw/
  svhn           <root>/svhn/{train,test,extra}_32x32.mat
Nothing is written under the root unless data.download is true.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amm_core.config import DataConfig
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
N_CLASSES = {"mnist": 10, "fashion_mnist": 10, "svhn": 10}


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 63-bit seed for one use of the run seed: sha256 of "seed:purpose".

    Every RNG of a run derives from cfg.seed this way ("val_split", "labelled", "sampler", ...),
    so adding a new use never shifts the streams of the others. Stable across processes and
    Python versions (unlike hash()).
    """
    h = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator seeded with derive_seed(seed, purpose)."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


# ---------------------------------------------------------------- readers


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


# ---------------------------------------------------------------- finding / downloading


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
        try:
            d.rmdir()
        except OSError:
            pass


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


# ---------------------------------------------------------------- splits


@dataclass
class Splits:
    """uint8 images N x C x H x W and int64 labels, on the device (or CPU)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    labelled_idx: torch.Tensor  # SAMM: indices into train_*; empty for unsupervised AMM
    n_classes: int
    class_freqs: torch.Tensor  # label frequencies (labelled subset if any, else train split)
    dataset: str = ""

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])


def draw_labelled(
    labels: torch.Tensor, n: int, n_classes: int, stratified: bool, g: torch.Generator
) -> torch.Tensor:
    """n indices into `labels`, drawn without replacement; stratified: n / n_classes per class."""
    if n > labels.shape[0]:
        raise DataError(
            f"key 'data.labelled': {n} labelled examples requested, the training split has only "
            f"{labels.shape[0]}"
        )
    if not stratified:
        return torch.randperm(labels.shape[0], generator=g)[:n].sort().values
    if n % n_classes:
        raise DataError(
            f"key 'data.labelled': {n} is not a multiple of the {n_classes} classes, as "
            f"data.stratified=true needs (equal counts per class)"
        )
    per, picks = n // n_classes, []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < per:
            raise DataError(
                f"key 'data.labelled': class {c} has {idx.numel()} training examples, fewer "
                f"than the {per} per class that data.stratified=true needs"
            )
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per]])
    return torch.cat(picks).sort().values


def load_splits(
    data_cfg: DataConfig, root: Path, seed: int, device: torch.device | str = "cpu"
) -> Splits:
    """Train / val / test (+ SAMM labelled subset) for one run.

    val: data_cfg.val_size training examples drawn with generator(seed, "val_split"); the rest,
    in that shuffled order, is the train split (train_subset keeps its first N). The test split
    is the official one. SVHN: the paper uses ALI's splits, which are not published as files;
    this is the same recipe on the official train (+extra) set, an approximation of them.
    labelled: data_cfg.labelled indices into the train split, generator(seed, "labelled").
    """
    a = load_arrays(data_cfg.dataset, Path(root), data_cfg.download, data_cfg.svhn_extra)
    n = a["train_x"].shape[0]
    if data_cfg.val_size >= n:
        raise DataError(
            f"key 'data.val_size': {data_cfg.val_size} must be smaller than the {n} training "
            f"examples of '{data_cfg.dataset}'"
        )
    perm = torch.randperm(n, generator=generator(seed, "val_split"))
    val_idx = perm[: data_cfg.val_size].sort().values
    train_idx = perm[data_cfg.val_size :]
    if data_cfg.train_subset > 0:
        train_idx = train_idx[: data_cfg.train_subset]
    tx, ty = torch.from_numpy(a["train_x"]), torch.from_numpy(a["train_y"])
    n_classes = N_CLASSES[data_cfg.dataset]
    train_y = ty[train_idx]
    if data_cfg.labelled > 0:
        g = generator(seed, "labelled")
        lab = draw_labelled(train_y, data_cfg.labelled, n_classes, data_cfg.stratified, g)
        freq_src = train_y[lab]
    else:
        lab = torch.zeros(0, dtype=torch.int64)
        freq_src = train_y
    freqs = torch.bincount(freq_src, minlength=n_classes).double()
    dev = torch.device(device) if data_cfg.device_resident else torch.device("cpu")
    return Splits(
        train_x=tx[train_idx].to(dev),
        train_y=train_y.to(dev),
        val_x=tx[val_idx].to(dev),
        val_y=ty[val_idx].to(dev),
        test_x=torch.from_numpy(a["test_x"]).to(dev),
        test_y=torch.from_numpy(a["test_y"]).to(dev),
        labelled_idx=lab.to(dev),
        n_classes=n_classes,
        class_freqs=(freqs / freqs.sum()).float(),
        dataset=data_cfg.dataset,
    )


# ---------------------------------------------------------------- batches


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the only preprocessing, spec section 1)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x.dtype}")
    return x.to(torch.float32).div_(255.0)


class EpochSampler:
    """Index batches over range(n) (or over `indices`): a fresh permutation every epoch, the last
    incomplete batch dropped. Endless: `next(sampler)` moves into the next epoch by itself.

    state_dict() holds epoch, position and generator states, so a resumed run draws exactly the
    batches an uninterrupted one would. Give it its own generator (e.g. generator(seed, "sampler")).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        indices: torch.Tensor | None = None,
    ):
        if indices is not None:
            n = int(indices.numel())
        if batch_size < 1 or n < batch_size:
            raise DataError(
                f"a batch of {batch_size} does not fit in {n} examples (batches are drawn "
                f"without repeats); lower the batch size or use more data"
            )
        self.n, self.batch_size, self.generator = int(n), int(batch_size), generator
        self.device = torch.device(device)
        self.indices = None if indices is None else indices.to(self.device)
        self.batches_per_epoch = self.n // self.batch_size
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None
        self._epoch_start_state: torch.Tensor | None = None

    def _draw(self) -> None:
        self._epoch_start_state = self.generator.get_state()
        perm = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
        self._perm = perm.to(self.device)

    def __iter__(self) -> EpochSampler:
        return self

    def __next__(self) -> torch.Tensor:
        if self._perm is None:
            self._draw()
        b = self.batch_size
        idx = self._perm[self.position * b : (self.position + 1) * b]
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        return idx if self.indices is None else self.indices[idx]

    @property
    def epochs_done(self) -> float:
        """Fractional number of epochs consumed."""
        return self.epoch + self.position / self.batches_per_epoch

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "position": self.position,
            "generator": self.generator.get_state(),
            "epoch_start": None if self._perm is None else self._epoch_start_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise DataError(
                f"sampler state is for {state['n']} examples in batches of "
                f"{state['batch_size']}, this run has {self.n} in batches of {self.batch_size} "
                f"(data or batch size changed)"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = None
        if state["epoch_start"] is not None:  # regenerate the current epoch's permutation
            self.generator.set_state(state["epoch_start"])
            self._draw()
        self.generator.set_state(state["generator"])


class LabelledSampler(EpochSampler):
    """EpochSampler over the SAMM labelled subset: yields indices into the train split."""

    def __init__(
        self,
        labelled_idx: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
    ):
        super().__init__(0, batch_size, generator, device, indices=labelled_idx)
