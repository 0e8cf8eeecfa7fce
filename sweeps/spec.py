"""Sweep specs: a YAML file -> a validated `SweepSpec` -> the trial configs and a Tune param space.

A spec names a base preset from `configs/` (a path relative to the spec file), fixed overrides,
grid axes (dotted config keys -> lists of values, crossed), a seed axis, the resources of one
trial, and optionally an Optuna search and an ASHA scheduler. Every config a sweep would train
is built and validated here, before Ray or MLflow is touched, so a bad spec fails with a
`ConfigError` that names the key and nothing starts.

    base: ../configs/mnist_amm.yaml     # relative to this file
    experiment: amm-paper               # MLflow experiment (default: amm)
    overrides: {train.eval_every: 1000}
    grid: {loss.gp_weight: [1, 10]}
    variants:                           # named override sets, one more axis ("variant")
      learned: {prior.means: learned}
      table3_init: {prior.means: learned, prior.init_means: table3}
    seeds: 5                            # seeds 0..4, or an explicit list [3, 7]
    resources: {cpu: 1, gpu: 0.25}
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amm_core.config import Config, apply_overrides, field_names, load_config, total_steps
from amm_core.errors import ConfigError
from amm_core.fs import read_text_file

TOP_KEYS = {
    "description": str,
    "base": str,
    "experiment": str,
    "overrides": dict,
    "grid": dict,
    "variants": dict,
    "seeds": (int, list),
    "resources": dict,
    "search": dict,
    "scheduler": dict,
    "max_concurrent": int,
    "max_failures": int,
    "checkpoints_to_keep": int,
    "cost": dict,
}
RESOURCE_KEYS = {"cpu": (int, float), "gpu": (int, float)}
SEARCH_KEYS = {
    "algorithm": str,
    "metric": str,
    "mode": str,
    "num_samples": int,
    "seed": int,
    "space": dict,
}
SPACE_TYPES = ("choice", "uniform", "loguniform")
SCHEDULER_KEYS = {
    "type": str,
    "metric": str,
    "mode": str,
    "time_attr": str,
    "max_t": int,
    "grace_period": int,
    "reduction_factor": (int, float),
}
COST_KEYS = {"steps_per_sec": (int, float), "measured_on": str}
VARIANT = "variant"  # the axis of named override sets
SHORT_NAMES = {"loss.gp_weight": "lambda", "optim.lr": "lr"}  # run-name labels


@dataclass(frozen=True)
class Search:
    metric: str
    mode: str
    num_samples: int
    seed: int
    space: dict[str, dict[str, Any]]  # key -> {type, values | low/high}


@dataclass(frozen=True)
class Scheduler:
    metric: str
    mode: str
    time_attr: str
    max_t: int
    grace_period: int
    reduction_factor: float


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    base: Path
    experiment: str
    overrides: dict[str, Any]
    grid: dict[str, list[Any]]
    seeds: list[int]
    cpu: float
    gpu: float
    search: Search | None = None
    scheduler: Scheduler | None = None
    max_concurrent: int = 0
    max_failures: int = 2
    checkpoints_to_keep: int = 2
    steps_per_sec: float | None = None
    measured_on: str = ""
    description: str = ""
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    base_config: Config = field(default_factory=Config)

    @property
    def stem(self) -> str:
        return self.path.stem

    def axes(self) -> dict[str, list[Any]]:
        """Swept keys -> values, the seed axis last (absent with a search)."""
        axes: dict[str, list[Any]] = dict(self.grid)
        if self.variants:
            axes[VARIANT] = list(self.variants)
        if self.search is None:
            axes["seed"] = list(self.seeds)
        return axes

    def cells(self) -> list[dict[str, Any]]:
        """The grid x seed cells in Tune's order (first axis varies slowest)."""
        axes = self.axes()
        keys = list(axes)
        return [dict(zip(keys, vals, strict=True)) for vals in itertools.product(*axes.values())]

    def num_trials(self) -> int:
        return self.search.num_samples if self.search else len(self.cells())

    def trial_config(self, params: dict[str, Any], data_dir: str | None = None) -> Config:
        """Base preset + fixed overrides + one trial's swept values (+ the data root)."""
        extra = {"data.data_dir": data_dir} if data_dir else {}
        params = expand_variant(params, self.variants)
        return apply_overrides(self.base_config, {**self.overrides, **params, **extra})


