"""Sweep specs: a YAML file -> a validated `SweepSpec` -> the trial configs and a Tune param space.

A spec names a base preset from `configs/` (a path relative to the spec file), fixed overrides,
grid axes (dotted config keys -> lists of values, crossed), a seed axis, the resources of one
trial, and optionally an Optuna search and an ASHA scheduler. Every config a sweep would train
is built and validated here, before Ray or MLflow is touched, so a bad spec fails with a
`ConfigError` that names the key and nothing starts. The file's keys are the frozen dataclasses
below (`SpecFile` and its sections), read by the same loader as `Config` (`amm_core.loader.build`).

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

import dataclasses
import itertools
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from amm_core.config import Config, apply_overrides, field_names, load_config, total_steps
from amm_core.errors import ConfigError
from amm_core.loader import build, checked, choice, did_you_mean, read_yaml, stored, within
from amm_core.names import VARIANT
from amm_core.presets import base_path
from amm_core.shell import amm

SPACE_TYPES = ("choice", "uniform", "loguniform")
SHORT_NAMES = {"loss.gp_weight": "lambda", "optim.lr": "lr"}  # run-name labels
RESOURCE_KEYS = ("resources.cpu", "resources.gpu")  # accepted by --set besides config keys


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0  # CPUs per trial (also its torch threads)
    gpu: float = 0.0  # GPUs per trial; a fraction shares one GPU


@dataclass(frozen=True)
class Cost:
    steps_per_sec: float | None = checked(None, lambda v: v > 0, "> 0")  # one trial's speed
    measured_on: str = ""  # where that speed was measured (shown by `amm sweep plan`)
    # seconds a trial spends beyond its training steps (evaluations, test set, figures, its
    # start in Ray), measured on a whole sweep; with it the plan's wall time is the sweep's
    trial_overhead_s: float = checked(0.0, lambda v: v >= 0, ">= 0")


@dataclass(frozen=True)
class Search:
    metric: str  # what Optuna (TPE) optimises
    num_samples: int = checked(MISSING, lambda n: n >= 1, ">= 1")  # trials
    space: dict[str, dict[str, Any]] = checked(MISSING, bool, "non-empty (one dimension or more)")
    mode: str = choice("min", "min", "max")
    seed: int = 0  # the sampler's seed
    RETIRED: ClassVar[dict[str, Any]] = {"algorithm": "optuna"}  # Optuna's TPE is the one


@dataclass(frozen=True)
class Dimension:
    """One dimension of search.space: `choice` of values, `uniform` / `loguniform` low..high."""

    type: str = field(metadata={"choices": SPACE_TYPES})
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class Scheduler:
    metric: str  # what ASHA compares
    RETIRED: ClassVar[dict[str, Any]] = {"type": "asha"}  # ASHA is the one scheduler
    mode: str = choice("min", "min", "max")
    time_attr: str = "step"
    max_t: int = 10000
    grace_period: int = 1000
    reduction_factor: float = 3.0


@dataclass(frozen=True)
class SpecFile:
    """The keys of a sweep spec file."""

    base: str = ""  # the preset, relative to the spec file (or a shipped preset's name)
    description: str = ""
    experiment: str = "amm"  # MLflow experiment
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed, dotted config keys
    grid: dict[str, list[Any]] = field(default_factory=dict)  # axes, crossed
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # named override sets
    seeds: int | list[int] = 1  # a count (seeds 0..n-1) or a list
    resources: Resources = field(default_factory=Resources)
    search: Search | None = None
    scheduler: Scheduler | None = None
    max_concurrent: int = checked(0, lambda n: n >= 0, "0 (no limit) or more")
    max_failures: int = checked(2, lambda n: n >= 0, "0 (no retry) or more")
    checkpoints_to_keep: int = checked(2, lambda n: n >= 1, "1 or more")
    cost: Cost = field(default_factory=Cost)


@dataclass(frozen=True)
class SweepSpec(SpecFile):
    """A loaded spec: `base` resolved, `seeds` a list, the command line's overrides merged."""

    seeds: list[int] = field(default_factory=lambda: [0])
    path: Path = Path()
    base_config: Config = field(default_factory=Config)  # the base preset alone

    @property
    def cpu(self) -> float:
        return self.resources.cpu

    @property
    def gpu(self) -> float:
        return self.resources.gpu

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
        """Base preset + fixed overrides (+ the data root) + one trial's swept values."""
        extra = {"data.data_dir": data_dir} if data_dir else {}
        return trial_config(
            {**self.base_config.flat(), **self.overrides, **extra}, params, self.variants
        )


