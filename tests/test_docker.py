"""docker/Dockerfile and docker/compose.yaml agree with the code, the installed Ray and MLflow, and
the install script that CI runs. No Docker engine runs here: the Dockerfile is read with a few
regexes, the compose files with PyYAML."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml
from helpers import mlflow_security_utils, option

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
MAKEFILE = (REPO / "Makefile").read_text()
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
IMAGE_SERVICES = ("mlflow", "ray-head", "ray-worker")  # the ones that run the project image
SETTINGS = (REPO / "amm_core" / "settings.py").read_text()  # every environment variable amm reads
CODE_ENV = set(re.findall(r"environ\.get\(\"(\w+)\"", SETTINGS))


def default(value: str) -> str:
    """A compose `${VAR:-default}` with its default (not this machine's environment)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))


def test_image_is_the_ray_and_project_version_that_ci_tests():
    import ray

    m = re.search(r"^ARG BASE_IMAGE=rayproject/ray:(\d+\.\d+\.\d+)-py3\d+-gpu$", DOCKERFILE, re.M)
    assert m, "want a pinned rayproject/ray:<x.y.z>-py3X-gpu base (not ray-ml, not latest)"
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", DOCKERFILE, re.M), "FROM the BASE_IMAGE argument"
    assert m.group(1) == ray.__version__, "image Ray != the Ray that scripts/install.sh gives CI"
    version = PROJECT["version"]
    assert f'org.opencontainers.image.version="{version}"' in DOCKERFILE
    for name in IMAGE_SERVICES:
        svc = SERVICES[name]
        assert svc["image"] == f"amm-sweeps:{version}", name
        assert (REPO / "docker" / svc["build"]["context"]).resolve() == REPO  # .dockerignore
        assert svc["build"]["dockerfile"] == "docker/Dockerfile"


def test_image_installs_through_the_install_script_that_make_and_ci_run():
    calls = re.findall(r"(?:^RUN|&&) scripts/install\.sh (\S+)", DOCKERFILE, re.M)
    assert calls == ["/home/ray/anaconda3/bin/python"]  # once, with the base image's python
    # The only other package: the MLflow server's PostgreSQL driver, pinned, not a project dep.
    pips = [p.split() for p in re.findall(r"pip install ([^&\\\n]+)", DOCKERFILE)]
    assert pips == [["-q", '"psycopg2-binary==2.9.13"']]
    assert not any("psycopg2" in d for d in PROJECT["dependencies"])
    # What the install needs is copied in: every COPY source exists, every package is among them.
    sources = re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", DOCKERFILE, re.M)
    copied = {s.rstrip("/") for line in sources for s in line.split()}
    assert all((REPO / s).exists() for s in copied), copied
    assert {"scripts/install.sh", "pyproject.toml", PROJECT["readme"], "configs"} <= copied
    assert {"amm_core", "amm_cli", "sweeps", "analysis"} <= copied
    # `make test`, which CI runs, installs through the same script.
    assert re.search(r"^install:\n\tbash scripts/install\.sh\n\ntest: install\b", MAKEFILE, re.M)
    assert re.search(r"^make test$", (REPO / ".ci" / "run").read_text(), re.M)


def test_image_runs_as_non_root_and_bakes_in_no_secrets():
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0"), users
    code = "\n".join(ln for ln in DOCKERFILE.splitlines() if not ln.lstrip().startswith("#"))
    assert not re.search(r"KEY|TOKEN|SECRET|PASSWORD", code, re.I), "a secret in the image"


def test_compose_services_ports_and_volumes():
    assert set(SERVICES) == {"postgres", *IMAGE_SERVICES}
    exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", DOCKERFILE, re.M).group(1).split()}
    published = {}
    for name, svc in SERVICES.items():
        assert svc["healthcheck"]["test"], name
        for dep, cond in svc.get("depends_on", {}).items():
            assert cond == {"condition": "service_healthy"} and "healthcheck" in SERVICES[dep]
        for spec in svc.get("ports", []):
            _, host_port, port = default(spec).rsplit(":", 2)
            assert host_port == port and int(port) in exposed, f"{name}: {spec}"
            published[int(port)] = name
    assert published == {5000: "mlflow", 8265: "ray-head", 10001: "ray-head"}
    head, mlflow = SERVICES["ray-head"]["command"], SERVICES["mlflow"]["command"]
    assert option(head, "--ray-client-server-port") == "10001"
    # All interfaces of the container's private network; published on the host's loopback only.
    assert option(head, "--dashboard-host") == option(mlflow, "--host") == "0.0.0.0"

    mounts = {
        n: dict(default(m).split(":")[1::-1] for m in s["volumes"]) for n, s in SERVICES.items()
    }
    named = {src for m in mounts.values() for src in m.values() if not src.startswith((".", "/"))}
    assert named == set(COMPOSE["volumes"]), "named volumes used != declared"
    # Multi-node needs shared storage: head and worker mount the same data and runs.
    assert mounts["ray-head"] == mounts["ray-worker"] == {"/data": "../data", "/runs": "runs"}
    assert mounts["mlflow"] == {"/mlflow": "mlartifacts"}
    # The image creates those mount points, and the project folder, owned by its non-root user.
    run = re.sub(r"\\\n\s*", "", DOCKERFILE)
    made = "/data /runs /mlflow /home/ray/amm-sweeps"
    assert f"mkdir -p {made} && chown ray:users {made}" in run

    gpu = yaml.safe_load((REPO / "docker" / "compose.gpu.yaml").read_text())["services"]
    assert set(gpu) <= set(SERVICES)
    (device,) = gpu["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]


def test_compose_environment_is_read_by_the_code_and_points_at_the_services():
    from mlflow.environment_variables import MLFLOW_TRACKING_URI
    from ray._private.ray_constants import RAY_ADDRESS_ENVIRONMENT_VARIABLE

    allowed_host = mlflow_security_utils().is_allowed_host_header
    known = CODE_ENV | {MLFLOW_TRACKING_URI.name, RAY_ADDRESS_ENVIRONMENT_VARIABLE}
    image_data_dir = re.search(r"\bAMM_DATA_DIR=(\S+)", DOCKERFILE).group(1)
    assert image_data_dir == "/data" and "AMM_DATA_DIR" in CODE_ENV
    mlflow = SERVICES["mlflow"]["command"]
    allowed = option(mlflow, "--allowed-hosts").split(",")
    for name in IMAGE_SERVICES:
        env = SERVICES[name]["environment"]
        assert set(env) <= known, f"{name}: {set(env) - known} read by neither amm nor Ray/MLflow"
        assert env["AMM_DATA_DIR"] == image_data_dir
        uri = urlparse(env["MLFLOW_TRACKING_URI"])
        assert (uri.hostname, str(uri.port)) == ("mlflow", option(mlflow, "--port"))
        assert allowed_host(allowed, uri.netloc), f"MLflow would reject Host {uri.netloc}"
    assert allowed_host(allowed, "127.0.0.1:5000")  # the published port
    assert not allowed_host(allowed, "evil.example:5000")
    head_port = option(SERVICES["ray-head"]["command"], "--port")
    for name in ("ray-head", "ray-worker"):
        env = SERVICES[name]["environment"]
        assert env["RAY_ADDRESS"] == f"ray-head:{head_port}"
        assert f"runs:{env['AMM_SWEEP_STORAGE']}" in SERVICES[name]["volumes"]
    assert option(SERVICES["ray-worker"]["command"], "--address") == f"ray-head:{head_port}"

    pg = SERVICES["postgres"]["environment"]
    store = urlparse(default(option(mlflow, "--backend-store-uri")))
    assert (store.scheme, store.hostname, store.username) == (
        "postgresql+psycopg2",
        "postgres",
        "mlflow",
    )
    assert store.username == pg["POSTGRES_USER"] and store.path == "/" + pg["POSTGRES_DB"]
    assert store.password == default(pg["POSTGRES_PASSWORD"])
    assert option(mlflow, "--artifacts-destination").startswith("/mlflow/")
