"""amm_cli: the `amm` command.

Run as the program (`amm ...`, `python -m amm_cli.main ...`), a SIGINT or SIGTERM ends it at
once with one line and exit 130 (docs/reliability.md) from its first instant (Python's imports,
argument parsing) until a command that writes as it goes installs its own handling (`amm train`,
`amm sweep run|resume`: a graceful stop, then 130). The other commands write their files
atomically or idempotently at the end (`amm report`, `amm sweep export|import`), so an
immediate exit loses nothing. Imported as a library, nothing is changed.
"""

import os
import signal
import sys


def _stop_at_once(signum, frame) -> None:  # noqa: ARG001 - a signal handler's signature
    os.write(2, b"amm: interrupted\n")
    os._exit(130)  # nothing has been written yet: no clean-up to run


if os.path.basename(sys.argv[0]) == "amm" or sys.argv[0] == "-m":
    for _s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(_s, _stop_at_once)
