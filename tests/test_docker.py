"""docker/Dockerfile, docker/compose.yaml and .dockerignore agree with each other and with the code.

No Docker engine runs here, so nothing is built or started: these tests parse the files and check
every file, port, volume and environment variable they name against the repository, the installed
Ray / MLflow, and the install script that CI runs.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from helpers import mlflow_security_utils, option

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
COMPOSE_GPU = REPO / "docker" / "compose.gpu.yaml"
DOCKERIGNORE = REPO / ".dockerignore"
INSTALL = "scripts/install.sh"
# Installed in the image besides the project: the MLflow server's PostgreSQL driver. Nothing else
# may be pip-installed outside scripts/install.sh, or the image drifts from what CI tests.
SERVER_ONLY_PACKAGES = {"psycopg2-binary"}
CODE_DIRS = ("amm_core", "amm_cli", "sweeps", "analysis")


# ---------------------------------------------------------------- parsers


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction; joins `\\` continuations, drops comments."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # comment lines inside a continuation
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        full = (pending + line).strip()
        pending = ""
        if full:
            word, _, args = full.partition(" ")
            out.append((word.upper(), args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return out


def interpolate(value: str) -> str:
    """Compose `${VAR:-default}` / `${VAR}` with their defaults (not this machine's env)."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m.group(2) or "", value)


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def amm_services(compose: dict) -> dict[str, dict]:
    """The services that run the project image."""
    return {
        name: svc
        for name, svc in compose["services"].items()
        if str(svc.get("image", "")).rsplit("/", 1)[-1].startswith("amm-sweeps:")
    }


def command_tokens(svc: dict) -> list[str]:
    cmd = svc["command"]
    return [interpolate(str(t)) for t in (cmd if isinstance(cmd, list) else shlex.split(cmd))]


def dockerignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [ln.strip().rstrip("/") for ln in lines if ln.strip() and not ln.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the plain patterns used here: a path is out if it or a parent folder
    matches; `**/X` matches X at any depth."""
    parts = path.strip("/").split("/")
    for pat in patterns:
        assert not pat.startswith("!"), "exceptions are not supported by this checker"
        for i in range(len(parts)):
            prefix = parts[: i + 1]
            if pat.startswith("**/"):
                tails = ["/".join(prefix[k:]) for k in range(len(prefix))]
                if any(fnmatch.fnmatchcase(t, pat[3:]) for t in tails):
                    return True
            elif fnmatch.fnmatchcase("/".join(prefix), pat):
                return True
    return False


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())


def instr(name: str) -> list[str]:
    return [args for word, args in INSTRUCTIONS if word == name]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instr("ENV"):
        for tok in shlex.split(args):
            key, _, value = tok.partition("=")
            env[key] = value
    return env


# ---------------------------------------------------------------- Dockerfile


def test_dockerfile_parser_joins_continuations():
    text = "# c\nFROM a:b\nRUN x \\\n  # inner comment\n && y\nENV A=1 \\\n    B=2\n"
    assert parse_dockerfile(text) == [("FROM", "a:b"), ("RUN", "x && y"), ("ENV", "A=1 B=2")]


def test_base_image_is_the_ray_that_ci_tests():
    import ray

    (base,) = instr("FROM")
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d)(\d+)-gpu", base)
    assert m, f"FROM {base}: want a pinned rayproject/ray:<x.y.z>-pyXY-gpu (not ray-ml, not latest)"
    assert m.group(1) == ray.__version__, "image Ray != the Ray that scripts/install.sh gives CI"
    deps = project()["project"]["dependencies"]
    (ray_dep,) = [d for d in deps if re.match(r"ray(\[|>|=|\s)", d)]
    minimum = re.search(r">=\s*([\d.]+)", ray_dep).group(1)
    as_tuple = lambda v: tuple(int(x) for x in v.split("."))  # noqa: E731
    assert as_tuple(m.group(1)) >= as_tuple(minimum)
    py = (int(m.group(2)), int(m.group(3)))
    req = project()["project"]["requires-python"]
    assert py >= as_tuple(re.search(r">=\s*([\d.]+)", req).group(1)), req


def test_image_installs_through_the_install_script_only():
    runs = " && ".join(instr("RUN"))
    calls = [c.strip() for c in runs.split("&&") if INSTALL in c]
    assert len(calls) == 1, f"the Dockerfile must call {INSTALL} exactly once: {calls}"
    python = shlex.split(calls[0])[1]
    assert python.startswith("/") and python.endswith("/python"), python
    assert python == "/home/ray/anaconda3/bin/python"  # the base image's interpreter
    for cmd in runs.split("&&"):
        toks = shlex.split(cmd)
        if "pip" in toks and "install" in toks:
            pkgs = [t for t in toks[toks.index("install") + 1 :] if not t.startswith("-")]
            names = {re.split(r"[=<>\[]", p)[0].lower() for p in pkgs}
            assert names <= SERVER_ONLY_PACKAGES, f"installed outside {INSTALL}: {names}"
            assert all("==" in p for p in pkgs), f"unpinned: {pkgs}"
    deps = " ".join(project()["project"]["dependencies"]).lower()
    assert not any(p in deps for p in SERVER_ONLY_PACKAGES)


def test_every_copy_source_exists_and_is_not_dockerignored():
    patterns = dockerignore_patterns()
    sources = []
    for args in instr("COPY"):
        toks = [t for t in shlex.split(args) if not t.startswith("--")]
        sources += toks[:-1]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
        assert not ignored(src, patterns), f"COPY {src} is excluded by .dockerignore"
    copied = {s.rstrip("/") for s in sources}
    proj = project()
    assert INSTALL in copied
    assert "pyproject.toml" in copied and proj["project"]["readme"] in copied
    st = proj["tool"]["setuptools"]
    for pkg in st["packages"]:  # a package's folder: its own name, or package-dir's mapping
        folder = st.get("package-dir", {}).get(pkg, pkg)
        assert folder in copied, f"package {pkg} ({folder}/) is installed but not copied"


def test_dockerignore_keeps_data_runs_and_venv_out():
    patterns = dockerignore_patterns()
    for path in (
        ".venv/bin/python",
        "data/mnist/MNIST/raw/x.gz",
        "runs/smoke/trial/state.pt",
        "mlruns/0/meta.yaml",
        "mlflow.db",
        "sweeps/x.db",
        "amm_core/__pycache__/a.pyc",
    ):
        assert ignored(path, patterns), path
    for path in ("amm_core/config.py", "sweeps/smoke.yaml", "scripts/install.sh", "README.md"):
        assert not ignored(path, patterns), path


def test_non_root_no_secrets_and_data_dir_read_by_code():
    users = instr("USER")
    assert users and users[-1] not in ("root", "0"), (
        f"the image must end as a non-root user: {users}"
    )
    env = dockerfile_env()
    for word in ("ENV", "ARG"):
        for args in instr(word):
            assert not re.search(r"(KEY|TOKEN|SECRET|PASSWORD)", args, re.I), f"{word} {args}"
    assert env["AMM_DATA_DIR"] == "/data"
    assert "AMM_DATA_DIR" in code_env_names()
    (label,) = instr("LABEL")
    assert f'org.opencontainers.image.version="{project()["project"]["version"]}"' in label


def test_ci_and_make_install_through_the_same_script():
    """The Makefile's install recipe and .ci/run reach scripts/install.sh (directly or via make)."""
    makefile = (REPO / "Makefile").read_text()
    targets: dict[str, tuple[list[str], str]] = {}
    current = None
    for line in makefile.splitlines():
        m = re.match(r"^([\w.-]+)\s*:(?!=)\s*(.*)$", line)
        if m:
            current = m.group(1)
            targets[current] = (m.group(2).split(), "")
        elif line.startswith("\t") and current:
            deps, recipe = targets[current]
            targets[current] = (deps, recipe + line + "\n")

    def reaches(target: str, seen: frozenset = frozenset()) -> bool:
        if target not in targets or target in seen:
            return False
        deps, recipe = targets[target]
        sub_makes = re.findall(r"(?:\$\(MAKE\)|\bmake)\s+([\w.-]+)", recipe)
        return INSTALL in recipe or any(reaches(t, seen | {target}) for t in deps + sub_makes)

    assert reaches("test"), "`make test` must run scripts/install.sh"
    ci = (REPO / ".ci" / "run").read_text()
    via_make = [t for t in re.findall(r"\bmake\s+([\w.-]+)", ci) if reaches(t)]
    assert INSTALL in ci or via_make, ".ci/run must install through scripts/install.sh"


# ---------------------------------------------------------------- compose


def code_env_names() -> set[str]:
    """Environment variables our own code reads (string literals next to os.environ / getenv)."""
    names: set[str] = set()
    for d in CODE_DIRS:
        for py in (REPO / d).rglob("*.py"):
            text = py.read_text()
            names |= set(
                re.findall(r"(?:environ(?:\.get)?|getenv)\s*[\[(]\s*[\"'](\w+)[\"']", text)
            )
            names |= set(re.findall(r"^[A-Z_]*ENV\w*\s*=\s*[\"']([A-Z_]+)[\"']", text, re.M))
    return names


def library_env_names() -> set[str]:
    from mlflow.environment_variables import MLFLOW_TRACKING_URI
    from ray._private.ray_constants import RAY_ADDRESS_ENVIRONMENT_VARIABLE

    return {MLFLOW_TRACKING_URI.name, RAY_ADDRESS_ENVIRONMENT_VARIABLE}


def test_compose_image_is_the_project_image_built_from_the_dockerfile():
    compose = load_compose()
    amm = amm_services(compose)
    assert set(amm) == {"mlflow", "ray-head", "ray-worker"}
    version = project()["project"]["version"]
    assert {svc["image"] for svc in amm.values()} == {f"amm-sweeps:{version}"}
    for svc in amm.values():
        build = svc["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == REPO, "the build context must be the repository root (.dockerignore)"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


def test_compose_ports_are_bound_to_localhost_and_exposed_by_the_image():
    compose = load_compose()
    exposed = {int(p) for args in instr("EXPOSE") for p in args.split()}
    published = {}
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            host_ip, host_port, container_port = interpolate(str(spec)).rsplit(":", 2)
            assert host_ip == "127.0.0.1", f"{name}: {spec} must bind to 127.0.0.1 by default"
            assert host_port == container_port
            published[int(container_port)] = name
            assert int(container_port) in exposed, f"{name} publishes {container_port}: not EXPOSEd"
    assert published == {5000: "mlflow", 8265: "ray-head", 10001: "ray-head"}
    head = command_tokens(compose["services"]["ray-head"])
    assert option(head, "--ray-client-server-port") == "10001"
    assert option(head, "--dashboard-host") == "0.0.0.0"
    mlflow = command_tokens(compose["services"]["mlflow"])
    assert option(mlflow, "--port") == "5000" and option(mlflow, "--host") == "0.0.0.0"


def test_compose_health_checks_and_named_volumes():
    compose = load_compose()
    declared = set(compose["volumes"])
    used = set()
    for name, svc in compose["services"].items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for mount in svc.get("volumes", []):
            source, target = interpolate(mount).split(":")[:2]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"
                used.add(source)
            else:  # a bind mount: relative to the compose file
                assert (COMPOSE.parent / source).resolve().parent.exists()
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy"
            assert "healthcheck" in compose["services"][dep]
    assert used == declared
    # Multi-node needs shared storage: head and worker mount the same runs and data sources.
    mounts = {
        n: dict(reversed(interpolate(m).split(":")[:2]) for m in compose["services"][n]["volumes"])
        for n in ("ray-head", "ray-worker")
    }
    assert mounts["ray-head"] == mounts["ray-worker"]
    assert mounts["ray-head"]["/data"] and mounts["ray-head"]["/runs"] == "runs"
    # The named volumes mount where the image created owned folders for them.
    (mkdir,) = [r for r in instr("RUN") if r.startswith("mkdir")]
    for target in ("/data", "/runs", "/mlflow"):
        assert target in mkdir.split("&&")[0] and target in mkdir.split("&&")[1]
    assert any(m.endswith(":/mlflow") for m in compose["services"]["mlflow"]["volumes"])


def test_compose_environment_is_what_the_code_reads_and_points_at_the_services():
    is_allowed_host_header = mlflow_security_utils().is_allowed_host_header
    compose = load_compose()
    services = compose["services"]
    known = code_env_names() | library_env_names()
    for name, svc in amm_services(compose).items():
        for var in svc.get("environment", {}):
            assert var in known, f"{name}: {var} is read by neither our code nor Ray/MLflow"
        env = {k: interpolate(str(v)) for k, v in svc.get("environment", {}).items()}
        assert env["AMM_DATA_DIR"] == dockerfile_env()["AMM_DATA_DIR"]
        uri = urlparse(env["MLFLOW_TRACKING_URI"])
        assert uri.hostname in services and uri.hostname == "mlflow"
        assert str(uri.port) == option(command_tokens(services["mlflow"]), "--port")
        allowed = option(command_tokens(services["mlflow"]), "--allowed-hosts").split(",")
        assert is_allowed_host_header(allowed, uri.netloc), f"MLflow would reject Host {uri.netloc}"
        assert is_allowed_host_header(allowed, "127.0.0.1:5000")  # the published port
        assert not is_allowed_host_header(allowed, "evil.example:5000")
    head, worker = (command_tokens(services[n]) for n in ("ray-head", "ray-worker"))
    gcs = f"ray-head:{option(head, '--port')}"
    assert option(worker, "--address") == gcs
    for n in ("ray-head", "ray-worker"):
        assert services[n]["environment"]["RAY_ADDRESS"] == gcs
        # Tune's storage is the folder both nodes mount from the same named volume.
        storage = services[n]["environment"]["AMM_SWEEP_STORAGE"]
        assert f"runs:{storage}" in services[n]["volumes"]


def test_compose_mlflow_uses_postgres_with_a_driver_in_the_image():
    compose = load_compose()
    pg = compose["services"]["postgres"]["environment"]
    store = urlparse(option(command_tokens(compose["services"]["mlflow"]), "--backend-store-uri"))
    assert store.scheme == "postgresql" and store.hostname == "postgres"
    assert store.username == pg["POSTGRES_USER"] and store.path == "/" + pg["POSTGRES_DB"]
    assert store.password == interpolate(pg["POSTGRES_PASSWORD"])
    assert "psycopg2-binary" in " ".join(instr("RUN"))
    dest = option(command_tokens(compose["services"]["mlflow"]), "--artifacts-destination")
    assert dest.startswith("/mlflow/")


def test_compose_gpu_override_names_real_services():
    base = set(load_compose()["services"])
    gpu = yaml.safe_load(COMPOSE_GPU.read_text())
    assert set(gpu["services"]) <= base
    devices = gpu["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_compose_commands_in_comments_use_real_files():
    for line in COMPOSE.read_text().splitlines():
        if "amm sweep run" in line:
            spec = shlex.split(line.split("amm sweep run", 1)[1])[0]
            assert (REPO / spec).is_file(), f"compose.yaml names {spec}, which does not exist"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
