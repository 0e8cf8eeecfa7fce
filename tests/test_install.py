"""`pip install .` into a fresh venv, then `amm` from another folder finds the shipped presets and
sweep specs (package data). The venv reuses this environment's installed dependencies (a .pth
line) and builds without isolation, so no network and a few seconds."""

from __future__ import annotations

import json
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
    # a preset of one's own on a shipped one, whose `base:` chain (mixture -> paper's) resolves
    # inside the package data: the same config, so the same hash as in the checkout
    (elsewhere / "mine.yaml").write_text("base: mnist_amm_mixture\n")
    (elsewhere / "spec.yaml").write_text("base: mine.yaml\n")
    mine = run("sweep", "plan", "spec.yaml")
    snapshot = json.loads((REPO / "tests" / "presets_snapshot.json").read_text())
    assert mine.returncode == 0 and snapshot["mnist_amm_mixture"]["hash"] in mine.stdout, (
        mine.stdout + mine.stderr
    )
    # the studies ship too, same hashes: learned_random3, seed 0, is the preset they ran on
    study = run("sweep", "plan", "studies/learned_vs_fixed")
    preset = snapshot["mnist_amm_mixture_learned"]["hash"]
    assert study.returncode == 0 and preset in study.stdout, study.stdout + study.stderr
    demo = run("sweep", "plan", "demo")  # a shipped spec on demo -> mixture -> paper's preset
    assert demo.returncode == 0 and "trials: 4" in demo.stdout, demo.stderr
    helpcfg = run("train", "--help-config")
    assert helpcfg.returncode == 0 and "loss.gp_weight = 10.0" in helpcfg.stdout
    bad = run("train", "nope")
    assert (
        bad.returncode == 2
        and "mnist_amm_plus, mnist_samm, mnist_samm_mixture, mnist_samm_plus, smoke" in bad.stderr
    )
    # the code ran from the wheel, not from this checkout
    where = subprocess.run(
        [py, "-c", "import amm_core; print(amm_core.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(purelib), where


def _fake_python(tmp_path: Path, fail_on: str = "") -> Path:
    """A stand-in interpreter for scripts/install.sh: pip's chatter on every call, and a failure
    when its arguments contain `fail_on`."""
    bin_dir = tmp_path / "env" / "bin"
    bin_dir.mkdir(parents=True)
    py = bin_dir / "python"
    fail = f'case "$*" in *{fail_on}*) echo "ERROR: no matching distribution" >&2; exit 1;; esac'
    py.write_text(
        "#!/bin/sh\n"
        "echo \"WARNING: Package 'sweeps.ablations' is absent from the packages configuration\"\n"
        'echo "  !! a long setuptools notice !!" >&2\n'
        + (fail + "\n" if fail_on else "")
        + "exit 0\n"
    )
    py.chmod(0o755)
    return py


def test_install_script_prints_one_line_per_phase(tmp_path):
    py = _fake_python(tmp_path)
    r = subprocess.run(
        ["bash", "scripts/install.sh", str(py)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split(" (")[0].split(",")[0] for ln in lines] == [
        "install: pip",
        "install: torch 2.14.1",
        "install: amm-sweeps and its dependencies",
        "install: done",
    ], r.stdout
    assert r.stderr == "" and "WARNING" not in r.stdout and "3.2 GB" in lines[1]
    log = tmp_path / "env" / "amm-install.log"
    assert log.read_text().count("absent from the packages configuration") == 3
    assert (tmp_path / "env" / ".amm-installed").is_file()


def test_install_script_shows_the_log_when_a_phase_fails(tmp_path):
    py = _fake_python(tmp_path, fail_on="torchvision")
    r = subprocess.run(
        ["bash", "scripts/install.sh", str(py)], cwd=REPO, capture_output=True, text=True
    )
    assert r.returncode == 1
    assert r.stdout.splitlines()[-1].startswith("install: torch 2.14.1")
    assert "install: FAILED: torch 2.14.1" in r.stderr and "no matching distribution" in r.stderr
    assert not (tmp_path / "env" / ".amm-installed").exists()
