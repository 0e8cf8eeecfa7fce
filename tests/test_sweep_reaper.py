"""The reaper of a local Ray (sweeps/driver/reaper.py) with stand-in processes, in a second: a
driver killed with SIGKILL takes the Ray processes of its group with it, and only those (not a
`tee` of its output in the same group); a driver that stopped Ray itself (`release`) leaves the
rest be. The real thing, a sweep driver killed under a local Ray, is
tests/test_sweep_driver_kill.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# a driver leading its group: a Ray-named process and a plain one in its group, then the reaper
DRIVER = """
import subprocess, sys, time
from sweeps.driver import reaper
ray = subprocess.Popen(["bash", "-c", "exec -a ray::StandInAgent sleep 60"])
plain = subprocess.Popen(["sleep", "60"])
reaper.watch()
print(ray.pid, plain.pid, flush=True)
if sys.argv[1] == "release":
    reaper.release()
    print("released", flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("how", ["kill", "release"])
def test_a_killed_driver_takes_its_rays_processes_and_only_those(how):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", DRIVER, how]
    driver = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        ray_pid, plain_pid = map(int, driver.stdout.readline().split())
        if how == "release":
            assert driver.stdout.readline().strip() == "released"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        end = time.time() + (10 if how == "kill" else 2)  # the reaper acts at once
        while alive(ray_pid) and time.time() < end:
            time.sleep(0.1)
        assert alive(ray_pid) == (how == "release")  # a released reaper ends nothing
        assert alive(plain_pid)  # not Ray's
    finally:
        with contextlib.suppress(OSError):
            os.killpg(driver.pid, signal.SIGKILL)
