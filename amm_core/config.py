"""Run configuration: frozen dataclasses, one field per choice of the paper and of the spec.

Every field has a default and a comment. `load_config` builds a `Config` from nested dicts or YAML
(a preset and the chain of presets its `base:` key names, `read_preset`) through
`amm_core.loader` and checks the rules across keys (`_validate`), each failure a
`ConfigError` that names the dotted key and what is allowed. Overrides use dotted keys
(`loss.gp_weight=10`), the same keys that sweeps use as axes and MLflow logs as params.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from amm_core import loader, presets
from amm_core.errors import ConfigError
from amm_core.loader import at_least, checked, choice, did_you_mean
from amm_core.model.archs import ARCH_SHAPES
from amm_core.shell import amm

# C x H x W of each data.dataset's images
DATASET_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "svhn": (3, 32, 32)}
# official training-set sizes, before the validation split; data.svhn_extra adds SVHN_EXTRA
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "svhn": 73257}
SVHN_EXTRA = 531131


_RATE = "null (the architecture's) or in [0, 1)"
_LR = "null (optim.lr) or > 0"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = choice("mnist", "mnist", "fashion_mnist", "svhn")  # which image set
    data_dir: str = ""  # data root; "" -> --data-dir, else $AMM_DATA_DIR, else ./data
    download: bool = False  # fetch through torchvision when missing (needs network)
    val_size: int = at_least(
        5000, 0
    )  # training examples held out for validation (paper: 5,000 on MNIST)
    labelled: int = at_least(
        0, 0
    )  # SAMM: labelled training examples (0 = unsupervised AMM; paper: 1,000)
    stratified: bool = False  # SAMM: draw the labelled subset with equal counts per class
    svhn_extra: bool = False  # SVHN: add extra_32x32.mat to the training set
    train_subset: int = at_least(
        0, 0
    )  # use only the first N training examples after the split (0 = all)
    device_resident: bool = True  # hold the uint8 dataset on the training device

    @property
    def supervised(self) -> bool:  # SAMM: some training labels are given
        return self.labelled > 0


@dataclass(frozen=True)
class ModelConfig:
    arch: str = choice("mnist", "mnist", "svhn", "tiny")  # network tables (docs/method.md sec. 3)
    num_components: int = at_least(10, 2)  # K, mixture components
    latent_dim: int = at_least(64, 1)  # L, dimensions of z (paper: 64 on MNIST, 32 for SVHN grid18)
    inference: str = choice("q2", "q2", "q1", "independent")  # q2: eq. 7, q1: eq. 6, eq. 15/16
    # dropout rates in [0, 1); null = the architecture's own (0.2 MNIST, 0 SVHN enc/dec), and
    # per network null = as model.dropout (see docs/results.md); -1 (older files) reads as null
    dropout: float | None = checked(None, lambda v: v == -1 or 0 <= v < 1, _RATE)
    dec_dropout: float | None = checked(None, lambda v: v == -1 or 0 <= v < 1, _RATE)  # decoder
    enc_dropout: float | None = checked(None, lambda v: v == -1 or 0 <= v < 1, _RATE)  # encoder
    disc_dropout: float | None = checked(None, lambda v: v == -1 or 0 <= v < 1, _RATE)  # D
    dropout_impl: str = choice("bytes", "bytes", "torch")  # masks from random bytes or bernoulli
    y_noise: str = choice("kendall", "kendall", "none", "gumbel")  # sampled y~ (eq. 8-9 = kendall)
    gumbel_tau: float = checked(1.0, lambda v: v > 0, "> 0")  # temperature of y_noise=gumbel
    # sampled z~: learned = mu_z + sigma_z * eps (eq. 3, 10); none = mu_z (a deterministic z
    # encoder, as BiGAN); docs/method.md section 1
    z_noise: str = choice("learned", "learned", "none")
    dec_out_bias: str = choice("zero", "zero", "logodds")  # decoder output bias at init


@dataclass(frozen=True)
class PriorConfig:
    # mu_k; `zero` puts every mean at 0 (p(z) independent of y: eq. 16 with `independent`)
    means: str = choice("learned", "learned", "grid18", "table3", "file", "random", "zero")
    init_means: str = choice("none", "none", "grid18", "table3", "file", "random")  # learned: init
    means_file: str = ""  # CSV or NPY, K x L (or K x fewer columns, zero-padded), for `file`
    random_scale: float = checked(3.0, lambda v: v > 0, "> 0")  # `random`: mu_k ~ N(0, scale^2)
    random_seed: int = 0  # `random`: its own seed, independent of the run seed
    learn_sigma: bool = False  # learn sigma_k (eq. 12) instead of unit variance
    py: str = choice("uniform", "uniform", "class_frequencies")  # p(y)


@dataclass(frozen=True)
class LossConfig:
    gp_weight: float = at_least(10.0, 0)  # lambda of eq. 17 (paper: 10 MNIST, 0.01 SVHN)
    # eq. 17's norm: joint over (x, y, z); per_input: one (||grad_v D|| - 1)^2 per v in x, y, z
    penalty: str = choice("joint", "joint", "per_input", "x_only", "roth", "none")
    # penalty on every N-th D step, weighted N (lazy regularisation, docs/method.md); 1 = the
    # paper's every step; 4 saves about 15 % of a CPU step, validation error the same within
    # seed noise (docs/performance.md)
    gp_every: int = at_least(4, 1)
    # the terms beyond the paper on every N-th generator step, weighted N (lazy, as gp_every);
    # 1 = every step (docs/performance.md)
    extra_every: int = at_least(1, 1)
    # the extra terms' own forward passes (the cycles' encoder, the x-cycle's decoder, the
    # clustering term's augmented encoder pass) on the first N images of the batch; 0 = all
    extra_batch: int = at_least(0, 0)
    # the cycles' passes alone (x-cycle decoder, y- and z-cycles' encoder) on the first N images;
    # 0 = as extra_batch. The clustering term keeps its images: fewer split more starts
    # (docs/results.md, "Faster settings")
    cycle_batch: int = at_least(0, 0)
    # beyond the paper (docs/method.md, "extra terms"); 0 turns a term off
    info_weight: float = at_least(0.0, 0)  # CE of G_y(G_x(y, z)) vs y on synthesis (ClusterGAN)
    cluster_weight: float = at_least(0.0, 0)  # augmentation consistency + balance on G_y (IMSAT)
    recon_weight: float = at_least(0.0, 0)  # ALICE x-cycle: BCE of G_x(G_y(x), G_z(x)) vs x
    latent_weight: float = at_least(0.0, 0)  # z-cycle: squared error of G_z(G_x(y, z)) vs z
    centroid_weight: float = at_least(0.0, 0)  # soft centroid of z~ per component vs mu_k (eq. 18)
    bayes_weight: float = at_least(0.0, 0)  # CE of eq. 18's posterior on z~ vs G_y's assignment
    label_weight: float = at_least(0.0, 0)  # SAMM: CE of G_y(x_l) against y_l, labelled batch
    cluster_balance: float = at_least(1.0, 0)  # weight of -H(mean_batch p(y|x)), cluster term
    cluster_entropy: float = at_least(0.0, 0)  # weight of mean H(p(y|x)) inside the cluster term
    aug_shift: int = at_least(2, 0)  # cluster term: random translation of x up to N pixels
    aug_rotate: float = checked(10.0, lambda v: 0 <= v <= 180, "in [0, 180]")  # rotation, degrees
    aug_shear: float = checked(0.0, lambda v: 0 <= v <= 1, "in [0, 1]")  # horizontal shear factor
    # cluster term: a second consistency on x + r_adv, the virtual adversarial perturbation of
    # L2 norm aug_vat (pixels in [0, 1]) that changes p(y|x) most (IMSAT's VAT); 0 = off
    aug_vat: float = at_least(0.0, 0)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = checked(2e-4, lambda v: v > 0, "> 0")  # Adam learning rate, all networks (paper)
    beta1: float = checked(0.5, lambda v: 0 <= v < 1, "in [0, 1)")  # Adam beta1 (paper)
    beta2: float = checked(0.999, lambda v: 0 <= v < 1, "in [0, 1)")  # Adam beta2
    # learning rates of D and of the encoder, decoder and prior; null = optim.lr (0 in older
    # files reads as null)
    lr_d: float | None = checked(None, lambda v: v >= 0, _LR)
    lr_g: float | None = checked(None, lambda v: v >= 0, _LR)


@dataclass(frozen=True)
class TrainConfig:
    # removed keys -> the one value a file may still give them (loader.retired); the start of
    # the restart phase is now the loop's argument (run(start=...))
    RETIRED: ClassVar[dict[str, Any]] = {"start": 0}
    batch_size: int = at_least(100, 2)  # unlabelled batch (paper silent; 100 as ALI)
    labelled_batch_size: int = at_least(100, 2)  # SAMM labelled batch
    steps: int = at_least(0, 0)  # training steps; 0 -> use epochs
    epochs: float = 25.0  # passes over the training split when steps = 0
    max_minutes: float = at_least(0.0, 0)  # wall-clock budget, then test and end (0 = none)
    eval_every: int = at_least(500, 1)  # validation every N steps (also a checkpoint)
    # end the run after N evaluations without val/error_gy improving on its best by at least
    # plateau_delta (absolute fraction; 0 = any drop), as a finished run (0 = off)
    stop_on_plateau: int = at_least(0, 0)
    plateau_delta: float = checked(0.0, lambda v: 0 <= v < 1, "in [0, 1)")
    # restart phase (docs/method.md section 9): train N starts for restart_steps each, go on with
    # the one whose clustering term (loss/cluster, no labels) is lowest at its last evaluation;
    # 1 = no phase. Which start a run is (its weights' and batches' streams) is the phase's
    # argument to `amm_core.run.train.run`, not a setting.
    restarts: int = at_least(1, 1)  # starts trained before choosing one (1 = no phase)
    restart_steps: int = at_least(1000, 1)  # steps of each start (multiple of eval_every)
    d_steps: int = at_least(1, 1)  # D updates per G update (each on the step's batch)
    eval_batch_size: int = 1000  # batch for evaluation forward passes
    log_every: int = at_least(50, 1)  # training-loss report every N steps
    keep_checkpoints: int = at_least(2, 1)  # checkpoints kept on disk (newest)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    amp: str = choice("none", "none", "bf16")  # bf16 autocast of the step (docs/performance.md)
    compile: bool = False  # torch.compile encoder and decoder (D needs double backward: eager)
    cuda_graph: bool = True  # on CUDA: capture the whole step once, replay it (no effect on CPU)
    # conv layout; auto = channels_last on the CPU (no oneDNN reorders), contiguous on CUDA
    memory_format: str = choice("auto", "auto", "channels_last", "contiguous")
    figures: bool = True  # write the per-run figures at the end
    # gen/* metrics at each evaluation and at the end (the evaluation classifier of
    # amm_core/run/classifier.py, trained once per dataset and cached; docs/method.md section 8)
    gen_metrics: bool = True
    tsne_points: int = at_least(1000, 50)  # test points in the t-SNE figure (cost grows with them)


# keys added to the config after runs were stored: left out of Config.hash at their default
HASH_OMIT_AT_DEFAULT: dict[str, Any] = {
    "loss.cycle_batch": 0,
    "loss.aug_shear": 0.0,
    "loss.aug_vat": 0.0,
}
# keys whose "not set" is None (YAML null) today and was this value when runs were stored: the
# value reads as None, and Config.stored_flat (the hash, the tracked params) writes None as it
LEGACY_UNSET: dict[str, float] = {
    "model.dropout": -1.0,
    "model.dec_dropout": -1.0,
    "model.enc_dropout": -1.0,
    "model.disc_dropout": -1.0,
    "optim.lr_d": 0.0,
    "optim.lr_g": 0.0,
}

# keys this version no longer has, with the one value every stored run's hash and params hold
# (Config.stored_flat writes them, so those runs keep their hashes and tables their columns)
STORED_ONLY: dict[str, Any] = {f"train.{k}": v for k, v in TrainConfig.RETIRED.items()}


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
        return loader.flatten(self.to_dict())

    def stored_flat(self) -> dict[str, Any]:
        """`flat()` as stored runs hold it (the hash, MLflow's params): None of a
        `LEGACY_UNSET` key written as the value that meant it then, and the `STORED_ONLY` keys."""
        d = self.flat()
        d = {k: LEGACY_UNSET[k] if v is None and k in LEGACY_UNSET else v for k, v in d.items()}
        return {**d, **STORED_ONLY}

    def hash(self) -> str:
        """Short stable hash of the resolved config (ignores where the data lives, and keys
        added after runs were stored while they hold their default, so those runs keep theirs;
        None of a key that had a sentinel hashed as that sentinel)."""
        d = self.stored_flat()
        d.pop("data.data_dir", None)
        for key, default in HASH_OMIT_AT_DEFAULT.items():
            if d.get(key) == default:
                d.pop(key)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def replace(self, **flat_overrides: Any) -> Config:
        return apply_overrides(self, flat_overrides)


def total_steps(cfg: Config, n_train: int | None = None) -> int:
    """Training steps of a run: train.steps, else train.epochs passes over a train split of
    n_train examples (by default the official size less data.val_size, at most
    data.train_subset: what `amm_core.data.splits.load_splits` leaves, known without the files)."""
    t, d = cfg.train, cfg.data
    if t.steps > 0:
        return t.steps
    if n_train is None:
        n_train = TRAIN_SIZES[d.dataset] - d.val_size
        n_train += SVHN_EXTRA if d.dataset == "svhn" and d.svhn_extra else 0
        n_train = min(n_train, d.train_subset) if d.train_subset else n_train
    return max(1, math.ceil(t.epochs * n_train / t.batch_size))


def phase_steps(cfg: Config) -> int:
    """Steps the restart phase trains besides the run's own: its other starts (0 without it)."""
    return (cfg.train.restarts - 1) * cfg.train.restart_steps  # restarts >= 1 (validated)


def trained_steps(cfg: Config, n_train: int | None = None) -> int:
    """Steps a run trains in all: `total_steps` and the restart phase's other starts (what a
    plan's cost counts)."""
    return total_steps(cfg, n_train) + phase_steps(cfg)


def field_names() -> list[str]:
    """All dotted keys a config accepts."""
    return list(Config().flat().keys())


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
    need(t.steps > 0 or t.epochs > 0, "key 'train.steps' or 'train.epochs': one must be > 0")
    need(
        t.device == "auto" or t.device == "cpu" or t.device.startswith("cuda"),
        f"key 'train.device': {t.device!r} is not allowed; allowed: auto, cpu, cuda, cuda:N",
    )
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
        p.py == "uniform" or d.supervised,
        "key 'prior.py': 'class_frequencies' needs labels (data.labelled > 0); allowed: uniform",
    )
    need(
        cfg.loss.label_weight == 0 or d.supervised,
        "key 'loss.label_weight': needs labels (data.labelled > 0); allowed without labels: 0",
    )
    need(
        t.restarts == 1 or cfg.loss.cluster_weight > 0,
        f"key 'train.restarts': {t.restarts} chooses by the clustering term, which "
        "loss.cluster_weight 0 turns off; allowed without it: 1",
    )
    need(
        t.restarts == 1 or t.restart_steps % t.eval_every == 0,
        f"key 'train.restart_steps': {t.restart_steps} must be a multiple of train.eval_every "
        f"({t.eval_every}), so that each start ends on an evaluation",
    )
    need(
        t.restarts == 1 or t.steps == 0 or t.restart_steps < t.steps,
        f"key 'train.restart_steps': {t.restart_steps} must be below train.steps ({t.steps})",
    )
    return cfg


