"""Seeded splits and batches (docs/method.md section 7); the files are read by `amm_core.data.datasets`.

Images stay uint8 (N x C x H x W) on the training device; a batch is `x[idx]` with `idx` from an
`EpochSampler`, scaled by `to_float`. No per-image Python work, no DataLoader workers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from amm_core.config import DataConfig
from amm_core.data.datasets import load_arrays
from amm_core.data.download import ensure
from amm_core.errors import DataError

N_CLASSES = {"mnist": 10, "fashion_mnist": 10, "svhn": 10}


def derive_seed(seed: int, purpose: str) -> int:
    """A stable 63-bit seed for one use of the run seed: sha256 of "seed:purpose".

    Every RNG of a run derives from cfg.seed this way ("val_split", "labelled", "sampler", ...),
    so adding a new use never shifts the streams of the others. Stable across processes and
    Python versions (unlike hash()).
    """
    h = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU torch.Generator seeded with derive_seed(seed, purpose)."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


# ---------------------------------------------------------------- splits


@dataclass
class Splits:
    """uint8 images N x C x H x W and int64 labels, on the device (or CPU)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    labelled_idx: torch.Tensor  # SAMM: indices into train_*; empty for unsupervised AMM
    n_classes: int
    class_freqs: torch.Tensor  # label frequencies (labelled subset if any, else train split)


def draw_labelled(
    labels: torch.Tensor, n: int, n_classes: int, stratified: bool, g: torch.Generator
) -> torch.Tensor:
    """n indices into `labels`, drawn without replacement; stratified: n / n_classes per class."""
    if n > labels.shape[0]:
        raise DataError(
            f"key 'data.labelled': {n} labelled examples requested, the training split has only "
            f"{labels.shape[0]}"
        )
    if not stratified:
        return torch.randperm(labels.shape[0], generator=g)[:n].sort().values
    if n % n_classes:
        raise DataError(
            f"key 'data.labelled': {n} is not a multiple of the {n_classes} classes, as "
            f"data.stratified=true needs (equal counts per class)"
        )
    per, picks = n // n_classes, []
    for c in range(n_classes):
        idx = torch.nonzero(labels == c).flatten()
        if idx.numel() < per:
            raise DataError(
                f"key 'data.labelled': class {c} has {idx.numel()} training examples, fewer "
                f"than the {per} per class that data.stratified=true needs"
            )
        picks.append(idx[torch.randperm(idx.numel(), generator=g)[:per]])
    return torch.cat(picks).sort().values


def load_splits(
    data_cfg: DataConfig, root: Path, seed: int, device: torch.device | str = "cpu"
) -> Splits:
    """Train / val / test (+ SAMM labelled subset) for one run.

    val: data_cfg.val_size training examples drawn with generator(seed, "val_split"); the rest,
    in that shuffled order, is the train split (train_subset keeps its first N). The test split
    is the official one. SVHN: the paper uses ALI's splits, which are not published as files;
    this is the same recipe on the official train (+extra) set, an approximation of them.
    labelled: data_cfg.labelled indices into the train split, generator(seed, "labelled").
    """
    if data_cfg.download:
        ensure(data_cfg.dataset, Path(root), data_cfg.svhn_extra)
    a = load_arrays(data_cfg.dataset, Path(root), data_cfg.svhn_extra)
    n = a["train_x"].shape[0]
    if data_cfg.val_size >= n:
        raise DataError(
            f"key 'data.val_size': {data_cfg.val_size} must be smaller than the {n} training "
            f"examples of '{data_cfg.dataset}'"
        )
    perm = torch.randperm(n, generator=generator(seed, "val_split"))
    val_idx = perm[: data_cfg.val_size].sort().values
    train_idx = perm[data_cfg.val_size :]
    if data_cfg.train_subset > 0:
        train_idx = train_idx[: data_cfg.train_subset]
    tx, ty = torch.from_numpy(a["train_x"]), torch.from_numpy(a["train_y"])
    n_classes = N_CLASSES[data_cfg.dataset]
    train_y = ty[train_idx]
    if data_cfg.supervised:
        g = generator(seed, "labelled")
        lab = draw_labelled(train_y, data_cfg.labelled, n_classes, data_cfg.stratified, g)
        freq_src = train_y[lab]
    else:
        lab = torch.zeros(0, dtype=torch.int64)
        freq_src = train_y
    freqs = torch.bincount(freq_src, minlength=n_classes).double()
    dev = torch.device(device) if data_cfg.device_resident else torch.device("cpu")
    return Splits(
        train_x=tx[train_idx].to(dev),
        train_y=train_y.to(dev),
        val_x=tx[val_idx].to(dev),
        val_y=ty[val_idx].to(dev),
        test_x=torch.from_numpy(a["test_x"]).to(dev),
        test_y=torch.from_numpy(a["test_y"]).to(dev),
        labelled_idx=lab.to(dev),
        n_classes=n_classes,
        class_freqs=(freqs / freqs.sum()).float(),
    )


# ---------------------------------------------------------------- batches


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1] (the only preprocessing, docs/method.md section 1)."""
    if x.dtype != torch.uint8:
        raise TypeError(f"to_float expects uint8 images, got {x.dtype}")
    return x.to(torch.float32).div_(255.0)


class EpochSampler:
    """Index batches over range(n) (or over `indices`, n of them: the SAMM labelled subset), a
    fresh permutation every epoch, the last incomplete batch dropped. Endless: `next(sampler)`
    moves into the next epoch by itself.

    state_dict() holds epoch, position and generator states, so a resumed run draws exactly the
    batches an uninterrupted one would. Give it its own generator (e.g. generator(seed, "sampler")).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        indices: torch.Tensor | None = None,
    ):
        if batch_size < 1 or n < batch_size:
            raise DataError(
                f"a batch of {batch_size} does not fit in {n} examples (batches are drawn "
                f"without repeats); lower the batch size or use more data"
            )
        self.n, self.batch_size, self.generator = int(n), int(batch_size), generator
        self.device = torch.device(device)
        self.indices = None if indices is None else indices.to(self.device)
        self.batches_per_epoch = self.n // self.batch_size
        self.epoch, self.position = 0, 0
        self._perm: torch.Tensor | None = None
        self._epoch_start_state: torch.Tensor | None = None

    def _draw(self) -> None:
        self._epoch_start_state = self.generator.get_state()
        perm = torch.randperm(self.n, generator=self.generator, device=self.generator.device)
        self._perm = perm.to(self.device)

    def __iter__(self) -> EpochSampler:
        return self

    def __next__(self) -> torch.Tensor:
        if self._perm is None:
            self._draw()
        b = self.batch_size
        idx = self._perm[self.position * b : (self.position + 1) * b]
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position, self._perm = self.epoch + 1, 0, None
        return idx if self.indices is None else self.indices[idx]

    def state_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "position": self.position,
            "generator": self.generator.get_state(),
            "epoch_start": None if self._perm is None else self._epoch_start_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["n"], state["batch_size"]) != (self.n, self.batch_size):
            raise DataError(
                f"sampler state is for {state['n']} examples in batches of "
                f"{state['batch_size']}, this run has {self.n} in batches of {self.batch_size} "
                f"(data or batch size changed)"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._perm = None
        if state["epoch_start"] is not None:  # regenerate the current epoch's permutation
            self.generator.set_state(state["epoch_start"])
            self._draw()
        self.generator.set_state(state["generator"])
