"""A sweep's folder `<storage>/<name>/`, on a local path or a pyarrow URI (s3://, gs://, ...),
told apart here only, once (`SweepFolder.remote`). It holds Ray Tune's experiment (tuner.pkl,
trial folders, checkpoints: `CheckpointRecord`), `amm_sweep.json` (`SweepMeta`), and on local
storage `amm_runs.json` (trial id -> MLflow run id) and the outbox (sweeps/store/outbox.py);
the lock (sweeps/store/lock.py) is `<storage>/<name>.lock`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amm_core import names, settings
from amm_core.errors import ConfigError
from amm_core.fs import check_out_dir, write_atomic
from amm_core.loader import build, within
from sweeps.store.outbox import OUTBOX_FILE

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,120}$")


@dataclass(frozen=True)
class SweepMeta:
    """`amm_sweep.json`, written at the start; a resume may change base_flat and tracking_uri."""

    name: str
    spec_path: str
    spec_text: str  # the spec as it was when the sweep started
    overrides: dict[str, Any]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    storage: str
    base_flat: dict[str, Any]  # the trials' base config (preset + overrides + data root)
    resources: dict[str, float] | None = None  # as run (`--set resources.gpu=0`)
    experiment: str = ""
    cells: list[dict[str, Any]] = field(default_factory=list)  # a grid's cells, in spec order
    created: str = ""


@dataclass(frozen=True)
class CheckpointRecord:
    """A trial checkpoint's metadata: its step, whether it is the final one (test metrics, run
    files), the last evaluation's result (for a restart right before the final report)."""

    step: int
    final: bool = False
    last: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, ckpt: Any) -> CheckpointRecord | None:
        """The record of a Tune checkpoint, or in its metadata; None when there is none."""
        try:
            return build(cls, ckpt.get_metadata() if hasattr(ckpt, "get_metadata") else ckpt)
        except ConfigError:
            return None

    def save(self, ckpt: Any) -> None:
        ckpt.set_metadata(dataclasses.asdict(self))


