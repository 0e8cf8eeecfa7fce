"""The import arrows of docs/design.md: amm_core imports neither Ray nor MLflow nor the other
packages; sweeps never imports analysis or the CLI; analysis never imports sweeps, Ray or the
CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "amm_core": {"ray", "mlflow", "sweeps", "analysis", "amm_cli"},
    "sweeps": {"analysis", "amm_cli"},
    "analysis": {"ray", "sweeps", "amm_cli"},
}


def imported_roots(path: Path) -> set[str]:
    """Top-level package of every import in a file, at any depth (lazy imports count too)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_arrows_point_one_way(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    bad = {
        f"{f.relative_to(REPO)} imports {', '.join(sorted(imported_roots(f) & FORBIDDEN[package]))}"
        for f in files
        if imported_roots(f) & FORBIDDEN[package]
    }
    assert not bad, sorted(bad)


def test_amm_core_loads_without_ray_or_mlflow():
    code = (
        "import sys, amm_core.train, amm_core.figures, amm_core.data\n"
        "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
