"""The driver-side Tune callback that writes a sweep to MLflow (the only MLflow writer).

One child run per trial, created on the trial's first start and reattached (by the tags
`amm.sweep` + `amm.trial_id`) when the trial restarts after a failure or the sweep is resumed.
Results become metrics at their training step; the final result's test metrics and the run's
files (from the final checkpoint) are logged when the trial completes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ray import tune

from sweeps import tracking
from sweeps.spec import VARIANT, run_name
from sweeps.trainable import NODE_KEY, RESUMED_KEY, RUN_FILES, trial_config

# Tune's own bookkeeping in every result: not metrics of the model
SKIP = {
    "step",
    "training_iteration",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "time_since_restore",
    "iterations_since_restore",
    "pid",
    "done",
    "amm/final",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "warmup_time",
    # bookkeeping, not model metrics: the epoch follows from the step, the resume step is a tag
    "epoch",
    RESUMED_KEY,
}
TAG_RESUMED = "amm.resumed_from_step"  # the checkpoint step the trial's current attempt began at
RUNS_FILE = "amm_runs.json"  # trial_id -> MLflow run id, in the sweep folder


class MlflowSweepCallback(tune.Callback):
    def __init__(
        self,
        uri: str,
        exp_id: str,
        parent_id: str,
        sweep: str,
        sweep_dir: str,
        base_flat: dict[str, Any],
        variants: dict[str, dict[str, Any]],
    ) -> None:
        self.uri, self.exp_id, self.parent_id = uri, exp_id, parent_id
        self.sweep, self.sweep_dir, self.base_flat = sweep, sweep_dir, base_flat
        self.variants = variants
        self._client = None
        self._runs: dict[str, str] = {}
        self._last_step: dict[tuple[str, str], int] = {}
        self._where: dict[str, tuple[str, str]] = {}
        self._resumed: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:  # pickled into tuner.pkl: no client
        state = self.__dict__.copy()
        state["_client"] = None
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.uri)
        return self._client

    def _save_runs(self) -> None:
        if "://" in self.sweep_dir:  # remote storage: the tags alone are enough to reattach
            return
        path = Path(self.sweep_dir) / RUNS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._runs, indent=1, sort_keys=True))
        tmp.replace(path)

    def run_id(self, trial) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        cfg = trial_config(self.base_flat, trial.config, self.variants)
        tags = {tracking.TAG_HASH: cfg.hash(), "amm.trial_name": str(trial)}
        if VARIANT in trial.config:
            tags["amm.variant"] = str(trial.config[VARIANT])
        run_id, is_new = tracking.start_child(
            self.client,
            self.exp_id,
            self.parent_id,
            self.sweep,
            trial.trial_id,
            run_name(trial.config),
            cfg.flat(),
            tags,
        )
        self._runs[trial.trial_id] = run_id
        self._save_runs()
        if not is_new:  # reattached (resumed sweep): what this run already holds
            for key in self.client.get_run(run_id).data.metrics:
                steps = [m.step for m in self.client.get_metric_history(run_id, key)]
                self._last_step[(run_id, key)] = max(steps, default=-1)
        return run_id

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        if self.client.get_run(run_id).info.status != "RUNNING":  # reattached after an end
            self.client.update_run(run_id, status="RUNNING")

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        run_id = self.run_id(trial)
        step = int(result.get("step", result.get("training_iteration", 0)))
        metrics = {}
        for k, v in result.items():
            if k in SKIP or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            # each (key, step) once, in step order: the final result repeats the last
            # evaluation, and a trial restarted from an older checkpoint redoes some steps
            if not math.isfinite(v) or step <= self._last_step.get((run_id, k), -1):
                continue
            metrics[k] = v
            self._last_step[(run_id, k)] = step
        if metrics:
            tracking.log_metrics(self.client, run_id, metrics, step)
        # where the trial runs now (it changes when a failed trial restarts elsewhere)
        where = (str(result.get(NODE_KEY, "")), str(result.get("pid", "")))
        if self._where.get(run_id) != where:
            self.client.set_tag(run_id, tracking.TAG_NODE, where[0])
            self.client.set_tag(run_id, tracking.TAG_PID, where[1])
            self._where[run_id] = where
        resumed = str(result.get(RESUMED_KEY, ""))
        if resumed and self._resumed.get(run_id) != resumed:
            self.client.set_tag(run_id, TAG_RESUMED, resumed)
            self._resumed[run_id] = resumed
        if "error_mapping" in result:
            self.client.set_tag(run_id, "error_mapping", str(result["error_mapping"]))

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        # Tune has registered this checkpoint: a restart of the trial continues from here
        step = (checkpoint.get_metadata() or {}).get("step")
        if step is not None:
            self.client.set_tag(self.run_id(trial), tracking.TAG_CKPT_STEP, str(step))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, tracking.TAG_FAILURES, str(trial.num_failures))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        self.client.set_tag(run_id, tracking.TAG_ERROR, _error_text(trial)[-4000:])
        self.client.set_terminated(run_id, "FAILED")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        run_id = self.run_id(trial)
        ckpt = trial.checkpoint
        if ckpt is not None and (ckpt.get_metadata() or {}).get("final"):
            try:
                with ckpt.as_directory() as d:
                    for name in RUN_FILES:
                        if (Path(d) / name).is_file():
                            self.client.log_artifact(run_id, str(Path(d) / name))
                    if (Path(d) / "figures").is_dir():
                        self.client.log_artifacts(run_id, str(Path(d) / "figures"), "figures")
            except OSError as e:  # the run's numbers count even when its files cannot be read
                self.client.set_tag(run_id, "amm.artifacts_error", str(e)[:500])
        self.client.set_terminated(run_id, "FINISHED")


def _error_text(trial) -> str:
    """The trial's last error: Tune writes it on the driver first (trial.error_file) and copies
    it to the storage path later (trial.get_error() reads from there)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "error (no error file)")
