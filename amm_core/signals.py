"""The one way amm stops on SIGINT / SIGTERM: the first signal asks for a graceful stop, a
second one interrupts at once (KeyboardInterrupt). `amm train` polls it between steps (the run
saves a checkpoint and ends); the sweep driver (`sweeps.driver.stopping`) adds its phases on top."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _never(name: str) -> bool:
    return False


class StopOnSignal:
    """While inside, SIGINT and SIGTERM are handled here: the first sets `name` (the signal's
    name, e.g. SIGTERM: truthy from then on) and calls `first(name)`; the next raises
    KeyboardInterrupt. A signal `hold(name)` keeps (e.g. during a clean-up) neither counts nor
    interrupts. The old handlers come back on exit. Handlers can be set from the main thread
    only: elsewhere signals act as before."""

    def __init__(self, first: Callable[[str], None], hold: Callable[[str], bool] = _never) -> None:
        self.first, self.hold = first, hold
        self.name = ""
        self.saved: dict[int, object] = {}

    def __bool__(self) -> bool:
        return bool(self.name)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            self.saved = {s: signal.getsignal(s) for s in SIGNALS}
            self.rearm()
        return self

    def rearm(self) -> None:
        """Install the handlers again (a library may have put its own in place meanwhile)."""
        if self.saved:
            for s in SIGNALS:
                signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if self.hold(name):
            return
        if self.name:
            raise KeyboardInterrupt
        self.name = name
        self.first(name)

    def __exit__(self, *exc) -> None:
        for s, handler in self.saved.items():
            signal.signal(s, handler)
        self.saved = {}
