"""Presets (`configs/*.yaml`) by path or by name.

In a checkout they are files beside the code; in an installed wheel they are package data
(`amm_presets`, mapped from `configs/`), so `amm train mnist_amm` works from any folder. A path
that exists always wins. `lookup` and `shipped` also serve the sweep specs (`amm_cli`), and
`base_path` reads the `base:` key of a preset and of a sweep spec alike.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from amm_core.errors import ConfigError


def presets_dir() -> Path | None:
    """The installed presets (amm_presets, a data-only namespace package), else the checkout's
    configs/."""
    spec = importlib.util.find_spec("amm_presets")
    where = list(spec.submodule_search_locations or []) if spec else []
    folders = [Path(p) for p in where[:1]] + [Path(__file__).resolve().parent.parent / "configs"]
    return next((p for p in folders if p.is_dir()), None)


def lookup(name: str, folder: Path | None) -> Path | None:
    """folder/name or folder/name.yaml, whichever is a file first; None when neither is."""
    cands = [folder / c for c in (name, f"{name}.yaml")] if folder else []
    return next((p for p in cands if p.is_file()), None)


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


def base_path(owner: Path, base: object, what: str) -> Path:
    """The preset that `base:` in file `owner` names: a path relative to `owner`'s folder, else a
    shipped preset's name (so an installed spec or preset finds its base in the package data);
    a ConfigError naming the key when neither is a file. `what`: the owner's kind, for the
    message ("spec file", "preset file")."""
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"key 'base': expected a preset (a path or a shipped name), got {base!r}")
    path = (owner.parent / base).resolve()
    if path.is_file():
        return path
    folder = presets_dir()
    found = lookup(Path(base).name, folder)
    if found is None:
        raise ConfigError(
            f"key 'base': '{base}' (resolved {path}) does not exist; paths are relative to the "
            f"{what}, or name a shipped preset: {', '.join(shipped(folder)) or 'none found'}"
        )
    return found.resolve()
