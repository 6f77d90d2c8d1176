"""The restore drill on the shared sandbox: the backups a release takes (encrypted,
written by the PostgreSQL 17 db service's own pg_dump) restored into a scratch
database by that service's own pg_restore, and checked against the migration files
of the version the history says ran when each was taken."""

from pathlib import Path

import pytest

from smartrelease.flows.drill import drill
from smartrelease.record.history import last_release, read_history
from smartrelease.sandbox.app_changes import migration
from smartrelease.report import Report, Status
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.backup.take import take_backup
from smartrelease.tasks.scratch_database import leftovers
from tests.conftest import SENTINELS, SHARED_ENV, assert_no_secret, stored

pytestmark = pytest.mark.e2e
ENV = SHARED_ENV
MIGRATION = "20260102000000-add-account-drill-note.js"


def run_drill() -> tuple[object, Report]:
    state = drill(environment=ENV, return_state=True)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, Report), report
    return state, report


def steps(report: Report) -> dict:
    return {r.name: r for r in report.results}


def scratch_left(env) -> list[str]:
    with connect(env, "test") as conn:
        return leftovers(conn)


def test_drills_of_a_pre_migration_backup_and_of_one_taken_after_the_release(shared_sandbox):
    sandbox = shared_sandbox
    if last_release(ENV) is None:  # this module first on a new sandbox: a release for the backup to belong to
        state, first, _ = sandbox.release("8.0.0")
        assert state.is_completed(), first.text()
    ran = last_release(ENV)["version"]
    state, released, _ = sandbox.release("8.1.0", files={f"migrations/{MIGRATION}": migration(
        "ALTER TABLE accounts ADD COLUMN drill_note text", "ALTER TABLE accounts DROP COLUMN drill_note")})
    assert state.is_completed(), released.text()
    assert released.facts.migrations_applied == [MIGRATION] and released.facts.backup
    live = sandbox.fingerprint()

    # The newest backup is the one 8.1.0 took before migrating, while `ran` served.
    state, report = run_drill()
    assert state.is_completed(), report.text()
    by = steps(report)
    assert all(r.status == Status.PASSED for r in report.results), report.text()
    d = report.facts.drill
    assert d.backup == released.facts.backup and d.backup_format == "custom, encrypted"
    assert d.released_version == ran and MIGRATION not in d.migrations
    assert f"those of {ran}, which ran when it was taken" in by["migrations"].detail
    assert "pg_restore of the db service's container" in by["restore"].detail  # PostgreSQL 17's own
    assert "at other migrations: not compared" in by["tables"].detail
    # Nothing was written since the backup but 8.1.0's migration: the app's tables have
    # the rows the live ones have, the migrations table one row fewer.
    data = {t: n for t, n in d.tables.items() if t != "public.SequelizeMeta"}
    assert data and data == {f"public.{t}": live[t][0] for t in live if t not in ("columns", "SequelizeMeta")}
    assert d.tables["public.SequelizeMeta"] == len(d.migrations) == live["SequelizeMeta"][0] - 1
    assert d.restore_s > 0
    assert d.wal_age_s is not None and d.wal_age_s >= 0  # the db service archives WAL
    assert sandbox.fingerprint() == live and scratch_left(sandbox.env()) == []
    texts = stored(state.state_details.flow_run_id)
    assert f"drill-{ENV}" in texts["artifact_keys"]
    texts["report"] = report.model_dump_json() + report.markdown() + report.text()
    assert_no_secret(texts, SENTINELS, "of a drill")

    # A backup taken now holds 8.1.0's migrations: the drill matches them to 8.1.0's
    # image and, both at the same migrations, the restored tables to the live ones.
    now = take_backup(sandbox.env(), "8.1.0-drill", "backup")
    try:
        state, report = run_drill()
        assert state.is_completed(), report.text()
        d = report.facts.drill
        assert d.backup == now.name and d.released_version == "8.1.0" and MIGRATION in d.migrations
        assert steps(report)["tables"].detail.endswith("as the live database's")
        assert read_history(ENV)[-1]["result"] == "drill passed"
        assert sandbox.fingerprint() == live and scratch_left(sandbox.env()) == []
    finally:
        Path(now.path).unlink()
        Path(now.path + ".sha256").unlink()
