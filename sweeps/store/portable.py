"""Sweeps that outlive the machine they ran on: `amm sweep export` writes one portable file of a
sweep from its tracking store, `amm sweep import` recreates it in any MLflow store.

The file (`FORMAT`, version `VERSION`; gzip when its name ends in .gz) holds the spec and, per
trial, its resolved config (MLflow params), config hash, seed, status, stop reason, tags, every
logged metric's history and its final metrics; the run's figures only with `figures=True`.

A trial's identity is (sweep name, config hash, seed): an import creates no run that the store
already has, and of two records of one trial the finished one wins (`_better`), so that files
of one sweep exported from two machines merge. mlflow-export-import was not used: its import
creates a new run every time (no identity), and it writes a folder per run, not one file
(docs/sweeps.md, "Sweeps that outlive a machine").
"""

from __future__ import annotations

import base64
import gzip
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amm_core import names
from amm_core.errors import ConfigError
from sweeps.store import tracking

FORMAT = "amm-sweep-export"
VERSION = 1
# tags that name the store they were written in: set anew on import
_LOCAL_TAGS = {names.TAG_PARENT}
_STATUS_RANK = {names.FINISHED: 3, names.KILLED: 1, names.FAILED: 1, names.RUNNING: 0}


@dataclass(frozen=True)
class ImportReport:
    """What an import did, for its one console line."""

    sweep: str
    parent_run_id: str
    created: int  # trial runs created
    replaced: int  # unfinished runs that a finished record replaced
    kept: int  # records the store already had (or had better)


def _write(path: Path, doc: dict[str, Any]) -> None:
    blob = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    if path.suffix == ".gz":
        blob = gzip.compress(blob, mtime=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(path)


def read(path: str | Path) -> dict[str, Any]:
    """An export file, checked: its format and version, else ConfigError naming the file."""
    path = Path(path)
    try:
        blob = path.read_bytes()
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        doc = json.loads(blob)
    except FileNotFoundError:
        raise ConfigError(f"sweep export '{path}' does not exist") from None
    except (OSError, EOFError, ValueError) as e:
        raise ConfigError(
            f"sweep export '{path}' is not readable ({type(e).__name__}: {str(e)[:120]}); "
            "export it again with `amm sweep export NAME`"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"'{path}' is not a sweep export (format {FORMAT!r})")
    if doc.get("version") != VERSION:
        raise ConfigError(
            f"sweep export '{path}' has version {doc.get('version')!r}; this amm reads "
            f"version {VERSION}"
        )
    for key in ("sweep", "experiment", "parent", "trials"):
        if key not in doc:
            raise ConfigError(f"sweep export '{path}': key '{key}' is missing")
    return doc


# ---------------------------------------------------------------- export
def experiment_ids(c) -> list[str]:
    """Every experiment of the store, page by page."""
    exp_ids, token = [], None
    while True:
        page = c.search_experiments(max_results=1000, page_token=token)
        exp_ids += [e.experiment_id for e in page]
        token = page.token
        if not token:
            return exp_ids


def _parent(c, name: str):
    """The sweep's newest parent run in the store (any experiment), or None."""
    runs = c.search_runs(
        experiment_ids(c),
        f"tags.`{names.TAG_SWEEP}` = '{name}' and tags.`{names.TAG_ROLE}` = '{names.ROLE_SWEEP}'",
        max_results=1000,
    )
    return max(runs, key=lambda r: r.info.start_time or 0) if runs else None


def find_parent(uri: str, name: str):
    """The parent run of sweep `name` in the store at `uri`, or None."""
    return _parent(tracking.client(uri), name)


def trials_of(c, parent) -> list:
    """The trial runs under `parent` (deleted ones excluded)."""
    return c.search_runs(
        [parent.info.experiment_id],
        f"tags.`{names.TAG_PARENT}` = '{parent.info.run_id}'",
        max_results=10000,
    )


def _history(c, run) -> dict[str, list[list[float]]]:
    out = {}
    for key in sorted(run.data.metrics):
        hist = c.get_metric_history(run.info.run_id, key)
        out[key] = [[m.step, m.value, m.timestamp] for m in sorted(hist, key=lambda m: m.step)]
    return out


def _artifacts(c, run_id: str, folder: str) -> dict[str, str]:
    """Files under the run's artifact `folder`, base64 by relative path."""
    out: dict[str, str] = {}
    if not c.list_artifacts(run_id, folder):
        return out
    with tempfile.TemporaryDirectory() as d:
        local = c.download_artifacts(run_id, folder, d)
        for f in sorted(Path(local).rglob("*")):
            if f.is_file():
                out[f"{folder}/{f.relative_to(local)}"] = base64.b64encode(f.read_bytes()).decode()
    return out


def run_record(c, run, figures: bool) -> dict[str, Any]:
    tags = {k: v for k, v in run.data.tags.items() if k not in _LOCAL_TAGS}
    params = dict(run.data.params)
    record = {
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        "params": params,
        "tags": tags,
        "config_hash": tags.get(names.TAG_HASH, ""),
        "seed": params.get("seed"),
        "stop_reason": tags.get(names.TAG_STOP_REASON, ""),
        "final": dict(run.data.metrics),
        "metrics": _history(c, run),
    }
    if figures:
        record["artifacts"] = _artifacts(c, run.info.run_id, names.FIGURES_DIR)
    return record


def export(name: str, uri: str, out: str | Path, figures: bool = False) -> dict[str, Any]:
    """Write sweep `name` of the store at `uri` to `out` -> the document written."""
    c = tracking.client(uri)
    parent = _parent(c, name)
    if parent is None:
        raise ConfigError(f"no sweep named '{name}' in {uri}")
    exp = c.get_experiment(parent.info.experiment_id)
    spec = _artifacts(c, parent.info.run_id, names.SPEC_DIR)
    trials = sorted(
        (run_record(c, r, figures) for r in trials_of(c, parent)),
        key=lambda t: (t["run_name"], t["start_time"] or 0),
    )
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "sweep": name,
        "experiment": exp.name,
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "amm_version": tracking.environment_tags().get(names.TAG_VERSION + "amm-sweeps", ""),
        "spec": {k: base64.b64decode(v).decode() for k, v in spec.items()},
        "parent": run_record(c, parent, False),
        "trials": trials,
    }
    _write(Path(out), doc)
    return doc


