"""The sweep's parent run as a summary (sweeps/store/parent.py), on a real SQLite store."""

from helpers import sqlite_store

from amm_core import names
from sweeps.store import parent


def test_the_summary_logs_each_value_once(tmp_path_factory):
    """Resumes summarize again: a value that did not change is not logged again at step 0."""
    uri, c, exp = sqlite_store(tmp_path_factory, "amm-parent-test")
    p = c.create_run(exp, tags={names.TAG_SWEEP: "s", names.TAG_ROLE: names.ROLE_SWEEP})
    pid = p.info.run_id
    child = c.create_run(exp, tags={names.TAG_SWEEP: "s", names.TAG_PARENT: pid})
    c.log_metric(child.info.run_id, names.TEST_ERROR_GY, 0.25)
    c.set_terminated(child.info.run_id, names.FINISHED)
    for _ in range(3):  # the run, then two resumes
        out = parent.summarize(uri, exp, "s", pid)
    assert out[names.TRIALS_FINISHED] == 1.0
    history = c.get_metric_history(pid, names.TRIALS_FINISHED)
    assert [m.value for m in history] == [1.0]
    assert [m.value for m in c.get_metric_history(pid, f"best/{names.TEST_ERROR_GY}")] == [0.25]
