"""Commands the project prints for a person to paste: they must run as pasted in the shell that
ran this one.

`amm` and `mlflow` are console scripts of this installation (a venv's bin/). Where the shell
finds this very script on PATH (the venv is active, or installed system-wide) the bare name works;
otherwise the printed command names the script by path, relative to the current folder when it is
inside it (`make demo` in a fresh clone prints `.venv/bin/amm table ...`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def script(name: str) -> str:
    """How to call this installation's console script `name` ('amm', 'mlflow') from here."""
    # the interpreter's folder as the venv sees it: sys.executable is a symlink, not resolved
    path = Path(os.path.abspath(sys.executable)).parent / name
    if not path.is_file():  # not installed as a script (e.g. `python -m amm_cli.main` in place)
        module = {"amm": "amm_cli.main"}.get(name, name)
        return f"{shlex.quote(sys.executable)} -m {module}"
    found = shutil.which(name)
    if found and Path(found).resolve() == path.resolve():
        return name
    try:
        rel = str(path.relative_to(Path.cwd()))
        return shlex.quote(rel if "/" in rel else f"./{rel}")  # a bare name would search PATH
    except ValueError:
        return shlex.quote(str(path))


def amm() -> str:
    """`amm`, or the path to this installation's amm (e.g. `.venv/bin/amm`)."""
    return script("amm")
