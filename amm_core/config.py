"""Run configuration: frozen dataclasses, one field per choice of the paper and of the spec.

Every field has a default and a comment. `load_config` builds a `Config` from nested dicts or YAML
and rejects unknown keys, wrong types and values outside a field's choices with a `ConfigError`
that names the dotted key and what is allowed. Overrides use dotted keys (`loss.gp_weight=10`),
the same keys that sweeps use as axes and MLflow logs as params.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amm_core.errors import ConfigError
from amm_core.fs import read_text_file

# C x H x W of each data.dataset's images, and the shapes each model.arch takes (its tables in
# amm_core/networks.py; tiny has a variant for each)
DATASET_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "svhn": (3, 32, 32)}
ARCH_SHAPES = {"mnist": [(1, 28, 28)], "svhn": [(3, 32, 32)], "tiny": [(1, 28, 28), (3, 32, 32)]}
# official training-set sizes, before the validation split; data.svhn_extra adds SVHN_EXTRA
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "svhn": 73257}
SVHN_EXTRA = 531131


def _choice(default: str, *choices: str) -> Any:
    assert default in choices
    return field(default=default, metadata={"choices": choices})


@contextlib.contextmanager
def within(where: str) -> Iterator[None]:
    """Prefix a ConfigError raised inside with where the input came from ("config file 'x': ")."""
    try:
        yield
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def checked(default: Any, ok: Any, allowed: str) -> Any:
    """A field whose given value must pass `ok` ("key 'k' must be <allowed>, got v" if not)."""
    return field(default=default, metadata={"check": (ok, allowed)})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _choice("mnist", "mnist", "fashion_mnist", "svhn")  # which image set
    data_dir: str = ""  # data root; "" -> --data-dir, else $AMM_DATA_DIR, else ./data
    download: bool = False  # fetch through torchvision when missing (needs network)
    val_size: int = 5000  # training examples held out for validation (paper: 5,000 on MNIST)
    labelled: int = 0  # SAMM: labelled training examples (0 = unsupervised AMM; paper: 1,000)
    stratified: bool = False  # SAMM: draw the labelled subset with equal counts per class
    svhn_extra: bool = False  # SVHN: add extra_32x32.mat to the training set
    train_subset: int = 0  # use only the first N training examples after the split (0 = all)
    device_resident: bool = True  # hold the uint8 dataset on the training device


@dataclass(frozen=True)
class ModelConfig:
    arch: str = _choice("mnist", "mnist", "svhn", "tiny")  # network tables (spec section 3)
    num_components: int = 10  # K, mixture components
    latent_dim: int = 64  # L, dimensions of z (paper: 64 on MNIST, 32 for SVHN grid18)
    inference: str = _choice("q2", "q2", "q1", "independent")  # q2: eq. 7, q1: eq. 6, eq. 15/16
    dropout: float = -1.0  # dropout rate; -1 = the architecture's own (0.2 MNIST, 0 SVHN enc/dec)
    dec_dropout: float = -1.0  # decoder dropout only; -1 = as model.dropout (see docs/results.md)
    enc_dropout: float = -1.0  # encoder dropout only; -1 = as model.dropout
    disc_dropout: float = -1.0  # discriminator dropout only; -1 = as model.dropout
    dropout_impl: str = _choice("bytes", "bytes", "torch")  # masks from random bytes or bernoulli
    y_noise: str = _choice("kendall", "kendall", "none", "gumbel")  # sampled y~ (eq. 8-9 = kendall)
    gumbel_tau: float = 1.0  # temperature of y_noise=gumbel
    dec_out_bias: str = _choice("zero", "zero", "logodds")  # decoder output bias at init
    disc_join: str = _choice("ali", "ali")  # D joins x/y/z branches by concat + 1x1 layers (ALI)


@dataclass(frozen=True)
class PriorConfig:
    # mu_k; `zero` puts every mean at 0 (p(z) independent of y: eq. 16 with `independent`)
    means: str = _choice("learned", "learned", "grid18", "table3", "file", "random", "zero")
    init_means: str = _choice("none", "none", "grid18", "table3", "file", "random")  # learned: init
    means_file: str = ""  # CSV or NPY, K x L (or K x fewer columns, zero-padded), for `file`
    random_scale: float = 3.0  # `random`: mu_k ~ N(0, scale^2)
    random_seed: int = 0  # `random`: its own seed, independent of the run seed
    learn_sigma: bool = False  # learn sigma_k (eq. 12) instead of unit variance
    py: str = _choice("uniform", "uniform", "class_frequencies")  # p(y)


@dataclass(frozen=True)
class LossConfig:
    gp_weight: float = 10.0  # lambda of eq. 17 (paper: 10 MNIST, 0.01 SVHN)
    # eq. 17's norm: joint over (x, y, z); per_input: one (||grad_v D|| - 1)^2 per v in x, y, z
    penalty: str = _choice("joint", "joint", "per_input", "x_only", "roth", "none")
    gp_every: int = 1  # penalty on every N-th D step, weighted N (lazy regularisation; 1 = paper)
    # beyond the paper (docs/method.md, "extra terms"); 0 turns a term off
    info_weight: float = 0.0  # CE of G_y(G_x(y, z)) against y on synthesis tuples (ClusterGAN)
    cluster_weight: float = 0.0  # augmentation-consistency + balance term on G_y(x) (IMSAT)
    cluster_balance: float = 1.0  # weight of -H(mean_batch p(y|x)) inside the cluster term
    cluster_entropy: float = 0.0  # weight of mean H(p(y|x)) inside the cluster term
    aug_shift: int = 2  # cluster term: random translation of x up to N pixels
    aug_rotate: float = 10.0  # cluster term: random rotation up to N degrees


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 2e-4  # Adam learning rate, all networks (paper)
    beta1: float = 0.5  # Adam beta1 (paper)
    beta2: float = 0.999  # Adam beta2
    lr_d: float = 0.0  # discriminator learning rate; 0 = optim.lr
    lr_g: float = 0.0  # generator (encoder, decoder, prior) learning rate; 0 = optim.lr


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 100  # unlabelled batch (paper silent; 100 as ALI)
    labelled_batch_size: int = 100  # SAMM labelled batch
    steps: int = 0  # training steps; 0 -> use epochs
    epochs: float = 25.0  # passes over the training split when steps = 0
    max_minutes: float = 0.0  # wall-clock budget: then evaluate on test and end (0 = none)
    eval_every: int = 500  # validation every N steps (also a checkpoint)
    d_steps: int = 1  # discriminator updates per generator update (each on the step's batch)
    eval_batch_size: int = 1000  # batch for evaluation forward passes
    log_every: int = 50  # training-loss report every N steps
    keep_checkpoints: int = 2  # checkpoints kept on disk (newest)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    amp: str = _choice("none", "none", "bf16")  # bf16 autocast of the step (docs/performance.md)
    compile: bool = False  # torch.compile encoder and decoder (D needs double backward: eager)
    cuda_graph: bool = True  # on CUDA: capture the whole step once, replay it (no effect on CPU)
    figures: bool = True  # write the per-run figures at the end
    tsne_points: int = 1000  # test points in the t-SNE figure (its cost grows with them)


@dataclass(frozen=True)
class Config:
    seed: int = 0  # the one seed; every RNG of the run derives from it
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, e.g. {"loss.gp_weight": 10.0, "seed": 0}."""
        return flatten(self.to_dict())

    def hash(self) -> str:
        """Short stable hash of the resolved config (ignores where the data lives)."""
        d = self.flat()
        d.pop("data.data_dir", None)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **flat_overrides: Any) -> Config:
        return apply_overrides(self, flat_overrides)


