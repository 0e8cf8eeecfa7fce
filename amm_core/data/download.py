"""Fetching datasets into the data root (`ensure`, for data.download): MNIST / Fashion-MNIST
file by file with checksums verified (`fetch`, also `amm data get`), SVHN through torchvision.

The file names, mirrors and MD5 sums are torchvision's (`torchvision.datasets.MNIST.resources`,
`.mirrors`); `$AMM_DATA_MIRROR` (or `mirror=`) puts another mirror first, e.g. a local copy
served over HTTP. Files are written as `<name>.part` and renamed only after their MD5 matched,
so an interrupted or corrupted download never looks like data. Offline, one `DataError` names
the files and the folder to put them in.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from amm_core import settings
from amm_core.data.datasets import IDX_DIRS, idx_dir, svhn_paths
from amm_core.errors import DataError


def ensure(dataset: str, root: Path, svhn_extra: bool = False) -> None:
    """Fetch the files of `dataset` that `datasets.load_arrays` would miss; nothing when they
    are there. DataError when a download fails (offline)."""
    root = Path(root)
    if dataset in IDX_DIRS:
        if idx_dir(root, dataset) is None:
            fetch(dataset, root)
    elif dataset == "svhn":
        missing = [s for s, p in svhn_paths(root, svhn_extra).items() if not p.is_file()]
        if missing:
            _svhn(root, missing)


def _svhn(root: Path, splits: list[str]) -> None:
    """SVHN's .mat files through torchvision into <root>/svhn (no MD5 list of our own)."""
    from urllib.error import URLError

    import torchvision.datasets as tvd

    target = root / "svhn"
    created = [p for p in (root, target) if not p.exists()]
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(settings.download_timeout_s())  # torchvision's urlopen: no timeout
    try:
        for s in splits:
            tvd.SVHN(root=str(target), split=s, download=True)
    except (URLError, OSError, RuntimeError, ValueError) as e:
        if created:  # leave no empty folders behind
            _remove_empty_tree(created[0])
        raise DataError(
            f"downloading dataset 'svhn' into '{target}' failed ({type(e).__name__}: {e}). "
            f"Without network, copy the files into '{target}' by hand and run without --download."
        ) from None
    finally:
        socket.setdefaulttimeout(old)


def _remove_empty_tree(p: Path) -> None:
    """Remove p and the folders under it, deepest first, as far as they are empty."""
    dirs = [c for c in p.rglob("*") if c.is_dir()] if p.is_dir() else []
    for d in sorted(dirs, key=lambda c: len(c.parts), reverse=True) + [p]:
        with contextlib.suppress(OSError):
            d.rmdir()


def resources(dataset: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(mirrors, [(file name, md5)]) of a dataset, from torchvision."""
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST}[dataset]
    return list(cls.mirrors), [(f, md5) for f, md5 in cls.resources]


def _md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch(url: str, dest: Path, md5: str) -> None:
    """url -> dest (via dest.part), or an OSError / ValueError saying what went wrong."""
    part, timeout = dest.with_name(dest.name + ".part"), settings.download_timeout_s()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        got = _md5(part)
        if got != md5:
            raise ValueError(f"MD5 checksum mismatch for {url}: got {got}, expected {md5}")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def fetch(dataset: str, root: Path, mirror: str | None = None, quiet: bool = False) -> Path:
    """Download the dataset's missing files into its torchvision folder under root -> the folder.

    Prints one line when it downloads (none when every file is there already).
    """
    if dataset not in IDX_DIRS:
        raise DataError(
            f"dataset {dataset!r} cannot be downloaded here; allowed: {', '.join(IDX_DIRS)}"
        )
    mirrors, files = resources(dataset)
    mirror = mirror or settings.data_mirror()
    if mirror:
        mirrors = [mirror.rstrip("/") + "/"]
    folder = Path(root) / IDX_DIRS[dataset][0]  # torchvision's layout
    missing = [(f, md5) for f, md5 in files if not (folder / f).is_file()]
    if not missing:
        return folder
    if not quiet:
        print(
            f"amm: {dataset} not found under {Path(root)}: downloading {len(missing)} files "
            f"from {mirrors[0]} into {folder} (MD5 checksums verified)",
            file=sys.stderr,
            flush=True,
        )
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    folder.mkdir(parents=True, exist_ok=True)
    for name, md5 in missing:
        errors = []
        for m in mirrors:
            try:
                _fetch(m + name, folder / name, md5)
                break
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{m}{name}: {getattr(e, 'reason', e)}")
        else:
            if created:  # leave no empty folders behind
                _remove_empty_tree(created[-1])
            raise DataError(_offline_message(dataset, folder, files, errors))
    return folder


def _offline_message(
    dataset: str, folder: Path, files: list[tuple[str, str]], errors: list[str]
) -> str:
    names = ", ".join(f for f, _ in files)
    return (
        f"downloading dataset '{dataset}' failed ({'; '.join(errors)}).\n"
        f"Without network: put the files {names} (from {resources(dataset)[0][0]}) into\n"
        f"  {folder}\n"
        f"or point $AMM_DATA_DIR (or --data-dir) at a data root that holds "
        f"{IDX_DIRS[dataset][0]}/."
    )
