"""The driver-side Tune callback that writes a sweep to MLflow (the only MLflow writer).

One child run per trial, created on the trial's first start and reattached (by its run id in
`amm_runs.json`, else by the tags `amm.sweep` + `amm.trial_id` under this parent) when the trial
restarts after a failure or the sweep is resumed. Every write goes through an `Outbox`
(sweeps/store/outbox.py), so a tracking outage delays writes instead of losing them.
Results become metrics at their training step; the final result's test metrics and the run's
files (from the final checkpoint) are logged when the trial completes.
"""

from __future__ import annotations

import math
import signal
from pathlib import Path
from typing import Any

from ray import tune

from amm_core import names
from amm_core.run.report import Report
from sweeps.driver import stopping
from sweeps.driver.trainable import trial_config
from sweeps.planning.spec import run_name
from sweeps.store import tracking
from sweeps.store.folder import CheckpointRecord, SweepFolder
from sweeps.store.outbox import Op, Outbox, is_outage

# Tune's own bookkeeping in every result, and ours (the epoch follows from the step, the resume
# step is a tag): not metrics of the model
TUNE_KEYS = """training_iteration timestamp time_this_iter_s time_total_s time_since_restore
    iterations_since_restore pid done timesteps_total episodes_total timesteps_since_restore
    warmup_time""".split()
SKIP = {*TUNE_KEYS, names.STEP, names.EPOCH}
SKIP |= {names.RESULT_FINAL, names.RESULT_RESUMED, names.RESULT_TRAINED}


