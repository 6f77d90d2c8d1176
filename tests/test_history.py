"""The release history against a real Prefect server: runs appending at the same
moment keep every row, rows from before row artifacts are still read, and the UI's
table shows them all."""

import json
import threading

from prefect.artifacts import Artifact, create_table_artifact

from smartrelease.record.history import NO_VERSION, append_row, history_key, history_row, load_history, read_history
from smartrelease.report import ReleaseFacts, Report, Status, StepResult


def record(done: Report, run: str) -> None:
    """The row a run that reported `done` stores, as the flows store it (publish_report)."""
    append_row(done.environment, history_row(done, {}, run))


def report(environment: str, version: str) -> Report:
    return Report(flow="release", environment=environment, facts=ReleaseFacts(version=version),
                  results=[StepResult(name="verify", status=Status.PASSED, detail="ok", duration_ms=1)])


def test_appends_at_the_same_moment_lose_no_row():
    """Each of eight appends starts at once: a history rewritten whole by each (read,
    add one, write) keeps only some of them; one artifact per row keeps all."""
    start, versions = threading.Barrier(8), [f"1.0.{i}" for i in range(8)]

    def append(version: str) -> None:
        start.wait()
        record(report("racing", version), f"run-{version}")

    threads = [threading.Thread(target=append, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    rows = read_history("racing")
    assert sorted(r["version"] for r in rows) == versions
    assert len({r["row_id"] for r in rows}) == 8


def test_rows_from_before_row_artifacts_come_first_and_stay_in_the_uis_table():
    create_table_artifact(key=history_key("older"), table=[{"version": "0.9.0", "result": "released"}])
    record(report("older", "1.0.0"), "run-a")
    record(report("older", "1.1.0"), "run-b")
    assert [(r["version"], r["result"]) for r in read_history("older")] == [
        ("0.9.0", "released"), ("1.0.0", "released"), ("1.1.0", "released")]
    shown = json.loads(Artifact.get(history_key("older")).data)
    assert [r["version"] for r in shown] == ["0.9.0", "1.0.0", "1.1.0"]


def test_another_environments_rows_are_not_read():
    """`history-prod-r%` also matches the keys of an environment named prod-rx."""
    record(report("prod", "1.0.0"), "run-p")
    record(report("prod-rx", "9.9.9"), "run-x")
    assert [r["version"] for r in read_history("prod")] == ["1.0.0"]
    assert [r["version"] for r in read_history("prod-rx")] == ["9.9.9"]


def test_a_run_that_decided_no_version_writes_a_row_that_reads_back():
    """A rollback refused before it found a target (nothing in the history to go back
    to) is recorded, and does not come back as a malformed row on every later run."""
    failed = Report(flow="rollback", environment="undecided", facts=ReleaseFacts(version=None),
                    results=[StepResult(name="rollback-target", status=Status.FAILED, detail="no", duration_ms=1)])
    record(failed, "run-a")
    history = load_history("undecided")
    assert history.skipped == [] and [r["version"] for r in history.rows] == [NO_VERSION]
    assert history.rows[0]["result"] == "failed at rollback-target"