def _unset_legacy(cfg: Config) -> Config:
    """The sentinels of older files and stored configs (`LEGACY_UNSET`) read as None."""
    for key, old in LEGACY_UNSET.items():
        section, name = key.split(".")
        part = getattr(cfg, section)
        if getattr(part, name) == old:
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(part, **{name: None})})
    return cfg


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Nested dict (as in YAML presets) -> validated Config. Missing keys take defaults."""
    return _validate(_unset_legacy(loader.build(Config, data or {})))


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Dotted-key overrides on a Config; unknown keys are rejected by name."""
    known = field_names()
    for key in overrides:
        if key not in known and not loader.STORED.get():  # stored: dropped by the loader
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            hint = f" (did you mean {', '.join(close)}?)" if close else did_you_mean(key, known)
            raise ConfigError(f"unknown key '{key}'{hint}; see `{amm()} train --help-config`")
    flat = cfg.flat()
    flat.update(overrides)
    return config_from_dict(loader.unflatten(flat))


def read_preset(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset file as one nested mapping: its `base:` preset's (read the same way, so bases
    chain) with the file's own keys on top (`loader.merge`). Each file's own keys are checked
    where they are written, so a bad key names its file; a base that leads back to a file of the
    chain is a ConfigError naming the chain's files."""
    data = loader.read_yaml(path, "config file")
    with loader.within(f"config file '{path}'"):
        base = data.pop("base", None)
        loader.build(Config, data)  # each key and value; the rules across keys: on the whole
        if base is None:
            return data
        parent = presets.base_path(path, base, "preset file")
        chain = (*chain, path.resolve())
        if parent in chain:
            files = " -> ".join(str(p) for p in [*chain[chain.index(parent) :], parent])
            raise ConfigError(f"key 'base': the presets' bases form a cycle: {files}")
    return loader.merge(read_preset(parent, chain), data)


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """YAML preset (or None for defaults; its `base:` chain resolved, `read_preset`) plus
    `key=value` overrides -> validated Config."""
    cfg = Config()
    if path is not None:
        data = read_preset(Path(path))
        with loader.within(f"config file '{path}'"):
            cfg = config_from_dict(data)
    if overrides:
        if isinstance(overrides, list):
            overrides = dict(loader.parse_override(o) for o in overrides)
        cfg = apply_overrides(cfg, overrides)
    return cfg


def describe() -> str:
    """Every key with its default (and choices), for `amm train --help-config`."""
    return "\n".join(loader.describe(Config))