def total_steps(cfg: Config, n_train: int | None = None) -> int:
    """Training steps of a run: train.steps, else train.epochs passes over a train split of
    n_train examples (by default the official size less data.val_size, at most
    data.train_subset: what `amm_core.data.load_splits` leaves, known without the files)."""
    t, d = cfg.train, cfg.data
    if t.steps > 0:
        return t.steps
    if n_train is None:
        n_train = TRAIN_SIZES[d.dataset] - d.val_size
        n_train += SVHN_EXTRA if d.dataset == "svhn" and d.svhn_extra else 0
        n_train = min(n_train, d.train_subset) if d.train_subset else n_train
    return max(1, math.ceil(t.epochs * n_train / t.batch_size))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"key '{key}': '{p}' is both a value and a section")
        node[parts[-1]] = v
    return out


def did_you_mean(key: str, known: list[str], prefix: str = "") -> str:
    """' (did you mean loss.gp_weight?)' for a close match (difflib), else ''."""
    import difflib

    close = difflib.get_close_matches(key, known, n=2, cutoff=0.75)
    return f" (did you mean {' or '.join(prefix + c for c in close)}?)" if close else ""


def field_names() -> list[str]:
    """All dotted keys a config accepts."""
    return list(Config().flat().keys())


# numbers in exponent form without a dot ('1e-4', '2E5'), which YAML 1.1 leaves as strings
_YAML11_FLOAT = re.compile(r"^[-+]?[0-9]+[eE][-+]?[0-9]+$")
_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_WORDS |= {list: "a list", dict: "a mapping"}


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """value checked against a field type (scalars, list[T], dict[str, T], unions, dataclasses)."""
    origin, args = typing.get_origin(typ) or typ, typing.get_args(typ)
    if typ is Any:
        return value
    if dataclasses.is_dataclass(typ):
        return build(typ, value, key + ".")
    if origin is types.UnionType:
        arms = [a for a in args if a is not type(None)]
        if value is None and len(arms) < len(args):
            return None
        if len(arms) == 1:
            return _coerce(key, value, arms[0])
        for arm in arms:
            with contextlib.suppress(ConfigError):
                return _coerce(key, value, arm)
        words = " or ".join(_WORDS[typing.get_origin(a) or a] for a in arms)
        raise ConfigError(f"key '{key}': expected {words}, got {value!r}")
    if typ is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if typ is float and isinstance(value, str) and _YAML11_FLOAT.match(value):
        value = float(value)  # '1e-4': YAML 1.1 (PyYAML) reads it as a string
    allowed = (int, float) if typ is float else origin
    if isinstance(value, bool) is not (typ is bool) or not isinstance(value, allowed):
        raise ConfigError(f"key '{key}': expected {_WORDS[origin]}, got {value!r}")
    if origin is list and args:
        return [_coerce(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
    if origin is dict and args:
        return {k: _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    return float(value) if typ is float else value


def build(cls: type, data: Any, prefix: str = "") -> Any:
    """A mapping -> a frozen dataclass: unknown keys (with "did you mean"), missing required
    keys, wrong types, values outside a field's choices or checks, each named by dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"key '{prefix.rstrip('.') or '<root>'}': expected a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        hint = did_you_mean(unknown[0], list(fields), prefix)
        raise ConfigError(
            f"unknown key '{prefix}{unknown[0]}'{hint}; "
            f"allowed under '{prefix.rstrip('.') or '<root>'}': {', '.join(fields)}"
        )
    for name, f in fields.items():
        if name not in data and f.default is f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"key '{prefix}{name}' is required")
    kwargs = {}
    for name, value in data.items():
        key, meta = prefix + name, fields[name].metadata
        value = kwargs[name] = _coerce(key, value, hints[name])
        choices = meta.get("choices")
        if choices and value not in choices:
            raise ConfigError(
                f"key '{key}': {value!r} is not allowed; allowed: {', '.join(map(str, choices))}"
            )
        ok, allowed = meta.get("check", (None, ""))
        if ok and value is not None and not ok(value):
            raise ConfigError(f"key '{key}' must be {allowed}, got {value!r}")
    return cls(**kwargs)


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _validate(cfg: Config) -> Config:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    m, t, p, d = cfg.model, cfg.train, cfg.prior, cfg.data
    have = DATASET_SHAPES[d.dataset]
    fits = [a for a, shapes in ARCH_SHAPES.items() if have in shapes]
    need(
        m.arch in fits,
        f"key 'model.arch': {m.arch!r} takes {_shape(ARCH_SHAPES[m.arch][0])} images but "
        f"data.dataset {d.dataset!r} has {_shape(have)}; allowed: {', '.join(fits)}",
    )
    need(m.num_components >= 2, "key 'model.num_components': must be >= 2")
    need(m.latent_dim >= 1, "key 'model.latent_dim': must be >= 1")
    need(m.dropout == -1.0 or 0.0 <= m.dropout < 1.0, "key 'model.dropout': -1 or in [0, 1)")
    need(
        m.dec_dropout == -1.0 or 0.0 <= m.dec_dropout < 1.0,
        "key 'model.dec_dropout': -1 or in [0, 1)",
    )
    for key in ("enc_dropout", "disc_dropout"):
        v = getattr(m, key)
        need(v == -1.0 or 0.0 <= v < 1.0, f"key 'model.{key}': -1 or in [0, 1)")
    need(m.gumbel_tau > 0, "key 'model.gumbel_tau': must be > 0")
    lo = cfg.loss
    need(lo.gp_every >= 1, "key 'loss.gp_every': must be >= 1")
    for key in ("info_weight", "cluster_weight", "cluster_balance", "cluster_entropy"):
        need(getattr(lo, key) >= 0, f"key 'loss.{key}': must be >= 0")
    need(lo.aug_shift >= 0, "key 'loss.aug_shift': must be >= 0")
    need(0 <= lo.aug_rotate <= 180, "key 'loss.aug_rotate': must be in [0, 180]")
    need(t.d_steps >= 1, "key 'train.d_steps': must be >= 1")
    need(cfg.optim.lr_d >= 0 and cfg.optim.lr_g >= 0, "keys 'optim.lr_d', 'optim.lr_g': >= 0")
    need(t.batch_size >= 2, "key 'train.batch_size': must be >= 2")
    need(t.labelled_batch_size >= 2, "key 'train.labelled_batch_size': must be >= 2")
    need(t.steps > 0 or t.epochs > 0, "key 'train.steps' or 'train.epochs': one must be > 0")
    need(t.steps >= 0, "key 'train.steps': must be >= 0")
    need(t.max_minutes >= 0, "key 'train.max_minutes': must be >= 0 (0 = no budget)")
    need(t.eval_every >= 1, "key 'train.eval_every': must be >= 1")
    need(t.log_every >= 1, "key 'train.log_every': must be >= 1")
    need(t.keep_checkpoints >= 1, "key 'train.keep_checkpoints': must be >= 1")
    need(t.tsne_points >= 50, "key 'train.tsne_points': must be >= 50")
    need(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        f"key 'train.device': {t.device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N",
    )
    need(cfg.loss.gp_weight >= 0, "key 'loss.gp_weight': must be >= 0")
    need(cfg.optim.lr > 0, "key 'optim.lr': must be > 0")
    need(0 <= cfg.optim.beta1 < 1, "key 'optim.beta1': must be in [0, 1)")
    need(0 <= cfg.optim.beta2 < 1, "key 'optim.beta2': must be in [0, 1)")
    need(d.val_size >= 0 and d.labelled >= 0, "keys 'data.val_size', 'data.labelled': >= 0")
    need(d.train_subset >= 0, "key 'data.train_subset': must be >= 0")
    need(
        p.means != "file" and p.init_means != "file" or bool(p.means_file),
        "key 'prior.means_file': required when prior.means or prior.init_means is 'file'",
    )
    need(
        p.init_means == "none" or p.means == "learned",
        f"key 'prior.init_means': {p.init_means!r} needs prior.means 'learned' "
        f"(got {p.means!r}); allowed with fixed means: none",
    )
    need(
        p.py == "uniform" or d.labelled > 0,
        "key 'prior.py': 'class_frequencies' needs labels (data.labelled > 0); allowed: uniform",
    )
    need(p.random_scale > 0, "key 'prior.random_scale': must be > 0")
    return cfg


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Nested dict (as in YAML presets) -> validated Config. Missing keys take defaults."""
    return _validate(build(Config, data or {}))


def parse_override(item: str) -> tuple[str, Any]:
    """'loss.gp_weight=10' -> ('loss.gp_weight', 10). Values are parsed as YAML scalars."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value, e.g. loss.gp_weight=10")
    key, raw = item.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from None
    if value is None:
        value = ""
    return key, value


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Dotted-key overrides on a Config; unknown keys are rejected by name."""
    known = field_names()
    for key in overrides:
        if key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            hint = f" (did you mean {', '.join(close)}?)" if close else did_you_mean(key, known)
            raise ConfigError(f"unknown key '{key}'{hint}; see `amm train --help-config`")
    flat = cfg.flat()
    flat.update(overrides)
    return config_from_dict(unflatten(flat))


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file: {}), else a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"{what} '{path}' does not exist")
    try:
        data = yaml.safe_load(read_text_file(path, what)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} '{path}': not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} '{path}': expected a mapping at the top level")
    return data


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """YAML preset (or None for defaults) plus `key=value` overrides -> validated Config."""
    cfg = Config()
    if path is not None:
        data = read_yaml(Path(path), "config file")
        with within(f"config file '{path}'"):
            cfg = config_from_dict(data)
    if overrides:
        if isinstance(overrides, list):
            overrides = dict(parse_override(o) for o in overrides)
        cfg = apply_overrides(cfg, overrides)
    return cfg


def describe() -> str:
    """Every key with its default (and choices), for `amm train --help-config`."""
    lines = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                walk(hints[f.name], prefix + f.name + ".")
                continue
            choices = f.metadata.get("choices")
            extra = f"  (one of: {', '.join(choices)})" if choices else ""
            lines.append(f"{prefix}{f.name} = {f.default!r}{extra}")

    walk(Config, "")
    return "\n".join(lines)