def expand_variant(params: dict[str, Any], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{'variant': 'table3_init', 'seed': 1} -> the variant's overrides + {'seed': 1}."""
    params = dict(params)
    if VARIANT in params:
        params = {**variants[params.pop(VARIANT)], **params}
    return params


def _check_keys(where: str, data: dict[str, Any], allowed: dict[str, Any]) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    for key, value in data.items():
        if key not in allowed:
            raise ConfigError(
                f"{where}: unknown key '{key}'; allowed: {', '.join(sorted(allowed))}"
            )
        typ = allowed[key]
        ok = isinstance(value, typ) and not (isinstance(value, bool) and typ is not bool)
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            raise ConfigError(f"{where}: key '{key}' expects {names}, got {value!r}")


def _no_duplicates(where: str, values: list[Any]) -> None:
    """Each value once: a repeated seed or grid value would train the same trial twice."""
    dups = [v for i, v in enumerate(values) if v in values[:i]]
    if dups:
        raise ConfigError(f"{where}: {dups[0]!r} is given more than once; list each value once")


def _check_ranges(where: str, data: dict[str, Any], cost: dict[str, Any]) -> None:
    """Numbers Ray would reject only after the sweep started, or silently misread."""
    limits = {
        "max_concurrent": (0, "0 (no limit) or more"),
        "max_failures": (0, "0 (no retry) or more"),
        "checkpoints_to_keep": (1, "1 or more"),
    }
    for key, (low, allowed) in limits.items():
        if key in data and data[key] < low:
            raise ConfigError(f"{where}: key '{key}' must be {allowed}, got {data[key]}")
    if "steps_per_sec" in cost and not cost["steps_per_sec"] > 0:
        raise ConfigError(f"{where}: cost: key 'steps_per_sec' must be > 0")


def _check_config_key(where: str, key: str) -> None:
    if key not in set(field_names()):
        raise ConfigError(f"{where}: '{key}' is not a config key; see `amm train --help-config`")


def _mode(where: str, mode: str) -> str:
    if mode not in ("min", "max"):
        raise ConfigError(f"{where}: key 'mode' must be min or max, got {mode!r}")
    return mode


def _parse_search(where: str, raw: dict[str, Any]) -> Search:
    _check_keys(where, raw, SEARCH_KEYS)
    if raw.get("algorithm", "optuna") != "optuna":
        raise ConfigError(f"{where}: key 'algorithm': only 'optuna' is supported")
    for need in ("metric", "num_samples", "space"):
        if need not in raw:
            raise ConfigError(f"{where}: key '{need}' is required")
    if raw["num_samples"] < 1:
        raise ConfigError(f"{where}: key 'num_samples' must be >= 1")
    space: dict[str, dict[str, Any]] = {}
    if not raw["space"]:
        raise ConfigError(f"{where}: key 'space' is empty; give at least one dimension")
    for key, dim in raw["space"].items():
        w = f"{where}.space.{key}"
        _check_config_key(w, key)
        _check_keys(
            w, dim, {"type": str, "values": list, "low": (int, float), "high": (int, float)}
        )
        kind = dim.get("type")
        if kind not in SPACE_TYPES:
            raise ConfigError(f"{w}: key 'type' must be one of {', '.join(SPACE_TYPES)}")
        if kind == "choice":
            if not dim.get("values"):
                raise ConfigError(f"{w}: 'choice' needs a non-empty 'values' list")
            _no_duplicates(f"{w}: 'values'", dim["values"])
        else:
            if "low" not in dim or "high" not in dim or not dim["low"] < dim["high"]:
                raise ConfigError(f"{w}: '{kind}' needs numbers low < high")
            if kind == "loguniform" and dim["low"] <= 0:
                raise ConfigError(f"{w}: 'loguniform' needs low > 0")
        space[key] = dict(dim)
    return Search(
        metric=raw["metric"],
        mode=_mode(where, raw.get("mode", "min")),
        num_samples=raw["num_samples"],
        seed=raw.get("seed", 0),
        space=space,
    )


def _parse_scheduler(where: str, raw: dict[str, Any]) -> Scheduler:
    _check_keys(where, raw, SCHEDULER_KEYS)
    if raw.get("type", "asha") != "asha":
        raise ConfigError(f"{where}: key 'type': only 'asha' is supported")
    if "metric" not in raw:
        raise ConfigError(f"{where}: key 'metric' is required")
    s = Scheduler(
        metric=raw["metric"],
        mode=_mode(where, raw.get("mode", "min")),
        time_attr=raw.get("time_attr", "step"),
        max_t=raw.get("max_t", 10000),
        grace_period=raw.get("grace_period", 1000),
        reduction_factor=float(raw.get("reduction_factor", 3)),
    )
    if not 0 < s.grace_period <= s.max_t or s.reduction_factor <= 1:
        raise ConfigError(f"{where}: need 0 < grace_period <= max_t and reduction_factor > 1")
    return s


def parse_spec(
    data: dict[str, Any], path: Path, extra_overrides: dict[str, Any] | None = None
) -> SweepSpec:
    """A spec mapping (as read from `path`) -> validated SweepSpec; every trial config is built."""
    where = f"sweep spec '{path}'"
    _check_keys(where, data, TOP_KEYS)
    if "base" not in data:
        raise ConfigError(f"{where}: key 'base' (a preset from configs/) is required")
    base = (path.parent / data["base"]).resolve()
    if not base.is_file():  # an installed spec: its preset is package data (amm_presets)
        from amm_core.presets import find_preset

        base = find_preset(Path(data["base"]).name).resolve()
        base = base if base.is_file() else (path.parent / data["base"]).resolve()
    if not base.is_file():
        raise ConfigError(
            f"{where}: key 'base': '{data['base']}' (resolved {base}) does not "
            "exist; paths are relative to the spec file"
        )
    own = data.get("overrides", {})
    if "seed" in own and "seeds" in data:
        raise ConfigError(f"{where}: give the seed either in 'seeds' or in overrides, not both")
    # a `--set seed=N` from the command line replaces the seed axis with that one seed
    overrides = {**own, **(extra_overrides or {})}
    for key in overrides:
        _check_config_key(f"{where}: overrides", key)
    grid = data.get("grid", {})
    _check_keys(where, {"grid": grid}, {"grid": dict})
    if "grid" in data and not grid:
        raise ConfigError(f"{where}: key 'grid' is empty; give axes (key: [values]) or drop it")
    for key, values in grid.items():
        _check_config_key(f"{where}: grid", key)
        if key == "seed":
            raise ConfigError(f"{where}: grid: use the 'seeds' key for the seed axis")
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"{where}: grid axis '{key}' must be a non-empty list, got {values!r}"
            )
        _no_duplicates(f"{where}: grid axis '{key}'", values)
    variants = data.get("variants", {})
    for vname, vover in variants.items():
        w = f"{where}: variants.{vname}"
        if not isinstance(vover, dict) or not vover:
            raise ConfigError(f"{w}: expected a non-empty mapping of config overrides")
        for key in vover:
            _check_config_key(w, key)
    if "variants" in data and not variants:
        raise ConfigError(f"{where}: key 'variants' is empty")
    seeds = data.get("seeds", 1)
    if isinstance(seeds, int):
        if seeds < 1:
            raise ConfigError(f"{where}: key 'seeds' must be >= 1 (the number of seeds)")
        seeds = list(range(seeds))
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise ConfigError(f"{where}: key 'seeds': a count >= 1 or a non-empty list of integers")
    _no_duplicates(f"{where}: key 'seeds'", seeds)
    if "seed" in overrides:
        seeds = [int(overrides.pop("seed"))]
    res = data.get("resources", {})
    _check_keys(f"{where}: resources", res, RESOURCE_KEYS)
    cpu, gpu = float(res.get("cpu", 1)), float(res.get("gpu", 0))
    if cpu < 0 or gpu < 0 or cpu + gpu == 0:
        raise ConfigError(f"{where}: resources: cpu and gpu must be >= 0 and not both 0")
    if gpu > 1 and not gpu.is_integer():
        raise ConfigError(f"{where}: resources: gpu above 1 must be a whole number, got {gpu}")
    search = _parse_search(f"{where}: search", data["search"]) if "search" in data else None
    if search and (grid or variants or len(seeds) > 1):
        raise ConfigError(
            f"{where}: with 'search', leave 'grid' empty and use one seed "
            "(the search samples the configs)"
        )
    sched = (
        _parse_scheduler(f"{where}: scheduler", data["scheduler"]) if "scheduler" in data else None
    )
    cost = data.get("cost", {})
    _check_keys(f"{where}: cost", cost, COST_KEYS)
    _check_ranges(where, data, cost)
    try:
        base_cfg = load_config(base)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    spec = SweepSpec(
        path=path,
        base=base,
        experiment=data.get("experiment", "amm"),
        overrides=overrides,
        grid=grid,
        seeds=seeds,
        cpu=cpu,
        gpu=gpu,
        search=search,
        scheduler=sched,
        max_concurrent=data.get("max_concurrent", 0),
        max_failures=data.get("max_failures", 2),
        checkpoints_to_keep=data.get("checkpoints_to_keep", 2),
        steps_per_sec=cost.get("steps_per_sec"),
        measured_on=cost.get("measured_on", ""),
        description=data.get("description", ""),
        variants=variants,
        base_config=base_cfg,
    )
    if sched and sched.time_attr == "step":
        longest = max(total_steps(spec.trial_config(c)) for c in spec.cells())
        if sched.max_t <= longest:
            raise ConfigError(
                f"{where}: scheduler: max_t {sched.max_t} <= {longest} training steps; ASHA "
                "would stop every trial before its test evaluation (set max_t above the steps)"
            )
    # build every config now: a bad value in any cell fails here, before anything starts
    try:
        for cell in spec.cells():
            spec.trial_config(cell)
        if search:
            for key, dim in search.space.items():
                for v in dim.get("values") or [dim["low"], dim["high"]]:
                    spec.trial_config({key: v})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return spec


def load_spec(path: str | Path, extra_overrides: dict[str, Any] | None = None) -> SweepSpec:
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"sweep spec '{path}' does not exist")
    try:
        data = yaml.safe_load(read_text_file(path, "sweep spec"))
    except yaml.YAMLError as e:
        raise ConfigError(f"sweep spec '{path}': not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep spec '{path}': expected a mapping at the top level")
    return parse_spec(data, path, extra_overrides)


def run_name(params: dict[str, Any]) -> str:
    """Swept values -> a short run name: 'gp_weight=10,means=learned,seed=3'."""
    if not params:
        return "base"
    parts = []
    for key, v in params.items():
        short = SHORT_NAMES.get(key, key.rsplit(".", 1)[-1])
        val = f"{v:.4g}" if isinstance(v, float) else str(v)
        parts.append(f"{short}={val}")
    return ",".join(parts)
