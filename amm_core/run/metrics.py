"""Evaluation (docs/method.md section 7): cluster error, the Bayes rule of eq. 18, NMI / ARI, and
`evaluate`: encode a split with the means (no noise), assign by G_y and by eq. 18, score.

Label vectors may be numpy arrays or torch tensors (any device); results are python numbers or
numpy arrays, except `bayes_assign`, which stays in torch on the device of `z`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from amm_core import names
from amm_core.config import Config
from amm_core.data.splits import to_float
from amm_core.model.models import AMM
from amm_core.model.priors import eq18_logits

# "supervised" (SAMM): the components are the classes, the error is plain misclassification
MAPPINGS = ("hungarian", "majority", "supervised")


def _labels(a: Any, what: str) -> np.ndarray:
    """Tensor / array / list -> 1-D int64 numpy array of non-negative labels."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if a.ndim != 1:
        a = a.reshape(-1)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: expected integer labels, got dtype {a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        raise ValueError(f"{what}: labels must be >= 0, got {a.min()}")
    return a


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("no labels to evaluate (empty y_true)")
    return t, p


def contingency(y_true: Any, y_pred: Any, n_classes: int, K: int) -> np.ndarray:
    """Cluster matrix: counts[c, k] = #examples with true label c assigned to component k."""
    t, p = _pair(y_true, y_pred)
    if t.max() >= n_classes:
        raise ValueError(f"y_true has label {t.max()} >= n_classes={n_classes}")
    if p.max() >= K:
        raise ValueError(f"y_pred has component {p.max()} >= K={K}")
    return np.bincount(t * K + p, minlength=n_classes * K).reshape(n_classes, K)


def label_mapping(y_true: Any, y_pred: Any, mapping: str = "hungarian") -> np.ndarray:
    """Component -> class label under `mapping`; -1 for components that map to no class
    (Hungarian with more components than classes, or components that were never used)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping {mapping!r} is not allowed; allowed: {', '.join(MAPPINGS)}")
    t, p = _pair(y_true, y_pred)
    c = contingency(t, p, int(t.max()) + 1, int(p.max()) + 1)
    out = np.full(c.shape[1], -1, dtype=np.int64)
    if mapping == "supervised":
        out = np.arange(c.shape[1])
    elif mapping == "hungarian":
        rows, cols = linear_sum_assignment(c, maximize=True)  # rectangular is fine
        out[cols] = rows
    else:
        used = c.sum(axis=0) > 0
        out[used] = c.argmax(axis=0)[used]
    return out


def cluster_error(y_true: Any, y_pred: Any, mapping: str = "hungarian") -> float:
    """1 - accuracy after mapping components to classes, in [0, 1].

    hungarian: best one-to-one mapping (linear_sum_assignment); with more components than classes
    the unmatched components count as errors. majority: each component takes its most frequent
    true label (several components may share a class; use when K > classes).
    """
    t, p = _pair(y_true, y_pred)
    m = label_mapping(t, p, mapping)
    return float(np.mean(m[p] != t))


def mapping_for(K: int, n_classes: int, supervised: bool = False) -> str:
    """The mapping the spec prescribes: Hungarian when K == classes, majority vote otherwise;
    "supervised" for SAMM (stored as the error_mapping of each run)."""
    if supervised:
        return "supervised"
    return "hungarian" if K == n_classes else "majority"


def confusion_matrix(
    y_true: Any, y_pred: Any, n_classes: int, K: int | None = None, mapping: str = "hungarian"
) -> np.ndarray:
    """(n_classes x n_classes) counts[true, predicted] after mapping components to classes.

    mapping "supervised" takes y_pred as class labels (SAMM). With "hungarian" and K > n_classes the
    predictions of unmatched components are left out (they are errors; the rows then sum to less
    than the class counts).
    """
    t, p = _pair(y_true, y_pred)
    if K is not None and p.max() >= K:
        raise ValueError(f"y_pred has component {p.max()} >= K={K}")
    mapped = label_mapping(t, p, mapping)[p]
    if mapped.max() >= n_classes:
        raise ValueError(f"predicted label {mapped.max()} >= n_classes={n_classes}")
    keep = mapped >= 0  # unmatched components (Hungarian, K > classes) have no column
    if t.max() >= n_classes:
        raise ValueError(f"y_true has label {t.max()} >= n_classes={n_classes}")
    counts = np.bincount(t[keep] * n_classes + mapped[keep], minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def nmi(y_true: Any, y_pred: Any) -> float:
    """Normalised mutual information, arithmetic averaging (scikit-learn)."""
    t, p = _pair(y_true, y_pred)
    return float(normalized_mutual_info_score(t, p, average_method="arithmetic"))


def ari(y_true: Any, y_pred: Any) -> float:
    """Adjusted Rand index (scikit-learn)."""
    t, p = _pair(y_true, y_pred)
    return float(adjusted_rand_score(t, p))


def clusters_used(y_pred: Any) -> int:
    """Number of distinct components assigned (a collapse detector)."""
    return int(np.unique(_labels(y_pred, "y_pred")).size)


@torch.no_grad()
def bayes_assign(
    z: torch.Tensor, means: torch.Tensor, log_prior: torch.Tensor, sigma: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """Eq. 18: argmax_k log N(z; mu_k, sigma_k^2 I) + log p(y=k).

    z (N, L), means (K, L), log_prior (K,), sigma a float or a (K,) tensor. Returns a LongTensor
    (N,) on z's device. The constant -L/2 log(2 pi) is dropped; -L log sigma_k is kept because it
    differs between components when sigma is learned.
    """
    if z.dim() != 2 or means.dim() != 2 or z.shape[1] != means.shape[1]:
        raise ValueError(
            f"z {tuple(z.shape)} and means {tuple(means.shape)}: expected (N, L), (K, L)"
        )
    K = means.shape[0]
    dtype = torch.promote_types(z.dtype, torch.float32)
    z = z.to(dtype)
    means = means.to(z.device, dtype)
    log_prior = torch.as_tensor(log_prior).to(z.device, dtype).reshape(-1)
    if log_prior.shape[0] != K:
        raise ValueError(f"log_prior has {log_prior.shape[0]} entries, means have K={K}")
    sigma = torch.as_tensor(sigma).to(z.device, dtype).reshape(-1).expand(K)
    return eq18_logits(z, means, log_prior, sigma).argmax(dim=1)


def evaluate_assignments(
    y_true: Any,
    pred_gy: Any,
    pred_bayes: Any | None,
    K: int,
    n_classes: int,
    supervised: bool = False,
) -> dict[str, float | int]:
    """Evaluation metrics under their short names (amm_core.names); the loop adds val/ or test/.

    The error uses `mapping_for(K, n_classes, supervised)`. NMI, ARI and clusters in use are of
    G_y. pred_bayes None leaves out ERROR_BAYES.
    """
    t, gy = _pair(y_true, pred_gy)
    mapping = mapping_for(K, n_classes, supervised)
    out: dict[str, float | int] = {names.ERROR_GY: cluster_error(t, gy, mapping)}
    if pred_bayes is not None:
        _, by = _pair(t, pred_bayes)
        out[names.ERROR_BAYES] = cluster_error(t, by, mapping)
    out[names.NMI] = nmi(t, gy)
    out[names.ARI] = ari(t, gy)
    out[names.CLUSTERS_USED] = clusters_used(gy)
    for k, v in out.items():
        assert isinstance(v, int) or math.isfinite(v), (k, v)
    return out


class Encoded(NamedTuple):
    """A split encoded with the means (no noise), on the CPU."""

    y: torch.Tensor  # (N, K) G_y(x) probabilities
    z: torch.Tensor  # (N, L) G_z(x, .) means
    gy: torch.Tensor  # (N,) assignment by G_y: argmax y
    bayes: torch.Tensor  # (N,) assignment by eq. 18 on z


@torch.no_grad()
def encode(model: AMM, x: torch.Tensor, batch_size: int) -> Encoded:
    """Images x (uint8, or float in [0, 1]) batch by batch on the model's device, in the model's
    current mode (the caller sets eval)."""
    device = next(model.parameters()).device
    means, log_py, sigma = model.prior.means(), model.prior.log_py(), model.prior.sigma()
    ys, zs, gy, bayes = [], [], [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device)
        enc = model.encoder(to_float(xb) if xb.dtype == torch.uint8 else xb.float(), sample=False)
        ys.append(enc.y.float().cpu())
        zs.append(enc.z.float().cpu())
        gy.append(enc.y.argmax(dim=1).cpu())
        bayes.append(bayes_assign(enc.z, means, log_py, sigma).cpu())
    return Encoded(torch.cat(ys), torch.cat(zs), torch.cat(gy), torch.cat(bayes))


def encode_split(model: AMM, x: torch.Tensor, cfg: Config) -> Encoded:
    """A split encoded in eval mode (the model's mode restored after), as evaluations do."""
    was_training = model.training
    model.eval()
    try:
        return encode(model, x, cfg.train.eval_batch_size)
    finally:
        model.train(was_training)


def score(enc: Encoded, y: torch.Tensor, cfg: Config, n_classes: int) -> dict:
    """An encoded split's assignments by G_y and by eq. 18, scored against labels y."""
    K = cfg.model.num_components
    return evaluate_assignments(y.cpu(), enc.gy, enc.bayes, K, n_classes, cfg.data.supervised)


def evaluate(model: AMM, x: torch.Tensor, y: torch.Tensor, cfg: Config, n_classes: int) -> dict:
    """Cluster assignments by G_y (means, no noise) and by eq. 18, scored against labels y."""
    return score(encode_split(model, x, cfg), y, cfg, n_classes)
