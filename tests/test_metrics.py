"""Metrics on hand-checkable label vectors: mappings, eq. 18, NMI / ARI, the evaluation dict."""

import math

import numpy as np
import pytest
import torch

from amm_core import names
from amm_core.run.metrics import (
    ari,
    bayes_assign,
    cluster_error,
    clusters_used,
    confusion_matrix,
    contingency,
    evaluate_assignments,
    label_mapping,
    mapping_for,
    nmi,
)

Y6 = [0, 0, 1, 1, 2, 2]


def test_permutation_has_zero_error():
    perm = [2, 2, 0, 0, 1, 1]
    assert cluster_error(Y6, perm) == 0.0
    assert cluster_error(torch.tensor(Y6), torch.tensor(perm)) == 0.0
    assert label_mapping(Y6, perm).tolist() == [1, 2, 0]
    assert nmi(Y6, perm) == pytest.approx(1.0) and ari(Y6, perm) == pytest.approx(1.0)


def test_hungarian_two_of_six():
    # counts[true, cluster]: t0 [0 2 0], t1 [1 0 1], t2 [1 0 1] -> best matching keeps 2+1+1
    pred = [1, 1, 0, 2, 2, 0]
    assert contingency(Y6, pred, 3, 3).tolist() == [[0, 2, 0], [1, 0, 1], [1, 0, 1]]
    assert cluster_error(Y6, pred) == pytest.approx(2 / 6)
    assert cluster_error(np.array(Y6), torch.tensor(pred), "majority") == pytest.approx(2 / 6)


def test_more_clusters_than_classes():
    y = [0, 0, 0, 1, 1, 1]
    pred = [0, 1, 1, 2, 3, 3]  # every cluster pure: majority is perfect
    assert cluster_error(y, pred, "majority") == 0.0
    # one-to-one: only clusters 1 and 3 get a class, clusters 0 and 2 are errors
    assert cluster_error(y, pred, "hungarian") == pytest.approx(2 / 6)
    assert label_mapping(y, pred, "hungarian").tolist() == [-1, 0, -1, 1]
    mixed = [0, 0, 0, 1, 1, 2]  # cluster 0 holds (0, 0, 0), cluster 1 (1, 1), cluster 2 (1)
    assert cluster_error([0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 2], "majority") == pytest.approx(1 / 6)
    assert clusters_used(mixed) == 3 and clusters_used(torch.tensor([4, 4, 4])) == 1
    assert mapping_for(10, 10) == "hungarian" and mapping_for(18, 10) == "majority"


def test_bad_input():
    with pytest.raises(ValueError, match="hungarian, majority"):
        cluster_error(Y6, Y6, mapping="best")
    with pytest.raises(ValueError, match="length"):
        cluster_error([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        cluster_error([], [])
    with pytest.raises(ValueError, match="integer"):
        cluster_error([0.5, 1.0], [0, 1])


def test_confusion_matrix():
    pred = [2, 2, 0, 1, 1, 1]  # cluster 2 -> class 0, 0 -> 1, 1 -> 2
    cm = confusion_matrix(Y6, pred, n_classes=3)
    assert cm.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]
    plain = confusion_matrix(Y6, [0, 0, 1, 2, 2, 2], n_classes=3, mapping="supervised")
    assert plain.tolist() == [[2, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert confusion_matrix([0, 0, 1, 1], [0, 1, 2, 3], 2, K=4, mapping="majority").sum() == 4
    # one-to-one with 4 components for 2 classes: the 2 unmatched predictions are left out
    assert confusion_matrix([0, 0, 1, 1], [0, 1, 2, 3], 2, K=4).tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="K=3"):
        confusion_matrix([0, 0, 1, 1], [0, 1, 2, 3], 2, K=3)


def test_bayes_assign_points_at_means():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(6, 5, generator=g) * 3
    uniform = torch.full((6,), -math.log(6))
    assert bayes_assign(means, means, uniform).tolist() == list(range(6))
    sigma = torch.tensor([0.5, 1.0, 1.5, 2.0, 1.0, 0.7])
    assert bayes_assign(means, means, uniform, sigma).tolist() == list(range(6))
    assert bayes_assign(means.double(), means, uniform).dtype == torch.int64


def test_bayes_assign_prior_breaks_ties():
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    z = torch.zeros(3, 2)  # equidistant from both means
    assert bayes_assign(z, means, torch.tensor([0.3, 0.7]).log()).tolist() == [1, 1, 1]
    assert bayes_assign(z, means, torch.tensor([0.7, 0.3]).log()).tolist() == [0, 0, 0]


def test_bayes_assign_sigma_term():
    # same mean, different widths: at the mean the narrow one has the higher density only
    # through -L log sigma_k; far away the wide one wins
    means = torch.zeros(2, 4)
    logp = torch.zeros(2)
    z = torch.tensor([[0.0, 0, 0, 0], [10.0, 0, 0, 0]])
    assert bayes_assign(z, means, logp, torch.tensor([2.0, 1.0])).tolist() == [1, 0]


def test_bayes_assign_matches_torch_distributions():
    g = torch.Generator().manual_seed(1)
    K, L = 7, 3
    means, z = torch.randn(K, L, generator=g), torch.randn(200, L, generator=g) * 2
    sigma = torch.rand(K, generator=g) + 0.5
    log_prior = torch.log_softmax(torch.randn(K, generator=g), 0)
    dist = torch.distributions.Normal(means[None], sigma[None, :, None])
    ref = (dist.log_prob(z[:, None]).sum(-1) + log_prior).argmax(1)
    assert torch.equal(bayes_assign(z, means, log_prior, sigma), ref)
    # shared sigma, uniform prior: the nearest mean, whatever sigma is
    flat = torch.zeros(K)
    nearest = torch.cdist(z, means).argmin(1)
    assert torch.equal(bayes_assign(z, means, flat, 1.3), nearest)
    assert torch.equal(bayes_assign(z, means, flat), nearest)


def test_evaluate_assignments():
    y = torch.tensor(Y6)
    perm = torch.tensor([2, 2, 0, 0, 1, 1])
    out = evaluate_assignments(y, perm, torch.tensor([1, 1, 0, 2, 2, 0]), K=3, n_classes=3)
    assert set(out) == set(names.EVAL_METRICS)
    assert out[names.ERROR_GY] == 0.0 and out[names.ERROR_BAYES] == pytest.approx(2 / 6)
    assert out[names.NMI] == pytest.approx(1.0) and out[names.CLUSTERS_USED] == 3
    assert isinstance(out[names.CLUSTERS_USED], int) and isinstance(out[names.ARI], float)
    # SAMM: components are the classes, a permutation is all wrong
    sup = evaluate_assignments(y, perm, y, K=3, n_classes=3, supervised=True)
    assert sup[names.ERROR_GY] == 1.0 and sup[names.ERROR_BAYES] == 0.0
    # K > classes uses the majority mapping
    many = evaluate_assignments([0, 0, 1, 1], [0, 1, 2, 3], None, K=4, n_classes=2)
    assert many[names.ERROR_GY] == 0.0 and names.ERROR_BAYES not in many
