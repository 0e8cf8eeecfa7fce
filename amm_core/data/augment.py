"""Random small affine transforms of image batches, for the cluster term (docs/method.md).

One rotation angle and one translation per image, drawn from the global torch RNG (seeded and
checkpointed by the loop), applied with bilinear sampling and zero padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    x: torch.Tensor, max_shift: int, max_degrees: float, max_shear: float = 0.0
) -> torch.Tensor:
    """x (N, C, H, W) float -> the same images rotated by U(-max_degrees, max_degrees), slanted
    by a horizontal shear U(-max_shear, max_shear) and shifted by U(-max_shift, max_shift)
    pixels along each axis, one draw per image (no shear draw at 0: the stream is as before)."""
    n, _, h, w = x.shape
    if max_shift == 0 and max_degrees == 0 and max_shear == 0:
        return x
    u = torch.rand(n, 3, device=x.device) * 2 - 1
    a = u[:, 0] * math.radians(max_degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    # rotation times the shear [[1, s], [0, 1]]: the slant that splits a digit by style
    s = torch.zeros(n, device=x.device)
    if max_shear:
        s = (torch.rand(n, device=x.device) * 2 - 1) * max_shear
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2 s / size
    tx, ty = u[:, 1] * (2 * max_shift / w), u[:, 2] * (2 * max_shift / h)
    row0 = torch.stack([cos, cos * s - sin, tx], 1)
    row1 = torch.stack([sin, sin * s + cos, ty], 1)
    theta = torch.stack([row0, row1], 1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
