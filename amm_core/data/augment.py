"""Random small affine transforms of image batches, for the cluster term (docs/method.md).

One rotation angle and one translation per image, drawn from the global torch RNG (seeded and
checkpointed by the loop), applied with bilinear sampling and zero padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(x: torch.Tensor, max_shift: int, max_degrees: float) -> torch.Tensor:
    """x (N, C, H, W) float -> the same images rotated by U(-max_degrees, max_degrees) and
    shifted by U(-max_shift, max_shift) pixels along each axis, one draw per image."""
    n, _, h, w = x.shape
    if max_shift == 0 and max_degrees == 0:
        return x
    u = torch.rand(n, 3, device=x.device) * 2 - 1
    a = u[:, 0] * math.radians(max_degrees)
    cos, sin = torch.cos(a), torch.sin(a)
    # affine_grid works in [-1, 1] coordinates: a shift of s pixels is 2 s / size
    tx, ty = u[:, 1] * (2 * max_shift / w), u[:, 2] * (2 * max_shift / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1).to(
        x.dtype
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
