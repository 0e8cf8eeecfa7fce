"""Every command the project prints runs as pasted into the shell that ran it: `amm` where the
shell finds this installation's amm, else its path (`.venv/bin/amm`); `make demo` prints paths."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from amm_core import shell
from sweeps.driver.console import next_commands

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.path.abspath(sys.executable)).parent  # this venv's bin/, where `amm` lives


def _pasted(cmd: str, cwd: Path, path: str) -> subprocess.CompletedProcess:
    """`cmd` as a person pastes it into a shell in `cwd` whose PATH is `path`."""
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"PATH": path}
    return subprocess.run(
        cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_amm_is_named_by_path_unless_the_shell_finds_it(tmp_path, monkeypatch):
    assert (BIN / "amm").is_file()
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # the venv is not active
    monkeypatch.chdir(BIN.parent.parent)  # the project folder that holds .venv
    here = shell.amm()
    assert here == f"{BIN.parent.name}/bin/amm", here
    monkeypatch.chdir(tmp_path)  # elsewhere: the absolute path
    elsewhere = shell.amm()
    assert elsewhere == shlex.quote(str(BIN / "amm"))
    monkeypatch.setenv("PATH", f"{BIN}:/usr/bin:/bin")  # `source .venv/bin/activate`
    assert shell.amm() == "amm" and shell.script("mlflow") == "mlflow"
    # each runs as pasted in the shell it was printed for
    assert _pasted(f"{here} --help", BIN.parent.parent, "/usr/bin:/bin").returncode == 0
    assert _pasted(f"{elsewhere} --help", tmp_path, "/usr/bin:/bin").returncode == 0
    assert _pasted("amm --help", tmp_path, f"{BIN}:/usr/bin:/bin").returncode == 0


def test_next_commands_run_as_pasted(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    text = next_commands("nb", f"sqlite:///{tmp_path}/m.db", "amm-smoke", "1")
    cmds = [ln.split("  #")[0].strip() for ln in text.splitlines()[1:] if ln.startswith("  ")]
    cmds = [c for c in cmds if not c.startswith(("then ", "open ", "("))]
    assert len(cmds) == 4, text
    for cmd in cmds:  # the program each names exists where the shell looks; --help runs it
        program = shlex.split(cmd)[0]
        r = _pasted(f"{program} --help", tmp_path, "/usr/bin:/bin")
        assert r.returncode == 0, (cmd, r.stderr[-500:])
    assert cmds[-1].split()[1:3] == ["ui", "--backend-store-uri"]


def test_make_demo_ends_with_the_next_commands_it_has_not_run():
    """`make demo` runs the table and the report, then lists what it did not run (amm prints
    the commands as they run pasted: tested above), one `mlflow ui` command among them."""
    r = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    recipe = r.stdout
    echoed = re.findall(r'echo "([^"]*)"', recipe)
    typed = r"\b(amm (table|report|sweep)|mlflow ui)\b"
    assert not any(re.search(typed, e) for e in echoed), echoed  # no command typed by hand
    assert "sweep run sweeps/demo.yaml --name $name" in recipe and "--no-next" in recipe
    ran = [c for c in ("table", "report") if re.search(rf"bin/amm {c} \$name ", recipe)]
    assert ran == ["table", "report"]
    # the report where `amm report NAME` writes it, so that the suggested command agrees
    assert "--out" not in recipe.split("amm report", 1)[1].split(";")[0]
    last = [ln for ln in recipe.splitlines() if "bin/amm" in ln][-1]
    assert "sweep next $name --seen table,report" in last
    assert any("source .venv/bin/activate" in e for e in echoed), echoed
