"""The reaper of a local Ray whose driver died without stopping it (`kill -9`, the OOM killer).

Ray's raylet and GCS end with their driver, but the raylet's agents (`ray::DashboardAgent`,
`ray::RuntimeEnvAgent`) see the raylet go and then wait up to a minute or more on the dead GCS
to publish its error before they exit. `watch` starts a small process (this file, run as a
script with the standard library only) in the process group of the Ray that `tuner.ray_init`
started; it blocks on a pipe from the driver. `release` (Ray stopped) writes to the pipe and it
exits; the driver's death closes the pipe, and it ends what is left of that Ray at once: the
processes of its group whose command is Ray's (`ray::...`, or a program under a `ray` folder),
never another member of the group (a `tee` of the driver's output).
"""

from __future__ import annotations

import os
import signal
import sys
import time

_WATCHERS: list = []  # (Popen, write end of its pipe), one per local Ray started here
REAP_S = 10.0  # how long the reaper keeps looking for leftovers after the driver died


def watch() -> None:
    """Watch the local Ray just started, from its process group (call with the driver in it)."""
    import subprocess

    read, write = os.pipe()  # not inherited by the driver's other children
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", __file__, str(os.getpgid(0))],
            stdin=read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        os.close(write)
        return  # no reaper: Ray's agents then leave in their own time
    finally:
        os.close(read)
    _WATCHERS.append((proc, write))


def release() -> None:
    """Ray was stopped: the reapers exit and end nothing."""
    while _WATCHERS:
        proc, write = _WATCHERS.pop()
        try:
            os.write(write, b"x")
        except OSError:
            pass
        os.close(write)
        try:
            proc.wait(timeout=5)
        except Exception:  # noqa: BLE001 - it must not outlive this
            proc.kill()
            proc.wait()


def _is_ray(argv: list[str]) -> bool:
    if not argv:
        return False
    return argv[0].startswith("ray::") or any("/ray/" in a for a in argv[:2])


def _processes() -> list[tuple[int, int, list[str]]]:
    """(pid, process group, argv) of every process this user can see."""
    out = []
    if os.path.isdir("/proc"):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
                out.append((int(name), os.getpgid(int(name)), argv))
            except OSError:
                continue
        return out
    import subprocess

    try:
        text = subprocess.run(
            ["ps", "-A", "-o", "pid=", "-o", "pgid=", "-o", "args="],
            capture_output=True, text=True, timeout=10,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return []
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            out.append((int(parts[0]), int(parts[1]), parts[2].split()))
    return out


def leftovers(group: int) -> list[int]:
    """The pids of Ray's processes in process group `group`, this process aside."""
    me = os.getpid()
    return [pid for pid, pg, argv in _processes() if pg == group and pid != me and _is_ray(argv)]


def main(group: int) -> None:
    # the reaper outlives signals meant for the driver (Ctrl+C, a group SIGTERM, a hang-up):
    # it ends with the driver's pipe
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if os.read(0, 1):
        return  # the driver stopped Ray itself
    end = time.monotonic() + REAP_S
    while True:
        left = leftovers(group)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not left or time.monotonic() > end:
            return
        time.sleep(0.5)


if __name__ == "__main__":
    main(int(sys.argv[1]))
