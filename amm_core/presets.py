"""Presets (`configs/*.yaml`) by path or by name.

In a checkout they are files beside the code; in an installed wheel they are package data
(`amm_presets`, mapped from `configs/`), so `amm train mnist_amm` works from any folder. A path
that exists always wins. `lookup` and `shipped` also serve the sweep specs (`amm_cli`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(package: str) -> Path | None:
    """The folder of an installed package (amm_presets is a data-only namespace package)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0])
    return p if p.is_dir() else None


def presets_dir() -> Path | None:
    """The installed presets, else the checkout's configs/."""
    checkout = Path(__file__).resolve().parent.parent / "configs"
    return _package_dir("amm_presets") or (checkout if checkout.is_dir() else None)


def lookup(name: str, folder: Path | None) -> Path | None:
    if folder is None:
        return None
    for cand in (name, f"{name}.yaml"):
        p = folder / cand
        if p.is_file():
            return p
    return None


def find_preset(name: str) -> Path:
    """A config path, or a shipped preset's name (`mnist_amm`, `smoke.yaml`)."""
    p = Path(name)
    if p.is_file():
        return p
    return lookup(name, presets_dir()) or lookup(p.name, presets_dir()) or p


def shipped(folder: Path | None) -> list[str]:
    if folder is None:
        return []
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))