def _fs(path: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(path)


def is_remote(storage: str) -> bool:
    """A storage URI (s3://, gs://, ...) rather than a local folder: the one rule."""
    return "://" in storage


class SweepFolder:
    """The folder of sweep `name` under `storage` (default: the configured sweep storage)."""

    def __init__(self, storage: str | None, name: str) -> None:
        storage = storage or settings.sweep_storage()
        self.name, self.remote = name, is_remote(storage)
        if self.remote:
            self.storage, self.path = storage, f"{storage.rstrip('/')}/{name}"
        else:
            self.storage = str(Path(storage).expanduser().resolve())
            self.path = str(Path(self.storage) / name)
        self.lock_path, self.meta_path = f"{self.path}.lock", self.file(names.SWEEP_FILE)
        self._meta: SweepMeta | None = None

    def file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def check(self) -> None:
        """A local storage folder must be a writable folder (or creatable): one line if not."""
        if not self.remote:
            check_out_dir(Path(self.storage), "--storage")

    def read_text(self, path: str) -> str | None:
        """The file's text; None when it does not exist (or a remote store cannot read it)."""
        if not self.remote:
            return Path(path).read_text() if Path(path).is_file() else None
        fs, p = _fs(path)
        try:
            with fs.open_input_stream(p) as f:
                return f.read().decode()
        except (FileNotFoundError, OSError):
            return None

    def write_text(self, path: str, text: str) -> None:
        """Write a whole file; a local one atomically (a temporary file, then rename)."""
        if not self.remote:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(path), text)
            return
        fs, p = _fs(path)
        fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(p) as f:
            f.write(text.encode())

    def delete(self, path: str) -> None:
        if not self.remote:
            Path(path).unlink(missing_ok=True)
            return
        fs, p = _fs(path)
        fs.delete_file(p)

    def exists(self) -> bool:
        if not self.remote:
            return Path(self.path).exists()
        fs, p = _fs(self.path)
        return fs.get_file_info(p).type.name != "NotFound"

    def forget(self) -> None:
        """Remove a sweep folder whose Tuner never started (only what `run` wrote there)."""
        if not self.remote:
            shutil.rmtree(self.path, ignore_errors=True)

    @property
    def meta(self) -> SweepMeta:
        """`amm_sweep.json`, read once; a ConfigError naming the sweeps there when it is missing."""
        if self._meta is None:
            text = self.read_text(self.meta_path)
            if text is None:
                known = ""
                if not self.remote and Path(self.storage).is_dir():
                    found = Path(self.storage).glob(f"*/{names.SWEEP_FILE}")
                    found = sorted(p.parent.name for p in found)
                    known = f"; sweeps there: {', '.join(found[-10:]) or 'none'}"
                raise ConfigError(
                    f"no sweep named '{self.name}' under {self.storage}{known} "
                    "(pass --storage if it lives elsewhere)"
                )
            with within(f"sweep file '{self.meta_path}'"):
                self._meta = build(SweepMeta, self.parse(self.meta_path, text))
        return self._meta

    def unreadable(self, path: str, why: str) -> ConfigError:
        """The one error for a damaged file of the sweep: which, why, and what to do."""
        return ConfigError(
            f"sweep file '{path}' is unreadable ({why}); the sweep's finished trials are in its "
            f"tracking store: move {self.path} away, then `amm sweep run SPEC --name "
            f"{self.name}` trains only the cells without a finished trial, under the same parent"
        )

    def parse(self, path: str, text: str) -> Any:
        """JSON of one of the sweep's files, or `unreadable`."""
        try:
            return json.loads(text)
        except ValueError as e:
            raise self.unreadable(path, f"{type(e).__name__}: {str(e)[:80]}") from None

    def tune_state(self) -> dict[str, Any] | None:
        """Tune's newest experiment state on local storage, parsed (`unreadable` if damaged);
        None if there is none or the storage is remote."""
        if self.remote:
            return None
        states = sorted(Path(self.path).glob("experiment_state-*.json"))
        if not states:
            return None
        return self.parse(str(states[-1]), states[-1].read_text())

    def save_meta(self, meta: SweepMeta) -> None:
        self.write_text(self.meta_path, json.dumps(dataclasses.asdict(meta), indent=1))
        self._meta = meta

    def update_meta(self, **changes: Any) -> SweepMeta:
        """Change fields of the stored metadata and write it back (kept for later commands)."""
        self.save_meta(meta := dataclasses.replace(self.meta, **changes))
        return meta

    def runs(self) -> dict[str, str]:
        """trial id -> MLflow run id; {} on remote storage (there the run's tags reattach it)."""
        path = self.file(names.RUNS_FILE)
        text = None if self.remote else self.read_text(path)
        return self.parse(path, text) if text and text.strip() else {}

    def save_runs(self, runs: dict[str, str]) -> None:
        if not self.remote:
            self.write_text(self.file(names.RUNS_FILE), json.dumps(runs, indent=1, sort_keys=True))

    @property
    def outbox_path(self) -> Path | None:
        """Where tracking writes wait through an outage; None (memory only) on remote storage."""
        return None if self.remote else Path(self.file(OUTBOX_FILE))

    def trial_dir(self, trial_id: str) -> Path | None:
        """A trial's folder on local (or shared) storage; None on remote storage."""
        return None if self.remote else Path(self.path) / names.trial_dirname(trial_id)

    def checkpoints(self, trial_id: str) -> list[tuple[CheckpointRecord, Path]]:
        """The trial's complete checkpoints (record, folder), oldest first; none if remote."""
        folder, out = self.trial_dir(trial_id), []
        for d in folder.glob("checkpoint_*") if folder is not None else ():
            try:
                record = CheckpointRecord.of(json.loads((d / ".metadata.json").read_text()))
            except (OSError, ValueError):
                continue  # being written, or damaged
            if record is not None and (d / names.STATE_FILE).is_file():
                out.append((record, d))
        return sorted(out, key=lambda c: (c[0].step, c[0].final, c[1].name))

    def finished_on_disk(self, trial_id: str) -> bool:
        """The trial wrote its final checkpoint (test metrics and run files) before a stop."""
        cps = self.checkpoints(trial_id)
        return bool(cps and cps[-1][0].final)
