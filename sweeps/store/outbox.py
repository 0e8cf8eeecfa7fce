"""MLflow writes that could not be made yet: kept in order, on disk, retried with back-off.

The sweep driver sends every tracking write (start a child run, metrics, tags, status, files)
through an `Outbox`. While the tracking store answers, a write is made at once. When it does
not (server down, network gone, 5xx after MLflow's own retries), the write and every later one
wait in `<sweep folder>/amm_outbox.jsonl`, in order, and training goes on; the outbox retries
after 2, 4, 8, ... 60 s. When the outage lasts longer than `$AMM_TRACKING_OUTAGE_S` (default
900 s) or the outbox holds more than `MAX_ITEMS` writes, `gave_up` turns true and the driver
stops the sweep cleanly (exit 4); `amm sweep resume` sends what is left first. The retries and
the limit run on `tick()`, which the driver calls on every turn of Tune's loop: a new write is
not needed for either.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from amm_core import settings
from amm_core.fs import write_atomic

OUTBOX_FILE = "amm_outbox.jsonl"
MAX_ITEMS = 100_000
MAX_BACKOFF_S = 60.0


class Op(StrEnum):
    """The tracking writes an outbox item can hold (its "op"; the file stores the value)."""

    START = "start"  # create or reattach a trial's child run
    METRICS = "metrics"
    TAG = "tag"
    RUNNING = "running"  # mark the run RUNNING again
    END = "end"
    END_IF_RUNNING = "end_if_running"
    FILES = "files"  # the run's files from its final checkpoint


def give_up_after_s() -> float:
    return settings.tracking_outage_s()


def is_outage(e: BaseException) -> bool:
    """Whether an error means 'the tracking store cannot be reached now' (retry later)."""
    import requests

    if isinstance(e, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(e, ConnectionError | TimeoutError):
        return True
    from mlflow.exceptions import MlflowException

    if isinstance(e, MlflowException):
        msg = str(e)
        return (
            "failed with exception" in msg
            or "Max retries exceeded" in msg
            or e.get_http_status_code() in (502, 503, 504)
        )
    from sqlalchemy.exc import OperationalError  # comes with mlflow

    return isinstance(e, OperationalError)  # SQLite busy, locked or its disk gone


class Outbox:
    """An ordered queue of tracking writes; `execute(item)` makes one write."""

    def __init__(self, path: Path | None, execute: Callable[[dict[str, Any]], None]) -> None:
        self.path, self.execute = path, execute
        self.items: list[dict[str, Any]] = []
        self.down_since: float | None = None
        self.next_try = 0.0
        self.failures = 0
        self.gave_up = False
        self.last_error = ""
        if path is not None and path.is_file():
            self.items = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]

    def send(self, item: dict[str, Any]) -> None:
        self.items.append(item)
        self.flush()

    def tick(self) -> bool:
        """Retry when the back-off has passed, check the limits; True once the driver gives up."""
        if self.items:
            now = time.monotonic()
            if now >= self.next_try:
                self.flush()
            else:
                self._check_limits(now)
        return self.gave_up

    def flush(self, force: bool = False) -> bool:
        """Make the waiting writes in order; True when none is left."""
        if not self.items:
            return True
        now = time.monotonic()
        if not force and now < self.next_try:
            self._check_limits(now)
            self._save()
            return False
        sent = 0
        while sent < len(self.items):
            try:
                self.execute(self.items[sent])
            except Exception as e:
                if is_outage(e):
                    self.items = self.items[sent:]
                    self._down(now, e)
                    self._save()
                    return False
                # the store answered and refused this one write: report it, go on with the rest
                first = (str(e).splitlines() or [type(e).__name__])[0][:300]
                print(
                    f"amm: warning: tracking write {self.items[sent]['op']!r} refused: {first}",
                    file=sys.stderr,
                )
            sent += 1
        self.items = []
        if self.down_since is not None:
            print(
                f"amm: tracking store reachable again after {now - self.down_since:.0f} s; "
                f"{sent} buffered writes sent",
                file=sys.stderr,
            )
        self.down_since, self.failures, self.next_try = None, 0, 0.0
        self._save()
        return True

    def _down(self, now: float, e: BaseException) -> None:
        self.last_error = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        if self.down_since is None:
            self.down_since = now
            print(
                f"amm: tracking store unreachable ({self.last_error}); training goes on, "
                f"writes wait in {self.path or 'memory'}",
                file=sys.stderr,
            )
        self.failures += 1
        self.next_try = now + min(2.0**self.failures, MAX_BACKOFF_S)
        self._check_limits(now)

    def _check_limits(self, now: float) -> None:
        if self.down_since is None:
            return
        if now - self.down_since > give_up_after_s() or len(self.items) > MAX_ITEMS:
            self.gave_up = True

    def _save(self) -> None:
        if self.path is None:
            return
        if not self.items:
            self.path.unlink(missing_ok=True)
            return
        write_atomic(self.path, "".join(json.dumps(i) + "\n" for i in self.items))

    def outage_line(self) -> str:
        down = time.monotonic() - (self.down_since or time.monotonic())
        return (
            f"the tracking store was unreachable for {down:.0f} s ({self.last_error}); "
            f"{len(self.items)} writes wait in {self.path}"
        )
