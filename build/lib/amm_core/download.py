"""Fetching MNIST / Fashion-MNIST into the data root, checksums verified.

The file names, mirrors and MD5 sums are torchvision's (`torchvision.datasets.MNIST.resources`,
`.mirrors`); `$AMM_DATA_MIRROR` (or `mirror=`) puts another mirror first, e.g. a local copy
served over HTTP. Files are written as `<name>.part` and renamed only after their MD5 matched,
so an interrupted or corrupted download never looks like data. Offline, one `DataError` names
the files and the folder to put them in.
"""

from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
from pathlib import Path

from amm_core import settings
from amm_core.datasets import IDX_DIRS, TORCHVISION
from amm_core.errors import DataError


def resources(dataset: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(mirrors, [(file name, md5)]) of a dataset, from torchvision."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, TORCHVISION[dataset])
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
            for p in created:  # leave no empty folders behind
                with contextlib.suppress(OSError):
                    p.rmdir()
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
