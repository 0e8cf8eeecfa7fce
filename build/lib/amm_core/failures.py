"""Environment failures as one line and a documented exit code (see docs/reliability.md)."""

from __future__ import annotations

import sys

from amm_core.errors import EnvironmentFailure, TrackingOutage
from amm_core.fs import ENV_ERRNOS, describe_os_error

EXIT_ENVIRONMENT = 3
EXIT_TRACKING_OUTAGE = 4


def exit_code_for(e: BaseException) -> int | None:
    """Print one line for an environment failure and return its exit code; None otherwise."""
    if isinstance(e, TrackingOutage):
        print(f"amm: tracking outage: {e}", file=sys.stderr)
        return EXIT_TRACKING_OUTAGE
    if isinstance(e, EnvironmentFailure):
        print(f"amm: environment failure: {e}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    if isinstance(e, OSError) and e.errno in ENV_ERRNOS:
        print(f"amm: environment failure: {describe_os_error(e)}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    return None
