"""Run configuration: frozen dataclasses, one field per choice of the paper and of the spec.

Every field has a default and a comment. `load_config` builds a `Config` from nested dicts or YAML
through `amm_core.loader` and checks the rules across keys (`_validate`), each failure a
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
from typing import Any

from amm_core import loader
from amm_core.errors import ConfigError
from amm_core.loader import choice, did_you_mean
from amm_core.shell import amm

# C x H x W of each data.dataset's images, and the shapes each model.arch takes (its tables in
# amm_core/archs.py; tiny has a variant for each)
DATASET_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "svhn": (3, 32, 32)}
ARCH_SHAPES = {"mnist": [(1, 28, 28)], "svhn": [(3, 32, 32)], "tiny": [(1, 28, 28), (3, 32, 32)]}
# official training-set sizes, before the validation split; data.svhn_extra adds SVHN_EXTRA
TRAIN_SIZES = {"mnist": 60000, "fashion_mnist": 60000, "svhn": 73257}
SVHN_EXTRA = 531131


@dataclass(frozen=True)
class DataConfig:
    dataset: str = choice("mnist", "mnist", "fashion_mnist", "svhn")  # which image set
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
    arch: str = choice("mnist", "mnist", "svhn", "tiny")  # network tables (spec section 3)
    num_components: int = 10  # K, mixture components
    latent_dim: int = 64  # L, dimensions of z (paper: 64 on MNIST, 32 for SVHN grid18)
    inference: str = choice("q2", "q2", "q1", "independent")  # q2: eq. 7, q1: eq. 6, eq. 15/16
    dropout: float = -1.0  # dropout rate; -1 = the architecture's own (0.2 MNIST, 0 SVHN enc/dec)
    dec_dropout: float = -1.0  # decoder dropout only; -1 = as model.dropout (see docs/results.md)
    enc_dropout: float = -1.0  # encoder dropout only; -1 = as model.dropout
    disc_dropout: float = -1.0  # discriminator dropout only; -1 = as model.dropout
    dropout_impl: str = choice("bytes", "bytes", "torch")  # masks from random bytes or bernoulli
    y_noise: str = choice("kendall", "kendall", "none", "gumbel")  # sampled y~ (eq. 8-9 = kendall)
    gumbel_tau: float = 1.0  # temperature of y_noise=gumbel
    # sampled z~: learned = mu_z + sigma_z * eps (eq. 3, 10); none = mu_z (a deterministic z
    # encoder, as BiGAN); docs/method.md section 1
    z_noise: str = choice("learned", "learned", "none")
    dec_out_bias: str = choice("zero", "zero", "logodds")  # decoder output bias at init
    disc_join: str = choice("ali", "ali")  # D joins x/y/z branches by concat + 1x1 layers (ALI)


@dataclass(frozen=True)
class PriorConfig:
    # mu_k; `zero` puts every mean at 0 (p(z) independent of y: eq. 16 with `independent`)
    means: str = choice("learned", "learned", "grid18", "table3", "file", "random", "zero")
    init_means: str = choice("none", "none", "grid18", "table3", "file", "random")  # learned: init
    means_file: str = ""  # CSV or NPY, K x L (or K x fewer columns, zero-padded), for `file`
    random_scale: float = 3.0  # `random`: mu_k ~ N(0, scale^2)
    random_seed: int = 0  # `random`: its own seed, independent of the run seed
    learn_sigma: bool = False  # learn sigma_k (eq. 12) instead of unit variance
    py: str = choice("uniform", "uniform", "class_frequencies")  # p(y)


@dataclass(frozen=True)
class LossConfig:
    gp_weight: float = 10.0  # lambda of eq. 17 (paper: 10 MNIST, 0.01 SVHN)
    # eq. 17's norm: joint over (x, y, z); per_input: one (||grad_v D|| - 1)^2 per v in x, y, z
    penalty: str = choice("joint", "joint", "per_input", "x_only", "roth", "none")
    # penalty on every N-th D step, weighted N (lazy regularisation, docs/method.md); 1 = the
    # paper's every step; 4 saves about 15 % of a CPU step, validation error the same within
    # seed noise (docs/performance.md)
    gp_every: int = 4
    # beyond the paper (docs/method.md, "extra terms"); 0 turns a term off
    info_weight: float = 0.0  # CE of G_y(G_x(y, z)) against y on synthesis tuples (ClusterGAN)
    cluster_weight: float = 0.0  # augmentation-consistency + balance term on G_y(x) (IMSAT)
    recon_weight: float = 0.0  # ALICE x-cycle: BCE of G_x(G_y(x), G_z(x)) against x, per pixel
    latent_weight: float = 0.0  # z-cycle: squared error of G_z(G_x(y, z)) against z, per dim
    centroid_weight: float = 0.0  # per-component soft centroid of z~ against mu_k (eq. 18 agrees)
    label_weight: float = 0.0  # SAMM: cross-entropy of G_y(x_l) against y_l on the labelled batch
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
    # end the run after N evaluations without val/error_gy improving on its best by at least
    # plateau_delta (absolute fraction; 0 = any drop), as a finished run (0 = off)
    stop_on_plateau: int = 0
    plateau_delta: float = 0.0
    d_steps: int = 1  # discriminator updates per generator update (each on the step's batch)
    eval_batch_size: int = 1000  # batch for evaluation forward passes
    log_every: int = 50  # training-loss report every N steps
    keep_checkpoints: int = 2  # checkpoints kept on disk (newest)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False  # torch deterministic algorithms (slower on GPU)
    amp: str = choice("none", "none", "bf16")  # bf16 autocast of the step (docs/performance.md)
    compile: bool = False  # torch.compile encoder and decoder (D needs double backward: eager)
    cuda_graph: bool = True  # on CUDA: capture the whole step once, replay it (no effect on CPU)
    # conv layout; auto = channels_last on the CPU (no oneDNN reorders), contiguous on CUDA
    memory_format: str = choice("auto", "auto", "channels_last", "contiguous")
    figures: bool = True  # write the per-run figures at the end
    # gen/* metrics at each evaluation and at the end (the evaluation classifier of
    # amm_core/classifier.py, trained once per dataset and cached; docs/method.md section 8)
    gen_metrics: bool = True
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
        return loader.flatten(self.to_dict())

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
    need(m.num_components >= 2, "key 'model.num_components': must be >= 2")
    need(m.latent_dim >= 1, "key 'model.latent_dim': must be >= 1")
    for key in ("dropout", "dec_dropout", "enc_dropout", "disc_dropout"):
        v = getattr(m, key)
        need(v == -1.0 or 0.0 <= v < 1.0, f"key 'model.{key}': -1 or in [0, 1)")
    need(m.gumbel_tau > 0, "key 'model.gumbel_tau': must be > 0")
    lo = cfg.loss
    need(lo.gp_every >= 1, "key 'loss.gp_every': must be >= 1")
    for key in (
        "info_weight", "cluster_weight", "cluster_balance", "cluster_entropy", "recon_weight",
        "latent_weight", "label_weight", "centroid_weight",
    ):  # fmt: skip
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
    need(t.stop_on_plateau >= 0, "key 'train.stop_on_plateau': must be >= 0 (0 = off)")
    need(0 <= t.plateau_delta < 1, "key 'train.plateau_delta': must be in [0, 1)")
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
    need(
        cfg.loss.label_weight == 0 or d.labelled > 0,
        "key 'loss.label_weight': needs labels (data.labelled > 0); allowed without labels: 0",
    )
    return cfg


def config_from_dict(data: dict[str, Any] | None) -> Config:
    """Nested dict (as in YAML presets) -> validated Config. Missing keys take defaults."""
    return _validate(loader.build(Config, data or {}))


def apply_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """Dotted-key overrides on a Config; unknown keys are rejected by name."""
    known = field_names()
    for key in overrides:
        if key not in known:
            close = sorted(k for k in known if k.split(".")[-1] == key.split(".")[-1])
            hint = f" (did you mean {', '.join(close)}?)" if close else did_you_mean(key, known)
            raise ConfigError(f"unknown key '{key}'{hint}; see `{amm()} train --help-config`")
    flat = cfg.flat()
    flat.update(overrides)
    return config_from_dict(loader.unflatten(flat))


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """YAML preset (or None for defaults) plus `key=value` overrides -> validated Config."""
    cfg = Config()
    if path is not None:
        data = loader.read_yaml(Path(path), "config file")
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
