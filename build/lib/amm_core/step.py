"""One training step: the two Adam optimisers, the order of the loss phases (`training_step`),
and the loss sums kept on the device between log lines (`Stats`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from amm_core.config import Config
from amm_core.errors import TrainingError
from amm_core.losses import AMMLoss
from amm_core.models import AMM


def make_optimizers(
    model: AMM, cfg: Config, capturable: bool = False, fused: bool = False
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator side and for D (optim.lr_g / optim.lr_d, 0 = optim.lr).
    `capturable`: Adam's step counter on the GPU, so that a CUDA graph can hold its step.
    `fused`: one kernel per parameter (the CPU's choice: the step's Adam work drops from about
    2 % to under 1 %; the same update)."""
    o = cfg.optim
    common = {"betas": (o.beta1, o.beta2), "capturable": capturable, "fused": fused or None}
    opt_g = torch.optim.Adam(model.generator_parameters(), lr=o.lr_g or o.lr, **common)
    opt_d = torch.optim.Adam(model.discriminator_parameters(), lr=o.lr_d or o.lr, **common)
    return opt_g, opt_d


def penalty_schedule(cfg: Config, step: int) -> list[bool]:
    """Which of the step's `train.d_steps` D steps run the penalty: every `loss.gp_every`-th D
    step of the run (lazy regularisation, weighted gp_every in AMMLoss), none when it is off."""
    on = cfg.loss.penalty != "none" and cfg.loss.gp_weight > 0
    d, every = cfg.train.d_steps, cfg.loss.gp_every
    return [on and (step * d + j) % every == 0 for j in range(d)]


def training_step(
    loss: AMMLoss,
    opt_d: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    x: torch.Tensor,
    x_l: torch.Tensor | None = None,
    y_l: torch.Tensor | None = None,
    use_penalty: bool | list[bool] = True,
    d_steps: int = 1,
) -> dict[str, Any]:
    """`d_steps` discriminator steps (main + penalty, each with fresh prior and encoder noise on
    the same batch) and one generator step. `use_penalty`: one flag, or one per D step (the
    loop's lazy-regularisation schedule)."""
    flags = use_penalty if isinstance(use_penalty, list) else [use_penalty] * d_steps
    stats: dict[str, Any] = {}
    for pen in flags:
        opt_d.zero_grad(set_to_none=True)
        t = loss.tuples(x, x_l, y_l)  # the last D step's forward also serves the G step
        stats.update(loss.d_main(t))
        if pen:
            stats.update(loss.d_gp(t))
        opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    stats.update(loss.g_main(t))
    opt_g.step()
    return stats


class Stats:
    """Sums loss stats on the device; one host sync per flush instead of one per step."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, stats: dict[str, Any]) -> None:
        for k, v in stats.items():
            v = v.detach() if torch.is_tensor(v) else torch.tensor(float(v))
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def flush(self, step: int) -> dict[str, float]:
        out = {k: float(v) / max(self.count, 1) for k, v in self.sums.items()}
        self.sums, self.count = {}, 0
        bad = sorted(k for k, v in out.items() if not math.isfinite(v))
        if bad:
            raise TrainingError(f"non-finite loss at step {step}: {', '.join(bad)} (run failed)")
        return out
