"""Checks for scripts/cluster_test.sh, read from a sweep's Tune storage and from MLflow.

  cluster_check.py alive DASHBOARD_URL               the addresses of the alive Ray nodes
  cluster_check.py nodes STORAGE NAME IP...          every IP ran at least one trial
  cluster_check.py wait-checkpoint STORAGE NAME IP S  a running trial on IP has a checkpoint
  cluster_check.py mlflow URI NAME TRIALS [LOST]      one finished run per trial, none RUNNING

Each prints what it found and exits 1 when the check fails.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def trial_results(storage: str, name: str) -> dict[str, list[dict]]:
    """Each trial's results as Tune wrote them (result.json, one line a report)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(Path(storage, name).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out.setdefault(rows[0]["trial_id"], []).extend(rows)
    return out


def alive(url: str) -> bool:
    from ray.util.state import list_nodes

    ips = sorted(n.node_ip for n in list_nodes(address=url) if n.state == "ALIVE")
    print(" ".join(ips))
    return bool(ips)


def nodes(storage: str, name: str, ips: list[str]) -> bool:
    trials = trial_results(storage, name)
    seen: set[str] = set()
    for trial, rows in sorted(trials.items()):
        where = list(dict.fromkeys(r.get("node_ip") for r in rows))
        seen.update(where)
        print(f"  trial {trial}: {len(rows)} results on node(s) {', '.join(map(str, where))}")
    missing = [ip for ip in ips if ip not in seen]
    if not trials or missing:
        print(f"  no trial ran on {', '.join(missing) or 'any node'}")
        return False
    return True


def wait_checkpoint(storage: str, name: str, ip: str, timeout: float) -> bool:
    """A trial whose newest result came from IP, with a checkpoint and not done yet."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for trial, rows in trial_results(storage, name).items():
            last = rows[-1]
            folder = next(Path(storage, name).glob(f"*{trial}*"), None)
            has_ckpt = folder is not None and any(folder.glob("checkpoint_*"))
            if last.get("node_ip") == ip and has_ckpt and not last.get("done"):
                step = last.get("step", last.get("training_iteration"))
                print(f"  trial {trial} runs on {ip}, at step {step}, with a checkpoint")
                return True
        time.sleep(1)
    print(f"  no running trial with a checkpoint on {ip} within {timeout:g} s")
    return False


def mlflow_runs(uri: str, name: str, trials: int, lost_ip: str | None) -> bool:
    from mlflow.tracking import MlflowClient

    from amm_core import names

    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`{names.TAG_SWEEP}` = '{name}'",
        max_results=1000,
    )
    children = [r for r in runs if r.data.tags.get(names.TAG_ROLE) == names.ROLE_TRIAL]
    ids = [r.data.tags.get(names.TAG_TRIAL) for r in children]
    ok = True
    for r in children:
        t = r.data.tags
        print(
            f"  run {r.info.run_name}: {r.info.status}, trial {t.get(names.TAG_TRIAL)},"
            f" failures {t.get(names.TAG_FAILURES, '0')},"
            f" resumed from step {t.get(names.TAG_RESUMED, '-')}"
        )
    running = [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    not_finished = [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    print(f"  {len(runs)} runs of sweep {name} ({len(children)} trials), RUNNING: {running}")
    if len(children) != trials or len(set(ids)) != trials:
        print(f"  expected one run for each of {trials} trials, found {len(children)} ({ids})")
        ok = False
    if running or not_finished:
        print(f"  runs not FINISHED: {not_finished}")
        ok = False
    if lost_ip is not None:
        resumed = [
            r
            for r in children
            if int(r.data.tags.get(names.TAG_FAILURES, "0") or 0) >= 1
            and int(r.data.tags.get(names.TAG_RESUMED, "0") or 0) > 0
        ]
        print(f"  restarted from a checkpoint after the lost node: {len(resumed)} trial(s)")
        ok = ok and bool(resumed)
    return ok


def main(argv: list[str]) -> int:
    cmd, *args = argv
    if cmd == "alive":
        ok = alive(args[0])
    elif cmd == "nodes":
        ok = nodes(args[0], args[1], args[2:])
    elif cmd == "wait-checkpoint":
        ok = wait_checkpoint(args[0], args[1], args[2], float(args[3]))
    elif cmd == "mlflow":
        ok = mlflow_runs(args[0], args[1], int(args[2]), args[3] if len(args) > 3 else None)
    else:
        print(f"cluster_check: unknown check {cmd!r}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
