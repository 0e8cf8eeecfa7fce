"""The clustering term's random affine transform: rotation and shift as before when no shear is
asked for (same draws, same pixels), and a shear that slants an upright stroke."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from amm_core.data.augment import random_affine


def _old_random_affine(x: torch.Tensor, max_shift: int, max_degrees: float) -> torch.Tensor:
    """The transform before the shear existed, verbatim."""
    n, _, h, w = x.shape
    u = torch.rand(n, 3, device=x.device) * 2 - 1
    a = u[:, 0] * math.radians(max_degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    tx, ty = u[:, 1] * (2 * max_shift / w), u[:, 2] * (2 * max_shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def test_no_shear_is_the_old_transform_bit_for_bit():
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(3)
    new = random_affine(x, 2, 20.0)
    after_new = torch.rand(1)
    torch.manual_seed(3)
    old = _old_random_affine(x, 2, 20.0)
    after_old = torch.rand(1)
    assert torch.equal(new, old)
    assert torch.equal(after_new, after_old)  # the same number of draws


def test_shear_slants_a_vertical_bar():
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0  # an upright stroke
    out = random_affine(x, 0, 0.0, max_shear=0.5)
    top = out[:, 0, 5:9].sum(1).argmax(-1).float()  # the stroke's column near the top
    bottom = out[:, 0, 19:23].sum(1).argmax(-1).float()  # and near the bottom
    slant = (top - bottom).abs()
    assert slant.max() >= 4  # some images slanted by several pixels over 14 rows
    assert slant.min() <= 1 or slant.std() > 0  # and the draws differ per image
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)), rtol=0.1)  # mass kept
