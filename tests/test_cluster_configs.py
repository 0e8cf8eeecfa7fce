"""sweeps/cluster/: the launcher YAMLs pass Ray's own validation (`_bootstrap_config`, what `ray up`
runs first; only the AWS provider class, whose calls need AWS, is stubbed); every `amm` command in
the cluster files, compose file and docs/cluster.md parses with the real `amm` parser; MLflow and
the Ray dashboard listen on loopback (or a private pod network) only."""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
import yaml
from helpers import mlflow_security_utils, option

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "sweeps" / "cluster"
LAUNCHER = [CLUSTER / "aws-gpu.yaml", CLUSTER / "local.yaml"]
RAYJOB_DOCS = list(yaml.safe_load_all((CLUSTER / "kuberay-rayjob.yaml").read_text()))
RAYJOB = next(d for d in RAYJOB_DOCS if d["kind"] == "RayJob")
SLURM = CLUSTER / "slurm.sbatch"
DOCS = (REPO / "docs" / "cluster.md").read_text()
COMPOSE = (REPO / "docker" / "compose.yaml").read_text()
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
IMAGE = yaml.safe_load(COMPOSE)["x-amm"]["image"]
RAY_VERSION = re.search(r"^ARG BASE_IMAGE=rayproject/ray:([\d.]+)-", DOCKERFILE, re.M).group(1)
IMAGE_WORKDIR = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.M).group(1)
IMAGE_DATA_DIR = re.search(r"AMM_DATA_DIR=(\S+)", DOCKERFILE).group(1)
# local-venv.yaml's checkout on the shared filesystem (the commands name specs in it)
SHARED_CHECKOUT = "/mnt/shared/amm-sweeps"


