"""The Ray Tune function trainable: a thin adapter around `amm_core.run.restarts.train`.

Everything about the method is in `amm_core`; this file only connects the loop's hooks to Tune:
each evaluation's checkpoint folder goes to `tune.report(..., checkpoint=...)`, a restarted trial
continues from `tune.get_checkpoint()`, and the final checkpoint also carries the run's files
(final.json, config.json, metrics.jsonl, figures/) so the driver can log them to MLflow even when
the trial ran on another node. Trials never talk to MLflow.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.run.report import Report
from sweeps.planning.spec import trial_config
from sweeps.store.folder import CheckpointRecord, SweepFolder


def _final_folder(out_dir: Path, ckpt_dir: Path | None) -> Path:
    """The last checkpoint plus the run's files, as one folder for the final report."""
    final = out_dir / "final_checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    if ckpt_dir is not None:
        for f in Path(ckpt_dir).iterdir():
            if f.is_file():
                try:
                    os.link(f, final / f.name)  # same filesystem: no copy of the weights
                except OSError:
                    shutil.copy2(f, final / f.name)
    for name in names.RUN_FILES:
        if (out_dir / name).is_file():
            shutil.copy2(out_dir / name, final / name)
    if (out_dir / names.FIGURES_DIR).is_dir():
        shutil.copytree(out_dir / names.FIGURES_DIR, final / names.FIGURES_DIR)
    return final


def train_trial(
    params: dict[str, Any],
    *,
    base: dict[str, Any],
    variants: dict[str, dict[str, Any]] | None = None,
    threads: int = 1,
    folder: SweepFolder | None = None,
) -> None:
    """Tune entry point: `params` are the swept values of this trial (dotted keys)."""
    import ray
    import torch
    from ray import tune

    from amm_core.config import phase_steps
    from amm_core.run import restarts

    torch.set_num_threads(max(1, threads))
    cfg = trial_config(base, params, variants)
    out_dir = Path.cwd() / "run"  # the trial's working folder on the node that runs it
    node = ray.get_runtime_context().get_node_id()

    resume_from = None
    ckpt = _newest(tune.get_checkpoint(), folder, tune.get_context().get_trial_id())
    if ckpt is not None:
        # as_directory() may hand out a temporary folder: copy to a folder the trial owns
        local = out_dir / "resume_checkpoint"
        shutil.rmtree(local, ignore_errors=True)
        with ckpt.as_directory() as d:
            shutil.copytree(d, local)
        resume_from = local
    record = CheckpointRecord.of(ckpt) or CheckpointRecord(0)
    last: dict[str, Any] = dict(record.last)  # the last evaluation's result

    def send(result: dict[str, Any], final: bool, checkpoint=None) -> None:
        bookkeeping = {names.RESULT_NODE: node, names.RESULT_RESUMED: record.step}
        trained = int(result.get(names.STEP, 0)) + phase_steps(cfg)  # the console's progress
        bookkeeping[names.RESULT_TRAINED] = trained
        result = {**result, **bookkeeping, names.RESULT_FINAL: int(final)}
        tune.report(result, checkpoint=checkpoint)

    def report(r: Report, ckpt_dir: Path | None, final: bool) -> None:
        # a Tune result is the report's line: the step, its metrics (numbers), its info (words)
        if final:
            # the final result repeats the last evaluation's numbers: schedulers and searchers
            # expect their metric in every result (the driver logs each (key, step) once)
            kept, out = _final_folder(out_dir, ckpt_dir), {**last, **r.line()}
        else:
            kept, out = ckpt_dir, r.line()
            last.clear()
            last.update(out)
        checkpoint = None
        if kept is not None:
            checkpoint = tune.Checkpoint.from_directory(str(kept))
            CheckpointRecord(r.step, final, last).save(checkpoint)
        send(out, final, checkpoint)

    if record.final and resume_from is not None:
        # it finished before the driver stopped: report its stored result, train nothing
        final = json.loads((resume_from / names.FINAL_FILE).read_text())
        checkpoint = tune.Checkpoint.from_directory(str(resume_from))
        record.save(checkpoint)
        send({**last, **final}, True, checkpoint)
        return
    if last and resume_from is not None:
        # the evaluation that wrote this checkpoint may never have reached the driver (a stop
        # or kill between the two): report it again; the driver logs each (key, step) once
        send(last, False)
    restarts.train(cfg, out_dir, report=report, resume_from=resume_from, note=_note)


def _note(line: str) -> None:
    """The loop's lines for a person (the restart phase's starts and choice) in the trial's log."""
    print(f"amm: {line}", file=sys.stderr, flush=True)


def _newest(ckpt, folder: SweepFolder | None, trial_id: str):
    """Tune's checkpoint of this trial, or a newer complete one in its storage folder: after a
    driver kill Tune's saved state can lag behind the checkpoints the trial wrote."""
    from ray import tune

    from amm_core.errors import CheckpointError
    from amm_core.run.checkpoint import load_checkpoint

    if folder is None:
        return ckpt
    known = (CheckpointRecord.of(ckpt) or CheckpointRecord(-1)).step
    for record, path in reversed(folder.checkpoints(trial_id)):  # none on remote storage
        if record.step <= known:
            break
        try:
            load_checkpoint(path)  # complete? (a kill can cut a copy short)
        except CheckpointError:
            continue
        return tune.Checkpoint(str(path))
    return ckpt
