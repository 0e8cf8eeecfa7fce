"""Full training state on disk: `<root>/step_NNNNNNN/state.pt`, written atomically.

A checkpoint folder is built under a temporary name (`.tmp-step_NNNNNNN-...`) and renamed into
place once `state.pt` is complete and fsynced, so a folder named step_* always holds a complete
file. States are loaded with `torch.load(weights_only=True)`: they may hold only tensors, dicts,
lists, tuples, str, int, float, bool and None (checked before writing).
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from amm_core import loader
from amm_core.config import Config, config_from_dict
from amm_core.errors import CheckpointError
from amm_core.fs import fsync_dir, write_atomic
from amm_core.names import STATE_FILE, checkpoint_dirname, checkpoint_step

_ATOMIC = (str, int, float, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)


def step_dir(root: Path, step: int) -> Path:
    """root / step_NNNNNNN (7 digits, sorts by name)."""
    return Path(root) / checkpoint_dirname(step)


def check_state(obj: Any, where: str = "state") -> None:
    """TypeError naming the key of the first value weights_only loading would reject."""
    if isinstance(obj, _ATOMIC):
        return
    if isinstance(obj, dict | OrderedDict):
        for k, v in obj.items():
            if not isinstance(k, str | int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, use str or int")
            check_state(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            check_state(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__name__}; a checkpoint may hold only "
        f"tensors, dicts, lists, tuples, str, int, float, bool and None (convert it, e.g. "
        f"numpy -> torch.from_numpy)"
    )


def save_checkpoint(directory: Path, state: dict) -> Path:
    """Write `state` to directory/state.pt atomically; returns the file's path.

    A new folder appears only once complete (built as a hidden temp folder, then renamed).
    An existing folder gets its state.pt replaced atomically.
    """
    check_state(state)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # serialise first: torch's writer turns a full disk into a RuntimeError
    torch.save(state, buf)
    if directory.is_dir():
        write_atomic(directory / STATE_FILE, buf.getbuffer(), durable=True)
        return directory / STATE_FILE
    tmp_dir = directory.parent / f".tmp-{directory.name}-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir()
    try:
        write_atomic(tmp_dir / STATE_FILE, buf.getbuffer(), durable=True)
        os.rename(tmp_dir, directory)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    fsync_dir(directory.parent)
    return directory / STATE_FILE


def load_checkpoint(directory_or_file: Path | str) -> dict:
    """A checkpoint folder (or its state.pt) -> the state dict, tensors on the CPU.

    CheckpointError naming the path when it is missing, corrupt or not a checkpoint.
    """
    p = Path(directory_or_file)
    f = p / STATE_FILE if p.is_dir() else p
    if not f.is_file():
        raise CheckpointError(
            f"checkpoint '{p}' not found (expected a folder holding {STATE_FILE})"
        )
    try:
        with warnings.catch_warnings():  # torch's warnings about the file: the error says it
            warnings.simplefilter("ignore")
            state = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle / zip / EOF errors differ by how the file is damaged
        raise CheckpointError(_load_problem(f, e)) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint '{f}' holds a {type(state).__name__}, not a state dict")
    return state


def checkpoint_config(state: dict) -> Config:
    """The config a checkpoint's run trained with. Read as stored: a key an older amm wrote and
    this version retired is dropped with a note, not an error as in a user's file."""
    with loader.stored():
        return config_from_dict(json.loads(state["config"]))


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")


def _load_problem(f: Path, e: Exception) -> str:
    """One line for a state.pt torch.load(weights_only=True) refused. Never torch's own text:
    it is many lines and advises loading with weights_only=False, which would run the code a
    malicious file holds."""
    text = str(e)
    found = _GLOBAL_RE.search(text)
    if found:
        return (
            f"checkpoint '{f}' refused: loading it would import {found.group(1)}, and a "
            f"checkpoint holds only tensors and plain values; it was not loaded (delete it, or "
            f"use one this project wrote)"
        )
    if isinstance(e, EOFError) or "zip archive" in text or "central directory" in text:
        why = "it is truncated or damaged"
    elif "Unsupported operand" in text or "invalid load key" in text:
        why = "it is not a torch file"
    else:
        why = f"{type(e).__name__}: {(text.splitlines() or [''])[0][:200]}"
    return f"checkpoint '{f}' is corrupt or not a checkpoint ({why})"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of complete checkpoints under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for d in root.iterdir():
        step = checkpoint_step(d.name)
        if step is not None and (d / STATE_FILE).is_file():
            out.append((step, d))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    """The step_* folder with the highest step that holds a state.pt; None if there is none."""
    cps = list_checkpoints(root)
    return cps[-1][1] if cps else None


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints and leftover temp folders."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    root = Path(root)
    removed = [d for _, d in list_checkpoints(root)[:-keep]]
    if root.is_dir():
        removed += [d for d in root.iterdir() if d.is_dir() and d.name.startswith(".tmp-step_")]
    for d in removed:
        shutil.rmtree(d, ignore_errors=True)
    return removed


def rng_state() -> dict[str, Any]:
    """torch CPU (+ every CUDA device), python `random` and numpy global RNG states."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": list(mt), "gauss_next": gauss},
        "numpy": {
            "key": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured. CUDA states apply when the device count matches."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    if "numpy" in state:
        n = state["numpy"]
        key = n["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, n["pos"], n["has_gauss"], n["cached_gaussian"]))
