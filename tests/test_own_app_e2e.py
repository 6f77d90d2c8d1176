"""`smartrelease sandbox up --app PATH` around an app written apart from the stand-in
(tests/apps/ledger): its own service names (api, web, postgres, proxy), endpoints,
nested version keys, migrations table and undo command, all set in its
smartrelease.env. Releases and rollbacks go through the same flows as for the
stand-in; nothing here knows the ledger's names but its contract file."""

from pathlib import Path

import pytest
from psycopg import sql

from smartrelease.blocks import load_environment
from smartrelease.flows.release import release
from smartrelease.sandbox.app_changes import commit_version, migration
from smartrelease.report import Status
from smartrelease.adapters.postgres import connect
from tests.conftest import SENTINELS, assert_no_secret, stored
from tests.release_sandbox import app_checkout, module_sandbox

pytestmark = pytest.mark.e2e
LEDGER = Path(__file__).parent / "apps" / "ledger"
ENV = "ledger"


@pytest.fixture(scope="module")
def ledger(shared_registry):
    """The ledger's checkout (a copy, committed as its developers would have it) and a
    sandbox brought up around it with `--app`."""
    with app_checkout(LEDGER, "ledger") as app, \
            module_sandbox("smartrelease-ledger-e2e", ENV, registry=shared_registry, app=app) as sb:
        yield sb.settings, app


def logged_migrations() -> list[str]:
    with connect(load_environment(ENV), "test") as conn:
        assert conn.execute("SELECT to_regclass('\"SequelizeMeta\"')").fetchone()[0] is None  # not Sequelize's default
        return [r[0] for r in conn.execute(sql.SQL("SELECT name FROM migrations_log ORDER BY name"))]


def ship(app: Path, version: str, files: dict[str, str]):
    commit_version(app, version, files)
    state = release(environment=ENV, return_state=True)
    return state, state.result(raise_on_failure=False)


def test_a_release_of_your_own_app_follows_its_contract(ledger):
    settings, app = ledger
    name = "20250201000000-entry-currency.js"
    state, report = ship(app, "1.1.0", {f"db/migrations/{name}": migration(
        "ALTER TABLE entries ADD COLUMN currency CHAR(3) NOT NULL DEFAULT 'EUR'",
        "ALTER TABLE entries DROP COLUMN currency", style="esm")})
    assert state.is_completed(), report.text()
    steps = {r.name: r for r in report.results}
    assert [n for n in steps if n.startswith("smoke ")] == [
        "smoke /healthz", "smoke /readyz", "smoke /api/build", "smoke /api/auth/status"]
    assert steps["migration-guard"].detail == f"1 pending: {name}"
    assert steps["metrics"].detail.startswith("http://api:3000/internal/metrics: ")
    assert steps["verify"].detail.startswith("1.1.0 (") and "production" in steps["verify"].detail
    assert logged_migrations() == ["20250101000000-entries.js", name]
    texts = stored(state.state_details.flow_run_id)
    assert "@postgres:5432/" in texts["logs"] and ", PostgreSQL 17." in texts["logs"]
    assert_no_secret({**texts, "report": report.model_dump_json() + report.text()}, SENTINELS, "of the ledger's release")


def test_a_failed_release_of_your_own_app_is_undone_with_its_own_undo_command(ledger):
    settings, app = ledger
    names = ["20250301000000-entry-note.js", "20250301000001-broken.js"]
    before = logged_migrations()
    state, report = ship(app, "1.2.0", {
        f"db/migrations/{names[0]}": migration("ALTER TABLE entries ADD COLUMN note TEXT",
                                               "ALTER TABLE entries DROP COLUMN note", style="exports"),
        f"db/migrations/{names[1]}": migration("ALTER TABLE no_such_table ADD COLUMN x INT", "SELECT 1"),
    })
    commit_version(app, "1.2.0", {f"db/migrations/{n}": None for n in names})
    assert state.is_failed()
    steps, rb = {r.name: r for r in report.results}, report.facts.rollback
    # The ledger's api has no health check: the cutover cannot judge it, says so, and
    # wait-ready catches the crash.
    assert steps["launch"].status == Status.WARNING and "api" in steps["launch"].detail
    assert "has no health check" in steps["launch"].detail, steps["launch"].detail
    assert steps["wait-ready"].status == Status.FAILED and "api container" in steps["wait-ready"].detail
    assert rb.recovered and rb.to_version == "1.1.0" and rb.migrations_undone == [names[0]], report.text()
    assert steps["rollback: undo-migrations"].status == Status.PASSED  # `npm run migrate:undo`, the ledger's own
    assert steps["rollback: schema"].status == Status.PASSED
    assert logged_migrations() == before



def test_an_app_without_a_health_check_is_cut_over_with_a_warning_of_what_that_does_behind_a_discovery_edge(ledger):
    """The ledger's api has no health check (and ends at SIGTERM without finishing
    what it serves): the cutover cannot tell when its new containers listen, nor drain
    the old ones, and the report says what that does behind an edge that routes by
    Docker's health status, as the sandbox's does. Measured here once: 21 of 852
    requests failed at 50/s (docs/cutover.md)."""
    settings, app = ledger
    commit_version(app, "1.3.0")
    state = release(environment=ENV, return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), report.text()
    launch = {r.name: r for r in report.results}["launch"]
    assert launch.status == Status.WARNING and "has no health check" in launch.detail, launch.detail
    assert "an edge that routes by Docker's health status sent them requests until they stopped" in launch.detail, \
        launch.detail
    assert launch.detail.endswith("set RELEASE_EDGE=dns"), launch.detail
