"""File-system checks and errors as one line: bad paths are input errors (exit 2), a disk that
is full, read-only or not ours is an environment failure (exit 3, `EnvironmentFailure`); and
the one atomic write every module uses (`write_atomic`)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path
from typing import Any

from amm_core.errors import ConfigError, EnvironmentFailure

# errors of the machine, not of the input: the same command works elsewhere or later
ENV_ERRNOS = {
    errno.ENOSPC,
    errno.EDQUOT,
    errno.EFBIG,
    errno.EROFS,
    errno.EACCES,
    errno.EPERM,
    errno.EIO,
}


def describe_os_error(e: OSError) -> str:
    """'<path>: <reason>' for an OSError (the reason without Python's [Errno N])."""
    where = e.filename if e.filename is not None else "file system"
    return f"{where}: {e.strerror or e}"


def check_out_dir(path: Path, what: str) -> Path:
    """Make sure `path` is (or can become) a folder we can write in, before any work starts.

    A file in the way -> ConfigError (exit 2); not writable or no space -> EnvironmentFailure.
    """
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                kind = "is a file" if p == path else f"is below the file '{p}'"
                raise ConfigError(f"{what} '{path}' {kind}; give a folder")
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".amm-write-test-{uuid.uuid4().hex[:8]}"
        with open(probe, "w") as f:
            f.write("x")
            f.flush()
            os.fsync(f.fileno())
        probe.unlink()
    except OSError as e:
        raise EnvironmentFailure(f"{what} '{path}' is not writable: {e.strerror or e}") from None
    return path


def json_lines(path: Path) -> list[Any]:
    """The values of a JSON-lines file ([] if there is none), without the lines that do not
    parse: a process killed mid-write leaves a partial last line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def read_text_file(path: Path, what: str) -> str:
    """A YAML/JSON input file's text; ConfigError (exit 2) naming it when it is not UTF-8 text."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{what} '{path}' is not a text file (byte {e.start} is not UTF-8); give a YAML file"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} '{path}' is a folder; give a YAML file") from None


def fsync_dir(d: Path) -> None:
    """Make a rename in folder `d` durable (best effort: some filesystems cannot)."""
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: str | bytes | memoryview, *, durable: bool = False) -> None:
    """Write `data` so that readers see the old file or the new one, never a part: a temporary
    file in the same folder, then os.replace. `durable`: fsync the file and the folder too (a
    checkpoint must survive a crash of the machine). An OSError names `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, quota, read-only: name the file being written
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)
