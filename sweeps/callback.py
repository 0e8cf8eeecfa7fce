"""The driver-side Tune callback that writes a sweep to MLflow (the only MLflow writer).

One child run per trial, created on the trial's first start and reattached (by its run id in
`amm_runs.json`, else by the tags `amm.sweep` + `amm.trial_id` under this parent) when the trial
restarts after a failure or the sweep is resumed. Every write goes through an `Outbox`
(sweeps/outbox.py), so a tracking outage delays writes instead of losing them.
Results become metrics at their training step; the final result's test metrics and the run's
files (from the final checkpoint) are logged when the trial completes.
"""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path
from typing import Any

from ray import tune

from amm_core import names
from amm_core.fs import write_atomic
from sweeps import stopping, tracking
from sweeps.outbox import OUTBOX_FILE, Outbox, is_outage
from sweeps.spec import VARIANT, run_name
from sweeps.trainable import trial_config

# Tune's own bookkeeping in every result, and ours (the epoch follows from the step, the resume
# step is a tag): not metrics of the model
TUNE_KEYS = """training_iteration timestamp time_this_iter_s time_total_s time_since_restore
    iterations_since_restore pid done timesteps_total episodes_total timesteps_since_restore
    warmup_time""".split()
SKIP = {*TUNE_KEYS, names.STEP, names.EPOCH, names.RESULT_FINAL, names.RESULT_RESUMED}


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
        self._out: Outbox | None = None
        self._runs: dict[str, str] = self._load_runs()
        self._last_step: dict[tuple[str, str], int] = {}
        self._tags: dict[tuple[str, str], str] = {}  # (trial, key) -> value sent this session
        self._started: set[str] = set()
        self._gave_up = False

    def __getstate__(self) -> dict[str, Any]:  # pickled into tuner.pkl: no client, no outbox
        state = self.__dict__.copy()
        state["_client"] = None
        state["_out"] = None
        state["_gave_up"] = False
        return state

    @property
    def client(self):
        if self._client is None:
            self._client = tracking.client(self.uri)
        return self._client

    @property
    def outbox(self) -> Outbox:
        if self._out is None:
            local = "://" not in self.sweep_dir
            path = Path(self.sweep_dir) / OUTBOX_FILE if local else None
            self._out = Outbox(path, self._execute)
        return self._out

    def _load_runs(self) -> dict[str, str]:
        path = Path(self.sweep_dir) / names.RUNS_FILE
        if "://" in self.sweep_dir or not path.is_file():
            return {}
        return json.loads(path.read_text())

    def _save_runs(self) -> None:
        if "://" in self.sweep_dir:  # remote storage: the tags alone are enough to reattach
            return
        text = json.dumps(self._runs, indent=1, sort_keys=True)
        write_atomic(Path(self.sweep_dir) / names.RUNS_FILE, text)

    # ---------------------------------------------------------------- writes (via the outbox)

    def _send(self, op: str, trial_id: str | None, **args: Any) -> None:
        self.outbox.send({"op": op, "trial": trial_id, **args})

    def _start(self, trial) -> None:
        """Queue the creation (or reattachment) of the trial's child run, once per session."""
        if trial.trial_id in self._started:
            return
        self._started.add(trial.trial_id)
        cfg = trial_config(self.base_flat, trial.config, self.variants)
        tags = {names.TAG_HASH: cfg.hash(), names.TAG_TRIAL_NAME: str(trial)}
        if VARIANT in trial.config:
            tags[names.TAG_VARIANT] = str(trial.config[VARIANT])
        self._send(
            "start", trial.trial_id, name=run_name(trial.config), params=cfg.flat(), tags=tags
        )

    def _execute(self, item: dict[str, Any]) -> None:
        """Make one queued write against the tracking store."""
        op, tid, c = item["op"], item["trial"], self.client
        if op == "start":
            self._reattach_or_create(tid, item)
            return
        run_id = self.parent_id if tid is None else self._runs[tid]
        if op == "metrics":
            step, last = item["step"], self._last_step
            metrics = {k: v for k, v in item["metrics"].items() if step > last.get((run_id, k), -1)}
            if metrics:
                tracking.log_metrics(c, run_id, metrics, step)
            for k in metrics:
                last[(run_id, k)] = step
        elif op == "tag":
            c.set_tag(run_id, item["key"], item["value"])
        elif op == "running":
            if c.get_run(run_id).info.status != names.RUNNING:
                c.update_run(run_id, status=names.RUNNING)
        elif op == "end":
            c.set_terminated(run_id, item["status"])
        elif op == "end_if_running":
            if c.get_run(run_id).info.status == names.RUNNING:
                c.set_terminated(run_id, item["status"])
        elif op == "files":
            self._log_files(run_id, item["checkpoint"])
        else:  # pragma: no cover - every op above is written by this class
            raise ValueError(f"unknown outbox op {op!r}")

    def _reattach_or_create(self, trial_id: str, item: dict[str, Any]) -> None:
        run_id = self._runs.get(trial_id)
        if run_id is not None:  # this sweep's own run (amm_runs.json), by id
            if self.client.get_run(run_id).info.status != names.RUNNING:
                self.client.update_run(run_id, status=names.RUNNING)
            is_new = False
        else:
            run_id, is_new = tracking.start_child(
                self.client,
                self.exp_id,
                self.parent_id,
                self.sweep,
                trial_id,
                item["name"],
                item["params"],
                item["tags"],
            )
            self._runs[trial_id] = run_id
            self._save_runs()
        if not is_new:  # reattached (resumed sweep): what this run already holds
            for key in self.client.get_run(run_id).data.metrics:
                steps = [m.step for m in self.client.get_metric_history(run_id, key)]
                self._last_step[(run_id, key)] = max(steps, default=-1)

    def _log_files(self, run_id: str, ckpt_path: str) -> None:
        try:
            with tune.Checkpoint(ckpt_path).as_directory() as d:
                for name in names.RUN_FILES:
                    if (Path(d) / name).is_file():
                        self.client.log_artifact(run_id, str(Path(d) / name))
                figures = Path(d) / names.FIGURES_DIR
                if figures.is_dir():
                    self.client.log_artifacts(run_id, str(figures), names.FIGURES_DIR)
        except OSError as e:  # the run's numbers count even when its files cannot be read
            if is_outage(e):
                raise
            self.client.set_tag(run_id, names.TAG_ARTIFACTS_ERROR, str(e)[:500])

    def close(self, status: str) -> None:
        """End this sweep's own runs (by run id): children still RUNNING -> KILLED, the parent
        -> status. Writes the tracking store cannot take now stay in the outbox for resume."""
        for trial_id in sorted(self._runs):
            self._send("end_if_running", trial_id, status=names.KILLED)
        self._send("end", None, status=status)
        self.outbox.flush(force=True)

    # ---------------------------------------------------------------- Tune hooks

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        # Tune calls this on every turn of its loop (at least every 0.1 s while trials train):
        # the outbox's retries and outage limit, and a stop asked for by a signal, run here
        if self.outbox.tick() and not self._gave_up:  # stop like Ctrl+C: Tune saves its state
            self._gave_up = True
            signal.raise_signal(signal.SIGUSR1)
        stopping.poll()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        self._send("running", trial.trial_id)

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._start(trial)
        step = int(result.get(names.STEP, result.get("training_iteration", 0)))
        metrics = {}
        for k, v in result.items():
            if k in SKIP or isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if math.isfinite(v):
                metrics[k] = v
        # each (key, step) once, in step order: the final result repeats the last evaluation,
        # and a trial restarted from an older checkpoint redoes some steps (see _execute)
        if metrics:
            self._send("metrics", trial.trial_id, metrics=metrics, step=step)
        # bookkeeping as tags, not metrics: where the trial runs now (it changes when a failed
        # trial restarts elsewhere), the step its current attempt began at, the error mapping,
        # why training ended (names.STOP_*: steps done, time budget, plateau)
        for key, field in (
            (names.TAG_NODE, names.RESULT_NODE),
            (names.TAG_PID, "pid"),
            (names.TAG_RESUMED, names.RESULT_RESUMED),
            (names.ERROR_MAPPING_TAG, names.ERROR_MAPPING_TAG),
            (names.TAG_STOP_REASON, names.STOP_REASON),
        ):
            value, seen = str(result.get(field, "")), (trial.trial_id, key)
            if value and self._tags.get(seen) != value:
                self._send("tag", trial.trial_id, key=key, value=value)
                self._tags[seen] = value

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        # Tune has registered this checkpoint: a restart of the trial continues from here
        step = (checkpoint.get_metadata() or {}).get("step")
        if step is not None:
            self._start(trial)
            self._send("tag", trial.trial_id, key=names.TAG_CKPT_STEP, value=str(step))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        self._send("tag", trial.trial_id, key=names.TAG_FAILURES, value=str(trial.num_failures))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        self._send("tag", trial.trial_id, key=names.TAG_ERROR, value=_error_text(trial)[-4000:])
        self._send("end", trial.trial_id, status=names.FAILED)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        ckpt = trial.checkpoint
        if ckpt is not None and (ckpt.get_metadata() or {}).get("final"):
            self._send("files", trial.trial_id, checkpoint=checkpoint_uri(ckpt))
        self._send("end", trial.trial_id, status=names.FINISHED)


def checkpoint_uri(ckpt) -> str:
    """A checkpoint's location as one string (a local path, or scheme://path)."""
    fs = getattr(ckpt, "filesystem", None)
    kind = getattr(fs, "type_name", "local") if fs is not None else "local"
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


def _error_text(trial) -> str:
    """The trial's last error: Tune writes it on the driver first (trial.error_file) and copies
    it to the storage path later (trial.get_error() reads from there)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "error (no error file)")
