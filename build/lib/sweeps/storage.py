"""The sweep folder, `<storage>/<name>/`, on a local path or a pyarrow URI (s3://, gs://, ...).

It holds Ray Tune's experiment (tuner.pkl, trial folders, checkpoints), `amm_sweep.json` (the
spec, the tracking URI, the MLflow parent run) and `amm_runs.json` (trial id -> MLflow run id).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from amm_core import names, settings
from amm_core.errors import ConfigError
from amm_core.fs import check_out_dir, write_atomic

META_FILE = names.SWEEP_FILE
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


def check_storage(storage: str) -> None:
    """A local storage folder must be a writable folder (or creatable): one line if not."""
    if "://" not in storage:
        check_out_dir(Path(storage), "--storage")


def resolve_storage(storage: str | None) -> str:
    s = storage or settings.sweep_storage()
    return s if "://" in s else str(Path(s).expanduser().resolve())


def join(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}" if "://" in storage else str(Path(storage) / name)


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def read_text(path: str) -> str | None:
    """The file's text; None when it does not exist (or a remote store cannot read it)."""
    if "://" not in path:
        p = Path(path)
        return p.read_text() if p.is_file() else None
    fs, p = _fs(path)
    try:
        with fs.open_input_stream(p) as f:
            return f.read().decode()
    except (FileNotFoundError, OSError):
        return None


def write_text(path: str, text: str) -> None:
    """Write a whole file; a local one atomically (a temporary file, then rename)."""
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(path), text)
        return
    fs, p = _fs(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as f:
        f.write(text.encode())


def delete(path: str) -> None:
    if "://" not in path:
        Path(path).unlink(missing_ok=True)
        return
    fs, p = _fs(path)
    fs.delete_file(p)


def exists(path: str) -> bool:
    if "://" not in path:
        return Path(path).exists()
    import pyarrow.fs

    fs, p = _fs(path)
    return fs.get_file_info(p).type != pyarrow.fs.FileType.NotFound


def forget(sweep_dir: str) -> None:
    """Remove a sweep folder whose Tuner never started (only what `run` wrote there)."""
    if "://" not in sweep_dir:
        shutil.rmtree(sweep_dir, ignore_errors=True)


def load_meta(name: str, storage: str | None = None) -> tuple[str, dict[str, Any]]:
    """(sweep folder, its amm_sweep.json) or a ConfigError naming the sweeps that exist."""
    storage = resolve_storage(storage)
    sweep_dir = join(storage, name)
    text = read_text(join(sweep_dir, META_FILE))
    if text is None:
        known = ""
        if "://" not in storage and Path(storage).is_dir():
            found = sorted(p.parent.name for p in Path(storage).glob(f"*/{META_FILE}"))
            known = f"; sweeps there: {', '.join(found[-10:]) or 'none'}"
        raise ConfigError(
            f"no sweep named '{name}' under {storage}{known} (pass --storage if it lives elsewhere)"
        )
    return sweep_dir, json.loads(text)