def trial_config(
    base: dict[str, Any], params: dict[str, Any], variants: dict[str, dict[str, Any]] | None = None
) -> Config:
    """One trial's config from plain data: the sweep's base (flat: preset + fixed overrides), then
    its variant's overrides, then its swept values. The driver (`SweepSpec.trial_config`) and the
    Ray workers (which get the flat base, not the spec) both build configs here."""
    with stored():  # a resumed sweep's base may come from an older amm (a note per dropped key)
        return apply_overrides(Config(), {**base, **expand_variant(params, variants or {})})


def expand_variant(params: dict[str, Any], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{'variant': 'table3_init', 'seed': 1} -> the variant's overrides + {'seed': 1}."""
    params = dict(params)
    if VARIANT in params:
        params = {**variants[params.pop(VARIANT)], **params}
    return params


def _no_duplicates(where: str, values: list[Any]) -> None:
    """Each value once: a repeated seed or grid value would train the same trial twice."""
    dups = [v for i, v in enumerate(values) if v in values[:i]]
    if dups:
        raise ConfigError(f"{where}: {dups[0]!r} is given more than once; list each value once")


def _check_config_key(where: str, key: str) -> None:
    names = field_names()
    if key not in names:
        raise ConfigError(
            f"{where}: '{key}' is not a config key{did_you_mean(key, names)}; "
            f"see `{amm()} train --help-config`"
        )


def _check_space(space: dict[str, dict[str, Any]]) -> None:
    for key, raw in space.items():
        where = f"search.space.{key}"
        _check_config_key(where, key)
        dim = build(Dimension, raw, where + ".")
        if dim.type == "choice":
            if not dim.values:
                raise ConfigError(f"{where}: 'choice' needs a non-empty 'values' list")
            _no_duplicates(f"{where}: 'values'", dim.values)
        elif dim.low is None or dim.high is None or not dim.low < dim.high:
            raise ConfigError(f"{where}: '{dim.type}' needs numbers low < high")
        elif dim.type == "loguniform" and dim.low <= 0:
            raise ConfigError(f"{where}: 'loguniform' needs low > 0")


def _base_preset(spec_path: Path, base: str) -> Path:
    if not base:
        raise ConfigError("key 'base' (a preset from configs/) is required")
    return base_path(spec_path, base, "spec file")  # the rule presets' `base:` follows too


def _seeds(given: int | list[int]) -> list[int]:
    if isinstance(given, int) and given < 1:
        raise ConfigError("key 'seeds' must be >= 1 (the number of seeds)")
    seeds = list(range(given)) if isinstance(given, int) else given
    if not seeds:
        raise ConfigError("key 'seeds': a count >= 1 or a non-empty list of integers")
    _no_duplicates("key 'seeds'", seeds)
    return seeds


def _check_grid(data: dict[str, Any], raw: SpecFile) -> None:
    if "grid" in data and not raw.grid:
        raise ConfigError("key 'grid' is empty; give axes (key: [values]) or drop it")
    for key, values in raw.grid.items():
        _check_config_key("grid", key)
        if key == "seed":
            raise ConfigError("grid: use the 'seeds' key for the seed axis")
        if not values:
            raise ConfigError(f"grid axis '{key}' must be a non-empty list, got {values!r}")
        _no_duplicates(f"grid axis '{key}'", values)
    if "variants" in data and not raw.variants:
        raise ConfigError("key 'variants' is empty")
    for name, over in raw.variants.items():
        if not over:
            raise ConfigError(f"variants.{name}: expected a non-empty mapping of config overrides")
        for key in over:
            _check_config_key(f"variants.{name}", key)


def parse_spec(
    data: dict[str, Any], path: Path, extra_overrides: dict[str, Any] | None = None
) -> SweepSpec:
    """A spec mapping (as read from `path`) -> validated SweepSpec; every trial config is built."""
    with within(f"sweep spec '{path}'"):
        return _parse(data, path, extra_overrides or {})


def _parse(data: dict[str, Any], path: Path, extra_overrides: dict[str, Any]) -> SweepSpec:
    raw = build(SpecFile, data)
    base = _base_preset(path, raw.base)
    if "seed" in raw.overrides and "seeds" in data:
        raise ConfigError("give the seed either in 'seeds' or in overrides, not both")
    # a `--set seed=N` from the command line replaces the seed axis with that one seed
    overrides = {**raw.overrides, **extra_overrides}
    # `--set resources.gpu=0` (or resources.cpu=N): the spec's resources, not a config key; the
    # way to run a GPU spec on CPUs without copying it
    res = {k.split(".", 1)[1]: overrides.pop(k) for k in list(overrides) if k in RESOURCE_KEYS}
    for k, v in res.items():
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"resources.{k}: expected a number, got {v!r}")
    raw = dataclasses.replace(raw, resources=dataclasses.replace(raw.resources, **res))
    for key in overrides:
        _check_config_key("overrides", key)
    _check_grid(data, raw)
    seeds = _seeds(raw.seeds)
    if "seed" in overrides:
        seeds = [int(overrides.pop("seed"))]
    cpu, gpu = raw.resources.cpu, raw.resources.gpu
    if cpu < 0 or gpu < 0 or cpu + gpu == 0:
        raise ConfigError("resources: cpu and gpu must be >= 0 and not both 0")
    if gpu > 1 and not gpu.is_integer():
        raise ConfigError(f"resources: gpu above 1 must be a whole number, got {gpu}")
    if raw.search:
        _check_space(raw.search.space)
        if raw.grid or raw.variants or len(seeds) > 1:
            raise ConfigError(
                "with 'search', leave 'grid' empty and use one seed (the search samples the "
                "configs)"
            )
    sched = raw.scheduler
    if sched and (not 0 < sched.grace_period <= sched.max_t or sched.reduction_factor <= 1):
        raise ConfigError("scheduler: need 0 < grace_period <= max_t and reduction_factor > 1")
    given = {f.name: getattr(raw, f.name) for f in fields(SpecFile)}
    spec = SweepSpec(
        **{**given, "base": str(base), "seeds": seeds, "overrides": overrides},
        path=path,
        base_config=load_config(base),
    )
    if sched and sched.time_attr == "step":
        longest = max(total_steps(spec.trial_config(c)) for c in spec.cells())
        if sched.max_t <= longest:
            raise ConfigError(
                f"scheduler: max_t {sched.max_t} <= {longest} training steps; ASHA would stop "
                "every trial before its test evaluation (set max_t above the steps)"
            )
    # build every config now: a bad value in any cell fails here, before anything starts
    for cell in spec.cells():
        spec.trial_config(cell)
    for key, dim in raw.search.space.items() if raw.search else ():
        for v in dim.get("values") or [dim["low"], dim["high"]]:
            spec.trial_config({key: v})
    return spec


def load_spec(path: str | Path, extra_overrides: dict[str, Any] | None = None) -> SweepSpec:
    path = Path(path).resolve()
    return parse_spec(read_yaml(path, "sweep spec"), path, extra_overrides)


def cpu_route(spec: SweepSpec) -> str:
    """The flags that run a GPU spec on CPUs: '--set resources.gpu=0' (and a CPU per trial when
    the spec asks for none)."""
    flags = "--set resources.gpu=0"
    return flags if spec.cpu >= 1 else f"{flags} --set resources.cpu=1"


def spec_arg(spec: SweepSpec) -> str:
    """The spec's path as a person types it here: relative to the current folder when inside."""
    import shlex

    try:
        return shlex.quote(str(spec.path.relative_to(Path.cwd())))
    except ValueError:
        return shlex.quote(str(spec.path))


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