def bootstrap(config: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    from ray.autoscaler._private import commands

    kind = config["provider"]["type"]
    if kind != "local":  # the local provider runs for real; AWS's calls need AWS
        offline = SimpleNamespace(
            fillout_available_node_types_resources=lambda c: c, bootstrap_config=lambda c: c
        )
        monkeypatch.setitem(commands._NODE_PROVIDERS, kind, lambda _cfg: offline)
    return commands._bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def shell_commands(cfg: dict, key: str) -> list[list[str]]:
    """A launcher config's command list, split into simple commands (on ; && || and &)."""
    out = []
    for cmd in cfg.get(key, []):
        for part in re.split(r";|&&|\|\||(?<![>&0-9])&(?!>)", cmd):
            if toks := shlex.split(part.strip().removeprefix("nohup ")):
                out.append(toks)
    return out


def amm_commands(text: str) -> list[list[str]]:
    """Every `amm SUBCOMMAND ...` (or `ray submit ... amm_cli/main.py -- ...`) in shell text, as
    argv after `amm`; continuation lines joined, cut at the first shell operator."""
    out = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        if line.lstrip().startswith("#"):
            continue
        if m := re.search(r"(?:\bamm|amm_cli/main\.py --) (?=[a-z])(.*)", line):
            rest = re.split(r"\s(?:&&|\|\||;|\||>)\s", m.group(1))[0]
            out.append(shlex.split(rest, comments=True))
    return out


def parse_amm(argv: list[str]):
    """The real `amm` parser accepts argv, and a sweep spec it names exists in the repository."""
    from amm_cli.main import build_parser

    args = build_parser().parse_args(argv)
    spec = getattr(args, "spec", None)
    if spec and not spec.startswith("$"):
        spec = spec.removeprefix(IMAGE_WORKDIR + "/").removeprefix(SHARED_CHECKOUT + "/")
        assert (REPO / spec).is_file(), f"amm {shlex.join(argv)}: no such spec {spec}"
    return args


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_ray_validates_launcher_yaml(path, monkeypatch):
    config = yaml.safe_load(path.read_text())
    resolved = bootstrap(config, monkeypatch)
    assert resolved["docker"]["image"] == IMAGE
    assert resolved["head_node_type"] in resolved["available_node_types"]
    if config["provider"]["type"] == "aws":
        # Stated resources: the autoscaler then never needs the AWS instance-type look-up.
        nodes = config["available_node_types"].values()
        assert all("CPU" in n["resources"] for n in nodes)
        assert any(n["resources"].get("GPU") and n["max_workers"] >= 1 for n in nodes)
    # The data root reaches every node at the image's AMM_DATA_DIR.
    targets = set(config.get("file_mounts", {}))
    for opt in config["docker"].get("run_options", []):
        if opt.startswith("--volume="):
            targets.add(opt.split(":")[1])
    assert IMAGE_DATA_DIR in targets


@pytest.mark.parametrize(
    "mutate, error",
    [
        (lambda c: c.update(max_worker=3), "jsonschema"),  # a typo'd key
        (lambda c: c["docker"].update(image=7), "jsonschema"),  # a wrong type
        (lambda c: c.update(head_node_type="nope"), "ValueError"),
    ],
    ids=["unknown-key", "wrong-type", "bad-head-type"],
)
def test_ray_validation_rejects_broken_configs(mutate, error, monkeypatch):
    config = yaml.safe_load(LAUNCHER[0].read_text())
    mutate(config)
    with pytest.raises(Exception) as exc:
        bootstrap(config, monkeypatch)
    kind = type(exc.value)
    assert error in f"{kind.__module__}.{kind.__name__}"


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_starts_mlflow_and_the_dashboard_on_loopback_only(path):
    config = yaml.safe_load(path.read_text())
    head = shell_commands(config, "head_start_ray_commands")
    (ray_head,) = [t for t in head if t[:3] == ["ray", "start", "--head"]]
    (server,) = [t for t in head if t[:2] == ["mlflow", "server"]]
    assert option(server, "--host") == "127.0.0.1" and option(server, "--port") == "5000"
    assert option(ray_head, "--dashboard-host") == "127.0.0.1"
    assert ["export", "MLFLOW_TRACKING_URI=http://127.0.0.1:5000"] in head
    # No --allowed-hosts: MLflow's default must accept the driver's Host header.
    check = mlflow_security_utils()
    assert check.is_allowed_host_header(check.get_default_allowed_hosts(), "127.0.0.1:5000")
    # The store sits in a folder mounted from outside the container, so it outlives it.
    mounts = [o.split("=", 1)[1].split(":")[1] for o in config["docker"]["head_run_options"]]
    store = urlparse(option(server, "--backend-store-uri"))
    assert store.scheme == "sqlite"
    for used in ("/" + store.path.lstrip("/"), option(server, "--artifacts-destination")):
        assert any(used.startswith(m) for m in mounts), (used, mounts)
    workers = shell_commands(config, "worker_start_ray_commands")
    (worker,) = [t for t in workers if t[:2] == ["ray", "start"]]
    assert option(worker, "--address") == "$RAY_HEAD_IP:" + option(ray_head, "--port")


def test_local_venv_yaml_validates_and_is_what_the_cluster_test_brings_up(monkeypatch):
    """The Docker-less on-premise config: Ray's validation, MLflow on PostgreSQL on the head,
    Ray and MLflow on the head's own address (the machines reach both), the worker joining at
    its address towards the head. scripts/cluster_test.sh brings it up for real."""
    path = CLUSTER / "local-venv.yaml"
    config = yaml.safe_load(path.read_text())
    resolved = bootstrap(config, monkeypatch)
    assert "docker" not in config and resolved["provider"]["type"] == "local"
    head_ip = config["provider"]["head_ip"]
    head = shell_commands(config, "head_start_ray_commands")
    (ray_head,) = [t for t in head if t[:3] == ["ray", "start", "--head"]]
    (server,) = [t for t in head if t[:2] == ["mlflow", "server"]]
    assert option(ray_head, "--node-ip-address") == head_ip
    assert option(ray_head, "--dashboard-host") == head_ip
    assert option(server, "--host") == head_ip and option(server, "--port") == "5000"
    store = urlparse(option(server, "--backend-store-uri"))
    assert store.scheme == "postgresql+psycopg2" and store.hostname == head_ip
    assert option(server, "--artifacts-destination").startswith("/mnt/shared/")
    setup = " ".join(config["setup_commands"])
    assert f"{SHARED_CHECKOUT}/.venv/bin/activate" in setup and "AMM_DATA_DIR=" in setup
    assert "psycopg2-binary" in " ".join(config["head_setup_commands"])
    (worker,) = [t for t in shell_commands(config, "worker_start_ray_commands") if t[1] == "start"]
    assert option(worker, "--address") == "$RAY_HEAD_IP:" + option(ray_head, "--port")
    script = (REPO / "scripts" / "cluster_test.sh").read_text()
    assert "sweeps/cluster/local-venv.yaml" in script


def test_kuberay_rayjob_is_consistent():
    docs = {d["kind"]: d for d in RAYJOB_DOCS}  # one of each, besides the two claims
    cluster = RAYJOB["spec"]["rayClusterSpec"]
    assert RAYJOB["apiVersion"] == "ray.io/v1" and cluster["rayVersion"] == RAY_VERSION
    ray_pods = [cluster["headGroupSpec"]["template"]["spec"]]
    ray_pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    template = docs["Deployment"]["spec"]["template"]
    server_pod = template["spec"]
    assert all(c["image"] == IMAGE for p in (*ray_pods, server_pod) for c in p["containers"])
    assert any("nvidia.com/gpu" in p["containers"][0]["resources"]["limits"] for p in ray_pods)

    (argv,) = amm_commands(RAYJOB["spec"]["entrypoint"])
    args = parse_amm(argv)
    for pod in ray_pods:  # the sweep's storage and data root lie on the mounted shared volume
        (container,) = pod["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        env = {e["name"]: e["value"] for e in container["env"]}
        for p in (args.storage, env["AMM_DATA_DIR"]):
            assert any(p.startswith(m + "/") for m in mounts), f"{p} is not on a mounted volume"
        assert env["MLFLOW_TRACKING_URI"] == args.tracking_uri
    # ... and the MLflow Service / Deployment behind that URI accept it.
    uri, service = urlparse(args.tracking_uri), docs["Service"]
    (port,) = service["spec"]["ports"]
    assert (uri.hostname, uri.port) == (service["metadata"]["name"], port["port"])
    assert service["spec"]["selector"] == template["metadata"]["labels"]
    (server,) = server_pod["containers"]
    assert option(server["command"], "--port") == str(port["targetPort"])
    allowed = option(server["command"], "--allowed-hosts").split(",")
    for host in (uri.netloc, f"{uri.hostname}.default.svc.cluster.local:{uri.port}"):
        assert mlflow_security_utils().is_allowed_host_header(allowed, host), host


def test_slurm_script_is_consistent():
    text = SLURM.read_text()
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    assert re.search(r"^AMM_IMAGE=(\S+)$", text, re.M).group(1) == IMAGE
    (mlflow,) = [ln for ln in re.sub(r"\\\n\s*", " ", text).splitlines() if "mlflow server" in ln]
    assert "--port 5000" in mlflow and "--host 127.0.0.1" in mlflow
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in text  # the driver runs on the head
    (argv,) = amm_commands(text)
    assert {"--address", "--storage", "--tracking-uri"} <= set(argv)


def test_every_amm_command_parses_with_the_real_parser():
    code_blocks = "\n".join(re.findall(r"```\w*\n(.*?)```", DOCS, re.S))
    sources = {
        "docs/cluster.md": (amm_commands(code_blocks), 5),
        "slurm.sbatch": (amm_commands(SLURM.read_text()), 1),
        "kuberay-rayjob.yaml": (amm_commands(RAYJOB["spec"]["entrypoint"]), 1),
        "compose.yaml": (amm_commands(re.sub(r"(?m)^#", "", COMPOSE)), 1),
    }
    for name, (commands, expected) in sources.items():
        assert len(commands) >= expected, f"{name}: {commands}"
        for argv in commands:
            parse_amm(argv)


def test_docs_name_every_cluster_file():
    named = set(re.findall(r"sweeps/cluster/[\w.-]+", DOCS))
    assert all((REPO / name).is_file() for name in named), named
    assert {f"sweeps/cluster/{p.name}" for p in CLUSTER.iterdir()} <= named


def test_nothing_listens_on_all_interfaces_and_the_docs_say_how_to_add_auth():
    """MLflow and the Ray dashboard have no authentication: loopback in the launcher and Slurm
    files; a pod's or container's network is private (ClusterIP; compose publishes on 127.0.0.1)."""
    for path in (*LAUNCHER, SLURM):
        assert "0.0.0.0" not in path.read_text(), path.name
    services = yaml.safe_load(COMPOSE)["services"].values()
    ports = [str(p) for svc in services for p in svc.get("ports", [])]
    assert ports and all(p.startswith("${AMM_BIND:-127.0.0.1}:") for p in ports), ports
    rayjob = [d for d in RAYJOB_DOCS if d["kind"] == "Service"]
    assert rayjob and all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in rayjob)
    section = DOCS[DOCS.index("## Who can reach MLflow and the dashboard") :]
    words = ("--app-name basic-auth", "MLFLOW_TRACKING_USERNAME", "reverse proxy")
    words += ("ray dashboard", "RAY_AUTH_MODE", "ClusterIP")
    assert [w for w in words if w not in section] == []
