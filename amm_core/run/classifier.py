"""The evaluation classifier: a small supervised CNN that reads the digit of an image, so that the
generation metrics (docs/method.md section 8) can ask which digit a component draws.

An instrument, like the Inception net of FID: trained once per dataset on the training split's
labels (fixed seed, one epoch), cached on disk, never part of an AMM's training, and the same for
every run on that dataset, so runs stay comparable. Cache: $AMM_CACHE_DIR, else ~/.cache/amm-sweeps.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from amm_core import settings
from amm_core.data.datasets import load_arrays
from amm_core.fs import write_atomic

VERSION = 1  # bump when the network or its training changes: old caches are then ignored
EPOCHS = 1
BATCH = 128


class DigitNet(nn.Module):
    """Two conv layers and two linear ones (about 98 % test accuracy on MNIST after one epoch)."""

    def __init__(self, channels: int, n_classes: int = 10):
        super().__init__()
        self.c1 = nn.Conv2d(channels, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 7 * 7, 128)
        self.out = nn.Linear(128, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        h = F.adaptive_avg_pool2d(h, 7).flatten(1)
        return self.out(F.relu(self.fc(h)))


def _train(images: torch.Tensor, labels: torch.Tensor, channels: int) -> DigitNet:
    """images: uint8 (N, C, H, W) on the CPU; labels (N,)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the caller forks the RNG
    net = DigitNet(channels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(EPOCHS):
        for idx in torch.randperm(len(images), generator=g).split(BATCH):
            x = images[idx].float().div_(255)
            loss = F.cross_entropy(net(x), labels[idx].long())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def digit_classifier(dataset: str, root: Path, device: torch.device) -> DigitNet:
    """The cached classifier of `dataset`, trained at first use on the official training set
    (every run's train and validation images; never the test set) found under the data root.
    Writing is atomic: concurrent trials at worst train it twice."""
    with torch.random.fork_rng(devices=[]):  # building it never moves a run's RNG stream
        return _cached(dataset, root).to(device)


def cache_file(dataset: str, root: Path) -> Path:
    """Where the classifier of the dataset under `root` is cached (it may not exist yet)."""
    return _cache_file(dataset, torch.from_numpy(load_arrays(dataset, root)["train_x"]))


def _cache_file(dataset: str, images: torch.Tensor) -> Path:
    # keyed by the data too (size and a checksum of the first images): test files of the same
    # dataset name never stand in for the real set
    tag = f"n{len(images)}-s{int(images[:2000].sum()) % 10**8}"
    return settings.cache_dir() / f"classifier-{dataset}-{tag}-v{VERSION}.pt"


def _cached(dataset: str, root: Path) -> DigitNet:
    a = load_arrays(dataset, root)
    images, labels = torch.from_numpy(a["train_x"]), torch.from_numpy(a["train_y"])
    path = _cache_file(dataset, images)
    net = DigitNet(images.shape[1])
    if path.is_file():
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:  # noqa: BLE001 - a broken cache file is rebuilt, never trusted
            pass
    net = _train(images, labels, images.shape[1])
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    write_atomic(path, buf.getbuffer())
    return net
