"""A run's full training state, kept whole as stylegan2-ada's loop keeps it: the networks, the
two optimisers, the batch samplers, the global RNGs, the plateau count, the step and the
training seconds so far. `state_dict()` is what a checkpoint holds and `load_state_dict()`
resumes from one: a resumed run draws what an uninterrupted one would, and goes on within what
is left of its time budget (train.max_minutes counts the run's every process).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from amm_core.config import Config
from amm_core.data.splits import EpochSampler, Splits, generator
from amm_core.errors import ConfigError
from amm_core.model.models import AMM
from amm_core.run.checkpoint import checkpoint_config, rng_state, set_rng_state
from amm_core.run.plateau import Plateau
from amm_core.run.step import TrainingStep

# Keys that may differ between a checkpoint and the run that resumes it: where things live and
# how long to train, not what is trained.
RESUMABLE_CHANGES = {
    "data.data_dir",
    "data.download",
    "train.device",
    "train.steps",
    "train.epochs",
    "train.max_minutes",
    "train.stop_on_plateau",
    "train.plateau_delta",
    # a start of the restart phase goes on as the run: it was trained without figures, for
    # restart_steps, as a run of its own (restarts 1); none of these changes what is trained
    "train.figures",
    "train.restarts",
    "train.restart_steps",
}


def stream(start: int, purpose: str) -> str:
    """The RNG stream of `purpose` for start `start` of the restart phase: start 0 is the seed's
    own streams, so a run without restarts draws what it always drew; the data split never
    depends on the start."""
    return purpose if start == 0 else f"{purpose}:start{start}"


def saved_start(state: dict[str, Any]) -> int:
    """Which start of the restart phase a checkpoint's run is (older checkpoints kept it in
    their config as train.start)."""
    if "start" in state:
        return int(state["start"])
    return int(json.loads(state["config"]).get("train", {}).get("start", 0))


def check_resumable(saved: Config, cfg: Config) -> None:
    """ConfigError naming each key in which `cfg` trains otherwise than the checkpoint's."""
    a, b = saved.flat(), cfg.flat()
    diff = sorted(k for k in a if a[k] != b.get(k) and k not in RESUMABLE_CHANGES)
    if diff:
        detail = ", ".join(f"{k}: {a[k]!r} -> {b[k]!r}" for k in diff)
        keep = " ".join(f"--set {k}={json.dumps(a[k])}" for k in diff)
        raise ConfigError(
            f"cannot resume: the config differs from the checkpoint's ({detail}); to go on "
            f"with the checkpoint's values (e.g. after a default changed): {keep}"
        )


@dataclass
class TrainingState:
    """Everything a resumed run needs to go on exactly; `TrainingState.build` makes a fresh one."""

    cfg: Config
    model: AMM
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    sampler: EpochSampler  # the unlabelled batches
    lab_sampler: EpochSampler | None  # SAMM: the labelled batches
    plateau: Plateau
    adam: dict[str, Any] = field(default_factory=dict)  # this device's Adam flags
    step: int = 0
    start: int = 0  # which start of the restart phase (`stream`)
    spent_s: float = 0.0  # training seconds of the run before this process (its checkpoint's)
    started: float = field(default_factory=time.perf_counter)  # this process's clock

    @classmethod
    def build(
        cls,
        cfg: Config,
        step_fn: TrainingStep,
        splits: Splits,
        device: torch.device,
        start: int = 0,
    ) -> TrainingState:
        """Step 0 of `cfg` with the networks and optimisers of `step_fn`; the samplers on their
        own streams (`stream`) of start `start`."""
        batches = generator(cfg.seed, stream(start, "batches"))
        sampler = EpochSampler(len(splits.train_x), cfg.train.batch_size, batches, device)
        lab_sampler = None
        if cfg.data.supervised:
            lab_idx = splits.labelled_idx
            lab_g = generator(cfg.seed, stream(start, "labelled_batches"))
            lab_bs = min(cfg.train.labelled_batch_size, len(lab_idx))
            lab_sampler = EpochSampler(len(lab_idx), lab_bs, lab_g, device, indices=lab_idx)
        plateau = Plateau(cfg.train.stop_on_plateau, cfg.train.plateau_delta)
        return cls(cfg, step_fn.model, step_fn.opt_g, step_fn.opt_d, sampler, lab_sampler,
                   plateau, adam=step_fn.adam, start=start)  # fmt: skip

    def start_clock(self) -> None:
        """Training starts (or goes on) now: `elapsed()` counts from here on top of `spent_s`."""
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """The run's training seconds, its earlier processes (resumes) included."""
        return self.spent_s + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint holds (plain values and tensors: `checkpoint.check_state`)."""
        return {
            "step": self.step,
            "start": self.start,
            "config": json.dumps(self.cfg.to_dict()),
            "config_hash": self.cfg.hash(),
            "model": self.model.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sampler": self.sampler.state_dict(),
            "lab_sampler": self.lab_sampler.state_dict() if self.lab_sampler is not None else {},
            "rng": rng_state(),
            "plateau": self.plateau.state_dict(),
            "elapsed_s": self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Go on from a checkpoint's state: ConfigError when it trained another config (an older
        amm's may carry a removed key: dropped). Checkpoints of an older amm may lack the plateau
        count and the training seconds (0 then)."""
        check_resumable(checkpoint_config(state), self.cfg)
        self.model.load_state_dict(state["model"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for group in self.opt_g.param_groups + self.opt_d.param_groups:
            group.update(self.adam)  # a GPU run's flags (capturable) a CPU cannot step with
        self.sampler.load_state_dict(state["sampler"])
        if self.lab_sampler is not None:
            self.lab_sampler.load_state_dict(state["lab_sampler"])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.start = saved_start(state)
        self.spent_s = float(state.get("elapsed_s", 0.0))
        if "plateau" in state:
            self.plateau.load_state_dict(state["plateau"])
