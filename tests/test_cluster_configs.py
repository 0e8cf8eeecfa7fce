"""sweeps/cluster/: the cluster-launcher YAMLs pass Ray's own config validation, and every config
(launcher YAMLs, the KubeRay RayJob, the Slurm script, docs/cluster.md) agrees with the image,
the compose stack and the `amm` command.

Ray's `_bootstrap_config` (what `ray up` runs before it touches a machine) is run for real; only
the AWS node-provider class is replaced, because its calls need AWS credentials and the network.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from helpers import mlflow_security_utils, option

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "sweeps" / "cluster"
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
DOCKERFILE = (REPO / "docker" / "Dockerfile").read_text()
IMAGE = COMPOSE["x-amm"]["image"]
RAY_VERSION = re.search(r"^FROM rayproject/ray:([\d.]+)-", DOCKERFILE, re.M).group(1)
IMAGE_WORKDIR = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.M).group(1)
IMAGE_DATA_DIR = re.search(r"AMM_DATA_DIR=(\S+)", DOCKERFILE).group(1)
MLFLOW_PORT = 5000  # compose's; checked against compose below


def launcher_yamls() -> list[Path]:
    out = []
    for path in sorted(CLUSTER.glob("*.yaml")):
        docs = list(yaml.safe_load_all(path.read_text()))
        if len(docs) == 1 and "provider" in docs[0]:
            out.append(path)
    return out


LAUNCHER = launcher_yamls()
RAYJOB = CLUSTER / "kuberay-rayjob.yaml"
SLURM = CLUSTER / "slurm.sbatch"


class _OfflineProvider:
    """Stands in for a cloud provider class: its resource look-up and bootstrap (key pairs,
    security groups, IAM roles, AMI checks) are cloud API calls."""

    @staticmethod
    def fillout_available_node_types_resources(config):
        return config

    @staticmethod
    def bootstrap_config(config):
        return config


def bootstrap(config: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    from ray.autoscaler._private import commands

    kind = config["provider"]["type"]
    if kind != "local":  # the local provider runs for real
        monkeypatch.setitem(commands._NODE_PROVIDERS, kind, lambda _cfg: _OfflineProvider)
    return commands._bootstrap_config(copy.deepcopy(config), no_config_cache=True)


def commands_of(cfg: dict, key: str) -> list[list[str]]:
    """Shell commands of a config list, split into simple commands (on ; && || and &)."""
    out = []
    for cmd in cfg.get(key, []):
        for part in re.split(r";|&&|\|\||(?<![>&0-9])&(?!>)", cmd):
            toks = shlex.split(part.strip().removeprefix("nohup "))
            if toks:
                out.append(toks)
    return out


def amm_sweep_runs(text: str) -> list[list[str]]:
    """Every `amm sweep run ...` command in a text, as argv after `amm` (continuations joined)."""
    if "```" in text:  # markdown: its code blocks only
        text = "\n".join(re.findall(r"```\w*\n(.*?)```", text, re.S))
    text = re.sub(r"\\\n\s*", " ", text)
    text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    out = []
    # `amm sweep run`, or `ray submit ... amm_cli/main.py -- sweep run` (the same entry point)
    start = re.compile(r"\bamm sweep run|amm_cli/main\.py -- sweep run")
    for line in text.splitlines():
        m = start.search(line)
        if not m:
            continue
        rest = line[m.end() :]
        rest = re.split(r"\s(?:&&|\|\||;|\||>)\s", rest)[0].rstrip("`'")
        out.append(["sweep", "run", *shlex.split(rest)])
    return out


def check_amm_command(argv: list[str]) -> None:
    """The real `amm` parser accepts it, and a spec named in the repository exists."""
    from amm_cli.main import build_parser

    args = build_parser().parse_args(argv)
    assert args.command == "sweep" and args.sweep_command == "run"
    spec = args.spec.removeprefix(IMAGE_WORKDIR + "/")
    if not spec.startswith("$") and "<" not in spec:
        assert (REPO / spec).is_file(), f"amm sweep run {args.spec}: no such spec in the repository"


# ---------------------------------------------------------------- launcher YAMLs


def test_launcher_yamls_found():
    assert {p.name for p in LAUNCHER} == {"aws-gpu.yaml", "local.yaml"}


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_ray_validates_launcher_yaml(path, monkeypatch):
    config = yaml.safe_load(path.read_text())
    resolved = bootstrap(config, monkeypatch)
    assert resolved["docker"]["image"] == IMAGE
    assert resolved["head_node_type"] in resolved["available_node_types"]
    if config["provider"]["type"] == "aws":
        # Stated resources: the autoscaler then never needs the AWS instance-type look-up.
        for name, node in config["available_node_types"].items():
            assert "CPU" in node["resources"], name
        gpu = [n for n in config["available_node_types"].values() if n["resources"].get("GPU")]
        assert gpu and all(n["max_workers"] >= 1 for n in gpu)


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
    config = yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())
    mutate(config)
    with pytest.raises(Exception) as exc:
        bootstrap(config, monkeypatch)
    kind = type(exc.value)
    assert error in f"{kind.__module__}.{kind.__name__}"


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_starts_mlflow_on_the_head_on_loopback_only(path):
    check_host = mlflow_security_utils()
    config = yaml.safe_load(path.read_text())
    compose_mlflow = [str(t) for t in COMPOSE["services"]["mlflow"]["command"]]
    assert option(compose_mlflow, "--port") == str(MLFLOW_PORT)

    head = commands_of(config, "head_start_ray_commands")
    ray_head = [t for t in head if t[:3] == ["ray", "start", "--head"]]
    servers = [t for t in head if t[:2] == ["mlflow", "server"]]
    assert len(ray_head) == 1 and len(servers) == 1
    server = servers[0]
    assert option(server, "--port") == str(MLFLOW_PORT)
    # no authentication on either: only the head itself (the driver, SSH forwards) reaches them
    assert option(server, "--host") == "127.0.0.1"
    assert option(ray_head[0], "--dashboard-host") == "127.0.0.1"
    exports = [t for t in head if t[0] == "export"]
    (uri,) = [t[1].split("=", 1)[1] for t in exports if t[1].startswith("MLFLOW_TRACKING_URI=")]
    assert uri == f"http://127.0.0.1:{MLFLOW_PORT}"
    # The store sits in a folder mounted from outside the container, so it outlives it.
    mounts = [o.split("=", 1)[1] for o in config["docker"].get("head_run_options", [])]
    store = urlparse(option(server, "--backend-store-uri"))
    assert store.scheme == "sqlite"
    for path_in_container in (
        "/" + store.path.lstrip("/"),
        option(server, "--artifacts-destination"),
    ):
        assert any(path_in_container.startswith(m.split(":")[1]) for m in mounts), mounts

    (worker_start,) = [
        t for t in commands_of(config, "worker_start_ray_commands") if t[:2] == ["ray", "start"]
    ]
    assert option(worker_start, "--address") == "$RAY_HEAD_IP:" + option(ray_head[0], "--port")
    # trials never talk to MLflow: the workers are not pointed at it
    assert "MLFLOW_TRACKING_URI" not in " ".join(config["worker_start_ray_commands"])
    assert check_host.is_allowed_host_header(
        check_host.get_default_allowed_hosts(), f"127.0.0.1:{MLFLOW_PORT}"
    )


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_mounts_the_data_root_at_the_images_amm_data_dir(path):
    config = yaml.safe_load(path.read_text())
    targets = set(config.get("file_mounts", {}))
    for opt in config["docker"].get("run_options", []):
        if opt.startswith("--volume="):
            targets.add(opt.split("=", 1)[1].split(":")[1])
    assert IMAGE_DATA_DIR in targets


# ---------------------------------------------------------------- KubeRay


def test_kuberay_rayjob_is_consistent():
    check_host = mlflow_security_utils()
    docs = {d["kind"]: d for d in yaml.safe_load_all(RAYJOB.read_text())}
    job = docs["RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert spec["shutdownAfterJobFinishes"] is True

    pods = [cluster["headGroupSpec"]["template"]["spec"]]
    pods += [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    pods.append(docs["Deployment"]["spec"]["template"]["spec"])
    for pod in pods:
        for c in pod["containers"]:
            assert c["image"] == IMAGE, c["name"]
    gpu_groups = [
        g
        for g in cluster["workerGroupSpecs"]
        if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]
    ]
    assert gpu_groups

    # The entrypoint: a real `amm` command whose paths lie on the mounted shared volume.
    argv = amm_sweep_runs(spec["entrypoint"])
    assert len(argv) == 1
    check_amm_command(argv[0])
    from amm_cli.main import build_parser

    args = build_parser().parse_args(argv[0])
    claims = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all(RAYJOB.read_text())
        if d["kind"] == "PersistentVolumeClaim"
    }
    for pod in pods[:-1]:
        volumes = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]}
        assert set(volumes.values()) <= claims
        (container,) = pod["containers"]
        mounts = [m["mountPath"] for m in container["volumeMounts"]]
        env = {e["name"]: e["value"] for e in container["env"]}
        for p in (args.storage, env["AMM_DATA_DIR"]):
            assert any(p.startswith(m + "/") for m in mounts), f"{p} is not on a mounted volume"
        uri = urlparse(env["MLFLOW_TRACKING_URI"])
        assert env["MLFLOW_TRACKING_URI"] == args.tracking_uri
    # ... and the MLflow Service / Deployment behind that URI accept it.
    service = docs["Service"]
    assert uri.hostname == service["metadata"]["name"]
    assert uri.port == service["spec"]["ports"][0]["port"]
    (server,) = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert (
        service["spec"]["selector"] == docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    )
    assert option(server["command"], "--port") == str(service["spec"]["ports"][0]["targetPort"])
    allowed = option(server["command"], "--allowed-hosts").split(",")
    for host in (uri.netloc, f"{uri.hostname}.default.svc.cluster.local:{uri.port}"):
        assert check_host.is_allowed_host_header(allowed, host), host
    assert server["readinessProbe"]["httpGet"]["path"] == "/health"


# ---------------------------------------------------------------- Slurm


def test_slurm_script_is_consistent():
    text = SLURM.read_text()
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    assert re.search(r"^AMM_IMAGE=(\S+)$", text, re.M).group(1) == IMAGE
    joined = re.sub(r"\\\n\s*", " ", text)
    sruns = [ln for ln in joined.splitlines() if ln.strip().startswith("srun")]
    assert any("ray start --head" in ln for ln in sruns)
    assert any("ray start --address" in ln for ln in sruns)
    (mlflow,) = [ln for ln in sruns if "mlflow server" in ln]
    assert f"--port {MLFLOW_PORT}" in mlflow and "--host 127.0.0.1" in mlflow
    assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{MLFLOW_PORT}" in text  # driver on the head
    runs = amm_sweep_runs(text)
    assert len(runs) == 1
    check_amm_command(runs[0])
    assert {"--address", "--storage", "--tracking-uri"} <= set(runs[0])


# ---------------------------------------------------------------- docs


def test_docs_commands_are_real():
    docs = (REPO / "docs" / "cluster.md").read_text()
    for heading in ("ray up", "KubeRay", "Slurm"):
        assert heading in docs
    runs = amm_sweep_runs(docs)
    assert len(runs) >= 3
    for argv in runs:
        check_amm_command(argv)
    # Every file of this folder that the docs name exists, and every config is documented.
    named = set(re.findall(r"sweeps/cluster/[\w.-]+", docs))
    for name in named:
        assert (REPO / name).is_file(), name
    assert {f"sweeps/cluster/{p.name}" for p in (*LAUNCHER, RAYJOB, SLURM)} <= named


def test_nothing_listens_on_all_interfaces_and_the_docs_say_how_to_add_auth():
    """MLflow and the Ray dashboard have no authentication here: the launcher and Slurm files
    bind them to loopback; inside a pod or container (KubeRay, compose) the pod/container
    network is private and compose publishes ports on 127.0.0.1 only."""
    for path in (*LAUNCHER, SLURM):
        assert "0.0.0.0" not in path.read_text(), path.name
    ports = [str(p) for svc in COMPOSE["services"].values() for p in svc.get("ports", [])]
    assert ports and all(p.startswith("${AMM_BIND:-127.0.0.1}:") for p in ports), ports
    rayjob = list(yaml.safe_load_all(RAYJOB.read_text()))
    services = [d for d in rayjob if d and d.get("kind") == "Service"]
    assert services and all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in services)
    docs = (REPO / "docs" / "cluster.md").read_text()
    section = docs[docs.index("## Who can reach MLflow and the dashboard") :]
    for words in (
        "--app-name basic-auth",
        "MLFLOW_TRACKING_USERNAME",
        "reverse proxy",
        "ray dashboard",
        "RAY_AUTH_MODE",
        "ClusterIP",
    ):
        assert words in section, words
