"""A tiny AMM trained a few hundred steps on real MNIST clusters measurably better than chance."""

import json

import numpy as np
import torch

from amm_core import names
from amm_core.config import load_config
from amm_core.data.splits import load_splits
from amm_core.run.metrics import cluster_error, nmi
from amm_core.run.train import run


def test_tiny_model_beats_chance_on_real_mnist(tmp_path, data_root):
    torch.set_num_threads(1)
    # the demo's preset (tiny network, cycles, clustering term), not the smoke preset: the smoke
    # preset's 300 steps land at chance on some CPUs (their float paths differ), this one does not.
    # No time budget, so that a loaded machine trains the same 300 steps.
    overrides = ["train.figures=false", "seed=0", "train.steps=300", "train.max_minutes=0"]
    cfg = load_config("configs/demo.yaml", overrides)
    final = run(cfg, tmp_path / "run").final

    # Chance, measured on the same test labels: the model's own cluster sizes, paired with the
    # labels at random (a fixed generator), scored the same way.
    test_y = load_splits(cfg.data, data_root, cfg.seed).test_y.numpy()
    rng = np.random.default_rng(0)
    sizes = rng.multinomial(len(test_y), np.full(10, 0.1))
    shuffled = rng.permutation(np.repeat(np.arange(10), sizes))
    chance_error, chance_nmi = cluster_error(test_y, shuffled), nmi(test_y, shuffled)
    assert chance_error > 0.85 and chance_nmi < 0.01

    err, score = final[names.TEST_ERROR_GY], final[names.TEST_NMI]
    assert err < chance_error - 0.2, (err, chance_error)  # measured: 0.28 against 0.89
    assert score > 0.2, score  # chance is under 0.01; measured 0.70
    assert final[names.TEST_CLUSTERS_USED] >= 5
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r[names.LOSS_D]) and np.isfinite(r[names.LOSS_G]) for r in rows)
