"""The import arrows of docs/design.md: amm_core imports neither Ray nor MLflow nor the other
packages; sweeps never imports analysis or the CLI, and its rooms import one way (driver ->
store -> planning); analysis never imports sweeps, Ray or the CLI."""

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
        "import sys, amm_core.run.train, amm_core.run.figures, amm_core.data.splits\n"
        "print(sorted(m for m in ('ray', 'mlflow') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _amm_core_imports() -> dict[str, set[str]]:
    """Module -> the amm_core modules it imports (lazy imports too)."""
    files = {
        ".".join(f.relative_to(REPO).with_suffix("").parts): f
        for f in REPO.glob("amm_core/**/*.py")
    }
    graph = {}
    for mod, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != mod}
        graph[mod] = deps
    return graph


def test_amm_core_has_no_import_circle():
    graph, done = _amm_core_imports(), set()

    def visit(mod: str, path: tuple[str, ...]) -> None:
        assert mod not in path, f"import circle: {' -> '.join((*path, mod))}"
        if mod not in done:
            for dep in sorted(graph[mod]):
                visit(dep, (*path, mod))
            done.add(mod)

    for mod in sorted(graph):
        visit(mod, ())


def test_amm_core_is_one_run_not_the_project():
    """amm.toml, the sweep index and exit codes live in sweeps / amm_cli (docs/design.md)."""
    for f in REPO.glob("amm_core/**/*.py"):
        text = f.read_text()
        assert "tomllib" not in imported_roots(f) and "sweep_index" not in text, f
        assert "sys.exit" not in text, f


def test_amm_core_rooms_import_one_way():
    """docs/design.md: run -> model, data; model -> data; every room -> the top, which imports
    model.archs only (the config checks model.arch against the tables)."""
    allowed = {"run": {"model", "data", "top"}, "model": {"data", "top"}, "data": {"top"}}
    allowed["top"] = {"top"}

    def room(mod: str) -> str:
        parts = mod.split(".")
        return parts[1] if len(parts) > 2 else "top"

    bad = [
        f"{m} imports {d}"
        for m, deps in _amm_core_imports().items()
        for d in deps
        if room(d) not in allowed[room(m)] | {room(m)} and d != "amm_core.model.archs"
    ]
    assert not bad, bad


# sweeps' rooms (docs/design.md): planning (the spec and its cost) imports no other room, the
# store reads specs, the driver uses both
SWEEPS_ROOMS = {"planning": set(), "store": {"planning"}, "driver": {"planning", "store"}}


def _sweeps_rooms_imported(path: Path) -> set[str]:
    """The sweeps rooms a file imports (lazy imports too)."""
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        rooms |= {m.split(".")[1] for m in mods if m.startswith("sweeps.")}
    return rooms & set(SWEEPS_ROOMS)


def test_sweeps_modules_live_in_rooms_that_import_one_way():
    loose = sorted(f.name for f in (REPO / "sweeps").glob("*.py") if f.name != "__init__.py")
    assert not loose, f"modules outside the rooms {sorted(SWEEPS_ROOMS)}: {loose}"
    bad = []
    for room, allowed in SWEEPS_ROOMS.items():
        files = sorted((REPO / "sweeps" / room).glob("*.py"))
        assert len(files) > 1, room
        for f in files:
            wrong = _sweeps_rooms_imported(f) - allowed - {room}
            if wrong:
                bad.append(f"{f.relative_to(REPO)} imports {', '.join(sorted(wrong))}")
    assert not bad, bad


def test_a_pickle_from_before_the_rooms_reads_as_the_moved_class():
    """tuner.pkl and Tune's trial state of a sweep started before the rooms name old paths."""
    import pickle

    from sweeps.store import folder

    old = pickle.dumps(folder.CheckpointRecord(3), protocol=0)
    old = old.replace(b"sweeps.store.folder", b"sweeps.folder")
    assert b"sweeps.folder\n" in old
    assert pickle.loads(old) == folder.CheckpointRecord(3)
    import sweeps.callback

    from sweeps.driver import callback

    assert sweeps.callback is callback