class MlflowSweepCallback(tune.Callback):
    """The sweep in `folder` (parent run, base config: `folder.meta`) -> tracking store `uri`."""

    def __init__(self, folder: SweepFolder, uri: str, variants: dict[str, dict[str, Any]]) -> None:
        self.folder, self.uri, self.variants, meta = folder, uri, variants, folder.meta
        self.exp_id, self.parent_id = meta.experiment_id, meta.parent_run_id
        self.base_flat = meta.base_flat
        self._client = None
        self._out: Outbox | None = None
        self.runs: dict[str, str] = folder.runs()  # trial id -> MLflow run id
        self._last_step: dict[tuple[str, str], int] = {}
        self._tags: dict[tuple[str, str], str] = {}  # (trial, key) -> value sent by this driver
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
            self._out = Outbox(self.folder.outbox_path, self._execute)
        return self._out

    # ---------------------------------------------------------------- writes (via the outbox)

    def _send(self, op: Op, trial_id: str | None, **args: Any) -> None:
        self.outbox.send({"op": op.value, "trial": trial_id, **args})

    def _start(self, trial) -> None:
        """Queue the creation (or reattachment) of the trial's child run, once per driver."""
        if trial.trial_id in self._started:
            return
        self._started.add(trial.trial_id)
        cfg = trial_config(self.base_flat, trial.config, self.variants)
        tags = {names.TAG_HASH: cfg.hash(), names.TAG_TRIAL_NAME: str(trial)}
        if names.VARIANT in trial.config:
            tags[names.TAG_VARIANT] = str(trial.config[names.VARIANT])
        params = cfg.stored_flat()  # as the sweeps tracked before (None as its old sentinel)
        self._send(Op.START, trial.trial_id, name=run_name(trial.config), params=params, tags=tags)

    def _execute(self, item: dict[str, Any]) -> None:
        """Make one queued write against the tracking store."""
        op, tid, c = Op(item["op"]), item["trial"], self.client
        if op is Op.START:
            self._reattach_or_create(tid, item)
            return
        run_id = self.parent_id if tid is None else self.runs[tid]
        match op:
            case Op.METRICS:
                step, last = item["step"], self._last_step
                metrics = {
                    k: v for k, v in item["metrics"].items() if step > last.get((run_id, k), -1)
                }
                if metrics:
                    tracking.log_metrics(c, run_id, metrics, step)
                for k in metrics:
                    last[(run_id, k)] = step
            case Op.TAG:
                c.set_tag(run_id, item["key"], item["value"])
            case Op.RUNNING:
                if c.get_run(run_id).info.status != names.RUNNING:
                    c.update_run(run_id, status=names.RUNNING)
            case Op.END:
                c.set_terminated(run_id, item["status"])
            case Op.END_IF_RUNNING:
                if c.get_run(run_id).info.status == names.RUNNING:
                    c.set_terminated(run_id, item["status"])
            case Op.FILES:
                self._log_files(run_id, item["checkpoint"])

    def _reattach_or_create(self, trial_id: str, item: dict[str, Any]) -> None:
        run_id = self.runs.get(trial_id)
        if run_id is not None:  # this sweep's own run (amm_runs.json), by id
            if self.client.get_run(run_id).info.status != names.RUNNING:
                self.client.update_run(run_id, status=names.RUNNING)
            is_new = False
        else:
            run_id, is_new = tracking.start_child(
                self.client,
                self.exp_id,
                self.parent_id,
                self.folder.name,
                trial_id,
                item["name"],
                item["params"],
                item["tags"],
            )
            self.runs[trial_id] = run_id
            self.folder.save_runs(self.runs)
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
        for trial_id in sorted(self.runs):
            self._send(Op.END_IF_RUNNING, trial_id, status=names.KILLED)
        self._send(Op.END, None, status=status)
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
        self._send(Op.RUNNING, trial.trial_id)

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self._start(trial)
        step = int(result.get(names.STEP, result.get("training_iteration", 0)))
        # the trial's report as the trainable sent it (`Report.line()`), Tune's keys aside
        report = Report.from_line({k: v for k, v in result.items() if k not in SKIP})
        metrics = {}
        for k, v in report.metrics.items():
            if isinstance(v, bool) or not isinstance(v, int | float):  # not a report's
                continue
            if math.isfinite(v):
                metrics[k] = v
                if names.is_error(k):  # the UI's column in percent (names.percent_key)
                    metrics[names.percent_key(k)] = round(100.0 * v, 9)  # 5.97, not 5.970...01
        # each (key, step) once, in step order: the final result repeats the last evaluation,
        # and a trial restarted from an older checkpoint redoes some steps (see _execute)
        if metrics:
            self._send(Op.METRICS, trial.trial_id, metrics=metrics, step=step)
        # bookkeeping as tags, not metrics: where the trial runs now (it changes when a failed
        # trial restarts elsewhere), the step its current attempt began at, the error mapping,
        # why training ended (names.STOP_*: steps done, time budget, plateau), what the restart
        # phase chose by (the report's info)
        for key, value in (
            (names.TAG_NODE, result.get(names.RESULT_NODE, "")),
            (names.TAG_PID, result.get("pid", "")),
            (names.TAG_RESUMED, result.get(names.RESULT_RESUMED, "")),
            (names.ERROR_MAPPING_TAG, report.info.get(names.ERROR_MAPPING_TAG, "")),
            (names.TAG_STOP_REASON, report.stop_reason),
            (names.TAG_RESTART_SCORES, report.info.get(names.RESTART_SCORES, "")),
            (names.TAG_RESTART_VAL_ERRORS, report.info.get(names.RESTART_VAL_ERRORS, "")),
        ):
            value, seen = str(value), (trial.trial_id, key)
            if value and self._tags.get(seen) != value:
                self._send(Op.TAG, trial.trial_id, key=key, value=value)
                self._tags[seen] = value

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info) -> None:
        # Tune has registered this checkpoint: a restart of the trial continues from here
        record = CheckpointRecord.of(checkpoint)
        if record is not None:
            self._start(trial)
            self._send(Op.TAG, trial.trial_id, key=names.TAG_CKPT_STEP, value=str(record.step))

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        self._send(Op.TAG, trial.trial_id, key=names.TAG_FAILURES, value=str(trial.num_failures))

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        self._send(Op.TAG, trial.trial_id, key=names.TAG_ERROR, value=error_text(trial)[-4000:])
        self._send(Op.END, trial.trial_id, status=names.FAILED)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._start(trial)
        record = CheckpointRecord.of(trial.checkpoint)
        if record is not None and record.final:
            self._send(Op.FILES, trial.trial_id, checkpoint=checkpoint_uri(trial.checkpoint))
        self._send(Op.END, trial.trial_id, status=names.FINISHED)


def checkpoint_uri(ckpt) -> str:
    """A checkpoint's location as one string (a local path, or scheme://path)."""
    fs = getattr(ckpt, "filesystem", None)
    kind = getattr(fs, "type_name", "local") if fs is not None else "local"
    return ckpt.path if kind == "local" else f"{kind}://{ckpt.path}"


def error_text(trial) -> str:
    """The trial's last error: Tune writes it on the driver first (trial.error_file) and copies
    it to the storage path later (trial.get_error() reads from there)."""
    path = trial.error_file
    if path and Path(path).is_file():
        return Path(path).read_text(errors="replace")
    return str(trial.get_error() or "error (no error file)")