# ---------------------------------------------------------------- import
def _better(new: dict[str, Any], old_status: str) -> bool:
    """Does a record with status new['status'] replace a run with old_status? Only a finished
    record replaces an unfinished run."""
    return new["status"] == names.FINISHED and old_status != names.FINISHED


def identity(tags: dict[str, str], params: dict[str, str]) -> tuple[str, str]:
    """A trial's identity within its sweep: (config hash, seed)."""
    return tags.get(names.TAG_HASH, ""), str(params.get("seed", ""))


def create_run(c, exp_id: str, record: dict[str, Any], tags: dict[str, str]) -> str:
    from mlflow.entities import Metric

    run = c.create_run(
        exp_id, start_time=record.get("start_time"), tags=tags, run_name=record["run_name"]
    )
    run_id = run.info.run_id
    tracking.log_params(c, run_id, record.get("params", {}))
    items = [
        Metric(key, float(v), int(ts or 0), int(step))
        for key, hist in record.get("metrics", {}).items()
        for step, v, ts in hist
    ]
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[i : i + 1000])
    if not items and record.get("final"):  # a record without history: its final values
        tracking.log_metrics(c, run_id, record["final"], 0)
    files = record.get("artifacts", {})
    if files:
        with tempfile.TemporaryDirectory() as d:
            for rel, b64 in files.items():
                f = Path(d) / rel
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(base64.b64decode(b64))
            for sub in sorted({Path(rel).parts[0] for rel in files}):
                c.log_artifacts(run_id, str(Path(d) / sub), sub)
    status = record.get("status", names.FINISHED)
    status = names.KILLED if status == names.RUNNING else status  # no driver runs it here
    c.set_terminated(run_id, status, end_time=record.get("end_time"))
    return run_id


def import_doc(doc: dict[str, Any], uri: str) -> ImportReport:
    """Recreate the exported sweep in the store at `uri` (see the module's docstring)."""
    from sweeps.store import parent as parent_summary

    tracking.init_store(uri)
    c = tracking.client(uri)
    name = doc["sweep"]
    exp_id = tracking.experiment_id(c, doc["experiment"])
    parent = _parent(c, name)
    if parent is None:
        rec = doc["parent"]
        tags = {**rec.get("tags", {}), names.TAG_SWEEP: name, names.TAG_ROLE: names.ROLE_SWEEP}
        # no driver runs it here: a parent exported while RUNNING is imported KILLED
        status = names.KILLED if rec.get("status") == names.RUNNING else rec.get("status")
        rec = {**rec, "metrics": {}, "final": {}, "status": status or names.FINISHED}
        parent_id = create_run(c, exp_id, rec, tags)
        with tempfile.TemporaryDirectory() as d:
            for fname, text in doc.get("spec", {}).items():
                f = Path(d) / Path(fname).name
                f.write_text(text)
                c.log_artifact(parent_id, str(f), names.SPEC_DIR)
        parent_exp = exp_id
    else:
        parent_id, parent_exp = parent.info.run_id, parent.info.experiment_id
    have: dict[tuple[str, str], Any] = {}
    if parent is not None:
        for r in trials_of(c, parent):
            key = identity(r.data.tags, r.data.params)
            old = have.get(key)
            if old is None or _STATUS_RANK.get(r.info.status, 0) > _STATUS_RANK.get(
                old.info.status, 0
            ):
                have[key] = r
    created = replaced = kept = 0
    # the best record of a trial first: one run per trial, finished where any record is
    ranked = sorted(doc["trials"], key=lambda t: -_STATUS_RANK.get(t.get("status", ""), 0))
    for record in ranked:
        key = identity(record.get("tags", {}), record.get("params", {}))
        old = have.get(key)
        if old is not None and not _better(record, old.info.status):
            kept += 1
            continue
        tags = {**record.get("tags", {}), names.TAG_PARENT: parent_id, names.TAG_SWEEP: name}
        run_id = create_run(c, parent_exp, record, tags)
        if old is not None:
            c.delete_run(old.info.run_id)  # the unfinished record of a trial now finished
            replaced += 1
        else:
            created += 1
        have[key] = c.get_run(run_id)
    parent_summary.summarize(uri, parent_exp, name, parent_id)
    return ImportReport(name, parent_id, created, replaced, kept)
