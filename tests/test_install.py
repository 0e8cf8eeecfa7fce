"""`pip install .` into a fresh venv, then `amm` from another folder finds the shipped presets and
sweep specs (package data). The venv reuses this environment's installed dependencies (a .pth
line) and builds without isolation, so no network and a few seconds."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_installed_wheel_finds_presets_and_specs(tmp_path):
    src = tmp_path / "src"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for d in ("amm_core", "amm_cli", "sweeps", "analysis", "configs"):
        shutil.copytree(REPO / d, src / d, ignore=skip)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / f, src / f)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # the dependencies (and setuptools for the build) from this environment, after the venv's own
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps"]
    r = subprocess.run(
        [*pip, "--no-build-isolation", "--no-index", str(src)], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    amm = str(venv / "bin" / "amm")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([amm, *args], cwd=elsewhere, capture_output=True, text=True)

    plan = run("sweep", "plan", "paper/mnist_amm")
    assert plan.returncode == 0, plan.stderr
    assert f"base preset: {Path(purelib) / 'amm_presets' / 'mnist_amm.yaml'}" in plan.stdout
    assert "trials: 5" in plan.stdout
    smoke = run("sweep", "plan", "smoke")
    assert smoke.returncode == 0 and "trials: 4" in smoke.stdout, smoke.stderr
    helpcfg = run("train", "--help-config")
    assert helpcfg.returncode == 0 and "loss.gp_weight = 10.0" in helpcfg.stdout
    bad = run("train", "nope")
    assert bad.returncode == 2 and "mnist_amm, mnist_amm_plus, smoke" in bad.stderr
    # the code ran from the wheel, not from this checkout
    where = subprocess.run(
        [py, "-c", "import amm_core; print(amm_core.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(purelib), where
