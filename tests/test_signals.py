"""The one signal mechanism (amm_core/signals.py) that `amm train` and the sweep driver share:
the first SIGINT / SIGTERM asks for a graceful stop, a second interrupts, a held one waits, and
the old handlers come back."""

from __future__ import annotations

import os
import signal

import pytest

from amm_core.signals import StopOnSignal


def test_first_asks_second_interrupts_held_waits_old_handlers_back():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    said, holding = [], [False]
    with StopOnSignal(said.append, hold=lambda name: holding[0]) as stop:
        assert not stop
        holding[0] = True
        os.kill(os.getpid(), signal.SIGTERM)  # held (a clean-up): not counted
        assert not stop and said == []
        holding[0] = False
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop and stop.name == "SIGTERM" and said == ["SIGTERM"]
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a library puts its own in place
        stop.rearm()
        assert signal.getsignal(signal.SIGTERM) == stop._handle
    assert {s: signal.getsignal(s) for s in before} == before
