"""How a sweep driver stops: SIGINT / SIGTERM at any moment of `amm sweep run|resume`, and a
tracking outage past its limit (docs/reliability.md).

`handled()` (around `run` and `resume`) routes both signals here. The first one asks for a
graceful stop and says so on stderr; what happens then depends on the driver's phase:
- setup (before Tune's loop): `check()` raises KeyboardInterrupt at the next safe point, so
  a parent run is never half-created; the runner ends it KILLED and keeps the sweep folder
- tune (`Tuner.fit` runs): the MLflow callback's `on_step_begin` (Tune's own clock) calls
  `poll()`, which interrupts Tune with SIGUSR1: Tune saves its experiment state, trials keep
  their checkpoints, and `fit` returns
- cleanup (runs, lock, summary): the signal is noted and the clean-up finishes
A second signal outside the clean-up raises KeyboardInterrupt at once.

Tune's own SIGINT handler stays off (TUNE_DISABLE_SIGINT_HANDLER): it replaced ours only while
`fit` ran, and a SIGTERM forwarded as SIGUSR1 before Tune had installed its handler for it
killed the driver without clean-up ("User defined signal 1").
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator

from amm_core import settings
from amm_core.signals import StopOnSignal

SETUP, TUNE, CLEANUP = "setup", "tune", "cleanup"
_state: dict = {"phase": SETUP, "stop": "", "sent": False, "handler": None}


def phase(name: str) -> None:
    _state["phase"] = name


def request(reason: str) -> None:
    """Ask for a graceful stop (a signal, or the tracking outage limit)."""
    _state["stop"] = _state["stop"] or reason


def check() -> None:
    """A safe point before Tune runs: a stop asked for ends the setup here."""
    if _state["stop"]:
        phase(CLEANUP)  # what unwinds from here (the lock, the parent run) is not cut short
        raise KeyboardInterrupt


def poll() -> None:
    """Called on Tune's loop: interrupt Tune once when a stop was asked for."""
    if _state["stop"] and not _state["sent"] and _tune_handles_sigusr1():
        _state["sent"] = True
        signal.raise_signal(signal.SIGUSR1)  # Tune's handler: save the state, end the loop


def _tune_handles_sigusr1() -> bool:
    return callable(signal.getsignal(signal.SIGUSR1))


def _hold(name: str) -> bool:
    """A signal during the clean-up is noted and waits: it neither counts nor interrupts."""
    if _state["phase"] == CLEANUP:
        _say(f"amm: {name}: finishing the clean-up first (MLflow runs, the sweep's lock)")
        return True
    return False


def _first(name: str) -> None:
    what = "Ray Tune saves its state" if _state["phase"] == TUNE else "before Ray Tune starts"
    _say(f"amm: {name}: stopping the sweep ({what}); send it again to stop at once")
    request(name)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def rearm() -> None:
    """Install the handlers again: Ray's core worker, started by ray.init, puts its own
    SIGTERM handler in place (it aborts the driver), behind Python's back."""
    if _state["handler"] is not None:
        _state["handler"].rearm()


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM stop the driver gracefully inside (`amm_core.signals.StopOnSignal`,
    with the phases above); the old handlers come back after."""
    handler = StopOnSignal(_first, _hold)
    _state.update(phase=SETUP, stop="", sent=False, handler=handler)
    try:
        with handler, settings.env_set("TUNE_DISABLE_SIGINT_HANDLER", "1"):
            yield
    finally:
        _state.update(phase=SETUP, stop="", sent=False, handler=None)
