"""Per-run figures of the paper (its figures 2 to 4) as PNG files.

`write_run_figures(model, data, out_dir, cfg)` writes, from a trained model and the test split,
the files of `names.FIGURE_FILES`: samples per component, test images by component,
reconstructions, interpolations, t-SNE, cluster and confusion matrices, and training.png
(validation error and the latent-path diagnostics over the steps, from the metric history).
All randomness (which test images, the prior noise, t-SNE) derives from cfg.seed. Plotting
errors raise: the training loop decides that a figure failure does not fail a finished run.

matplotlib's object API (`Figure`, Agg canvas) only: no pyplot state, no display needed.
"""

from __future__ import annotations

from inspect import signature
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from amm_core import names
from amm_core.config import Config
from amm_core.data.splits import derive_seed, to_float
from amm_core.run import metrics


def _test_data(data: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Splits (test_x, test_y, n_classes) or a tuple (x, y) -> (x, y, n_classes)."""
    n_classes = 0
    if hasattr(data, "test_x"):
        x, y = data.test_x, data.test_y
        n_classes = int(getattr(data, "n_classes", 0) or 0)
    else:
        x, y = data
    y = torch.as_tensor(y).long().cpu()
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"figures need test images and labels of one length, got {len(x)}, {len(y)}"
        )
    return x, y, n_classes or int(y.max()) + 1


def _float(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    return to_float(x) if x.dtype == torch.uint8 else x.float()


@torch.no_grad()
def _decode(model: Any, y: torch.Tensor, z: torch.Tensor, device: torch.device) -> torch.Tensor:
    return model.decoder(y.to(device), z.to(device)).float().cpu()


def mosaic(images: list[list[torch.Tensor | None]], pad: int = 1) -> np.ndarray:
    """Rows of (C, H, W) images in [0, 1] (None = blank) -> one (H', W', C) array."""
    first = next(im for row in images for im in row if im is not None)
    C, H, W = first.shape
    n_rows, n_cols = len(images), max(len(r) for r in images)
    out = np.ones(((H + pad) * n_rows + pad, (W + pad) * n_cols + pad, C), dtype=np.float32)
    for i, row in enumerate(images):
        for j, im in enumerate(row):
            if im is not None:
                top, left = pad + i * (H + pad), pad + j * (W + pad)
                out[top : top + H, left : left + W] = im.clamp(0, 1).permute(1, 2, 0).numpy()
    return out


def _image_figure(arr: np.ndarray, title: str, row_labels: list[str] | None = None) -> Figure:
    h, w = arr.shape[:2]
    fig = Figure(figsize=(max(4.0, w / 40), max(3.0, h / 40 + 0.6)), dpi=100)
    ax = fig.add_subplot()
    if arr.shape[2] == 1:
        ax.imshow(arr[:, :, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(arr, interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    if row_labels:
        step = h / len(row_labels)
        ax.set_yticks([step * (i + 0.5) for i in range(len(row_labels))], row_labels, fontsize=7)
    else:
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def _matrix_figure(m: np.ndarray, title: str, xlabel: str, ylabel: str) -> Figure:
    n_rows, n_cols = m.shape
    fig = Figure(figsize=(max(4.0, 0.45 * n_cols + 1.5), max(3.5, 0.45 * n_rows + 1.2)), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(m, cmap="Blues", aspect="auto")
    vmax = m.max() if m.size else 0
    for i in range(n_rows):
        for j in range(n_cols):
            color = "white" if m[i, j] > 0.6 * vmax else "black"
            ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=6, color=color)
    ax.set_xticks(range(n_cols))
    ax.set_yticks(range(n_rows))
    ax.tick_params(labelsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def _tsne_figure(z: np.ndarray, labels: np.ndarray, seed: int) -> Figure:
    from sklearn.manifold import TSNE

    n = len(z)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    # 500 iterations, not sklearn's 1,000: the clusters have settled by then (a figure of the end
    # of a run, not a measurement) and the figures take seconds, not a minute on a busy CPU
    iters = {"max_iter" if "max_iter" in signature(TSNE).parameters else "n_iter": 500}
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, **iters)
    emb = tsne.fit_transform(z)
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    sc = ax.scatter(
        emb[:, 0], emb[:, 1], c=labels, cmap=cmap, s=4, vmin=-0.5, vmax=max(9.5, labels.max() + 0.5)
    )
    fig.colorbar(sc, ax=ax, ticks=classes, label="true label")
    ax.set_title(f"t-SNE of test z (means), {n} points", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


def training_figure(history: list[dict[str, Any]]) -> Figure:
    """Validation error (in percent), the gen/* and diag/* metrics (docs/method.md) against the
    step."""
    fig = Figure(figsize=(13, 7.5), layout="constrained")
    keys = [names.VAL_ERROR_GY, *names.GEN_METRICS, *names.DIAG_METRICS]
    axes = fig.subplots(3, 5).flatten()
    for ax in axes[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes, keys, strict=False):
        scale = 100.0 if names.is_error(key) else 1.0  # errors in percent, as people read them
        pts = [(r[names.STEP], scale * r[key]) for r in history if key in r]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker=".")
        ax.set_title(f"{key} (%)" if scale == 100.0 else key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        if scale == 100.0:
            ax.set_ylabel("%", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("training: validation error, generation and latent-path diagnostics")
    return fig


def write_run_figures(
    model: Any,
    data: Any,
    out_dir: str | Path,
    cfg: Config,
    max_points: int = 2000,
    per_component: int = 10,
    batch_size: int | None = None,
    history: list[dict[str, Any]] | None = None,
    encoded: metrics.Encoded | None = None,
) -> list[Path]:
    """Write the figures of names.FIGURE_FILES into out_dir; return their paths. `history`: the
    run's metric lines (metrics.jsonl) for training.png (empty axes without it); `encoded`: the
    test images already encoded by the test evaluation (else encoded here).

    `data`: the run's Splits (test_x uint8 N x C x H x W, test_y, n_classes) or a tuple
    (x, y) with x uint8 or float in [0, 1]. The model is put in eval mode and restored after.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x, labels, n_classes = _test_data(data)
    device = next(model.parameters()).device
    K = int(model.prior.means().shape[0])
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, "figures"))
    batch = batch_size or cfg.train.eval_batch_size
    was_training = model.training
    model.eval()
    try:
        enc = (encoded or metrics.encode(model, x, batch))._asdict()
        figs = {}

        # (a) random samples from each component: z = mu_k + sigma_k * eps, y = one-hot(k)
        with torch.no_grad():
            means, sigma = model.prior.means().float().cpu(), model.prior.sigma().float().cpu()
        eps = torch.randn(K, per_component, means.shape[1], generator=g)
        z = (means[:, None] + sigma[:, None, None] * eps).reshape(K * per_component, -1)
        y = torch.eye(K).repeat_interleave(per_component, 0)
        xs = _decode(model, y, z, device).reshape(K, per_component, *x.shape[1:])
        figs[names.FIG_SAMPLES] = _image_figure(
            mosaic([list(r) for r in xs]),
            "random samples per component (rows: k)",
            [str(k) for k in range(K)],
        )

        # (b) test images grouped by the component G_y assigns
        rows, row_labels = [], []
        for k in range(K):
            idx = (enc["gy"] == k).nonzero().flatten()
            row_labels.append(f"{k} ({len(idx)})")
            ims = [_float(x[i : i + 1], torch.device("cpu"))[0] for i in idx[:per_component]]
            rows.append(ims + [None] * (per_component - len(ims)))
        if all(im is None for r in rows for im in r):
            raise ValueError("no test image assigned to any component")
        figs[names.FIG_BY_COMPONENT] = _image_figure(
            mosaic(rows), "test images by assigned component (G_y); rows: k (count)", row_labels
        )

        # (c) reconstructions G_x(G_y(x), G_z(x)): original left of each pair
        n_rec = min(len(x), 40)
        idx = torch.randperm(len(x), generator=g)[:n_rec]
        orig = _float(x[idx.to(x.device)], torch.device("cpu"))
        rec = _decode(model, enc["y"][idx], enc["z"][idx], device)
        pairs = [im for i in range(n_rec) for im in (orig[i], rec[i])]
        figs[names.FIG_RECONSTRUCTIONS] = _image_figure(
            mosaic([pairs[i : i + 20] for i in range(0, len(pairs), 20)]),
            "reconstructions: original left of each pair",
        )

        # (d) interpolations in (y, z) between two test images; originals first and last
        n_pairs, steps = min(8, len(x)), 8
        a = torch.randperm(len(x), generator=g)[:n_pairs]
        b = torch.randperm(len(x), generator=g)[:n_pairs]
        t = torch.linspace(0, 1, steps)[None, :, None]
        yi = (1 - t) * enc["y"][a][:, None] + t * enc["y"][b][:, None]
        zi = (1 - t) * enc["z"][a][:, None] + t * enc["z"][b][:, None]
        dec = _decode(
            model, yi.reshape(n_pairs * steps, -1), zi.reshape(n_pairs * steps, -1), device
        ).reshape(n_pairs, steps, *x.shape[1:])
        xa = _float(x[a.to(x.device)], torch.device("cpu"))
        xb = _float(x[b.to(x.device)], torch.device("cpu"))
        figs[names.FIG_INTERPOLATIONS] = _image_figure(
            mosaic([[xa[i], *dec[i], xb[i]] for i in range(n_pairs)]),
            "interpolations in (y, z): originals in the first and last columns",
        )

        # (e) t-SNE of test embeddings (z means), coloured by the true label
        sub = torch.randperm(len(x), generator=g)[: min(max_points, len(x))]
        figs[names.FIG_TSNE] = _tsne_figure(
            enc["z"][sub].numpy(), labels[sub].numpy(), derive_seed(cfg.seed, "tsne") % 2**32
        )

        # (f) cluster matrix and (g) confusion matrices of G_y and of eq. 18
        figs[names.FIG_CLUSTERS] = _matrix_figure(
            metrics.contingency(labels, enc["gy"], n_classes, K),
            "cluster matrix (G_y)",
            "component",
            "true label",
        )
        supervised = cfg.data.supervised
        mapping = metrics.mapping_for(K, n_classes, supervised)
        for name, pred, who in (
            (names.FIG_CONFUSION_GY, enc["gy"], "G_y"),
            (names.FIG_CONFUSION_BAYES, enc["bayes"], "eq. 18 (Bayes on z)"),
        ):
            cm = metrics.confusion_matrix(labels, pred, n_classes, K, mapping)
            err = 1.0 - np.trace(cm) / len(labels)
            how = "" if supervised else f", {mapping} mapping"
            figs[name] = _matrix_figure(
                cm, f"confusion, {who}{how}: error {100 * err:.2f}%", "predicted", "true label"
            )
        figs[names.FIG_TRAINING] = training_figure(history or [])
    finally:
        model.train(was_training)

    paths = []
    for name in names.FIGURE_FILES:
        path = out / name
        figs[name].savefig(path, format="png")
        paths.append(path)
    return paths
