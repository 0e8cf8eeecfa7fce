"""One live driver per sweep: an exclusive lock file `<storage>/<name>.lock`.

`amm sweep run` and `amm sweep resume` take the lock before they create anything and hold it
until they end. It is taken atomically with `os.link` of a complete temporary file (atomic on
local filesystems and on NFS), so two drivers started a second apart cannot both get it. The
file names its driver (host, pid, start time) and the driver touches it every `HEARTBEAT_S`.

A lock is stale, and is taken over with a message, when its driver is gone: on the same host
its pid is not running (or is another process now); from another host, when its heartbeat is
older than `$AMM_LOCK_STALE_S` seconds (default 300). Object-store storage (`s3://...`) has no
atomic create; there the lock is checked and written best-effort (docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from amm_core import settings
from amm_core.errors import ConfigError
from sweeps.store.folder import SweepFolder

HEARTBEAT_S = 30.0


class SweepLocked(ConfigError):
    """Another live driver holds the sweep (exit 2)."""


def _pid_start(pid: int) -> str | None:
    """The start time of a process in clock ticks since boot (Linux), to spot a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _read(folder: SweepFolder, path: str | None = None) -> dict[str, Any] | None:
    """The lock's (or `path`'s) content; {} when unreadable or damaged; None when there is none."""
    try:
        text = folder.read_text(path or folder.lock_path)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return {}
    if text is None:
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _age_s(folder: SweepFolder, info: dict[str, Any]) -> float:
    """Seconds since the lock's last heartbeat (file mtime, else the time written in it)."""
    if not folder.remote:
        with contextlib.suppress(OSError):
            return time.time() - os.stat(folder.lock_path).st_mtime
    return time.time() - float(info.get("heartbeat", 0))


def is_live(folder: SweepFolder, info: dict[str, Any]) -> bool:
    """Whether the driver that wrote `info` still runs."""
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
        pid = info["pid"]
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # it runs, as another user
        start = _pid_start(pid)
        return not (start and info.get("pid_start") and start != info["pid_start"])
    return _age_s(folder, info) < settings.lock_stale_s()


def describe(info: dict[str, Any]) -> str:
    if not info:
        return "an unreadable lock"
    return (
        f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')} "
        f"(`amm sweep {info.get('command', '?')}`)"
    )


class SweepLock:
    """A held lock; `release()` (or leaving a `with` block) removes it if it is still ours."""

    def __init__(self, folder: SweepFolder, info: dict[str, Any]) -> None:
        self.folder, self.path, self.info = folder, folder.lock_path, info
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="amm-lock")
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a missed beat; the next one may succeed
                if self.folder.remote:
                    self.folder.write_text(
                        self.path, json.dumps({**self.info, "heartbeat": time.time()})
                    )
                else:
                    os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        current = _read(self.folder)
        if current and current.get("token") == self.info["token"]:
            self.folder.delete(self.path)

    def __enter__(self) -> SweepLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create_local(path: str, info: dict[str, Any]) -> bool:
    """Create the lock with the complete content in one atomic step; False if it exists."""
    tmp = f"{path}.{info['token']}.tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(info, indent=1))
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _take_over(folder: SweepFolder, stale: dict[str, Any]) -> None:
    """Move a stale lock aside; put it back if it turned out to be a newer one."""
    if folder.remote:
        return  # overwritten by the next write
    path = folder.lock_path
    aside = f"{path}.stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    moved = _read(folder, aside) or {}
    if moved.get("token") != stale.get("token"):  # another driver took it over meanwhile
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    os.unlink(aside)


def acquire(folder: SweepFolder, command: str) -> SweepLock:
    """Take the sweep's lock, or SweepLocked naming the live driver that holds it."""
    path, name = folder.lock_path, folder.name
    if not folder.remote:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    info = {
        "sweep": name,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_start": _pid_start(pid),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "heartbeat": time.time(),
        "command": command,
        "token": uuid.uuid4().hex,
    }
    for _ in range(5):
        other = _read(folder)
        if other is None:
            if folder.remote:
                folder.write_text(path, json.dumps(info))
                return SweepLock(folder, info)
            if _create_local(path, info):
                return SweepLock(folder, info)
            continue  # another driver created it just now: judge that one
        if is_live(folder, other):
            raise SweepLocked(
                f"sweep '{name}' is in use by a live driver: {describe(other)}; wait for it "
                f"to end or stop it (lock file {path})"
            )
        print(
            f"amm: taking over the stale lock of sweep '{name}' ({describe(other)}, "
            f"no longer running)",
            file=sys.stderr,
        )
        _take_over(folder, other)
    raise SweepLocked(f"sweep '{name}': could not take its lock {path} (contended); try again")


def holder(folder: SweepFolder) -> dict[str, Any] | None:
    """The live driver's lock content, or None when no live driver holds the sweep."""
    info = _read(folder)
    return info if info is not None and is_live(folder, info) else None
