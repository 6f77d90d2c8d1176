"""The invoicing app (tests/apps/invoicing), written apart from the stand-in and the
ledger in the shapes a team's own app has: a compose file whose app services are
`build:` sections (`dockerfile: Dockerfile.backend`, build args) with fixed
`container_name`s and no image variable; a client whose nginx serves the page and
proxies /api to `backend:5000`, the edge sending everything to it; build metadata
under `metadata` in `{"success": true, "metadata": {...}}`; Sequelize's own
migrations table, with a migration whose down step does nothing.

Released through the sandbox (`sandbox up --app`), then deployed by hand as its
runbook does it (`docker compose up -d --build`), adopted, released and rolled back
to. Both releases add a migration named before one already applied (out of order):
the undo command would revert the wrong one, so the rollback plan restores the
backup, and the database ends as it was."""

from pathlib import Path

import docker
import pytest

from smartrelease.blocks import load_environment
from smartrelease.flows.adopt import adopt
from smartrelease.record.history import read_history
from smartrelease.flows.release import release
from smartrelease.flows.rollback import rollback
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.report import Status
from smartrelease.adapters.postgres import connect
from tests.conftest import RUN_ID, by_name
from tests.release_sandbox import app_checkout, module_sandbox, release_by_hand, run_swept

pytestmark = pytest.mark.e2e
APP = Path(__file__).parent / "apps" / "invoicing"
ENV = "invoicing"
APPLIED_LAST = "20240320090000-create-invoices.js"  # in 1.0.0, with a down step that does nothing
OUT_OF_ORDER = "20240210090000-customer-email.js"
EMAIL_MIGRATION = '''"use strict";

module.exports = {
  async up(queryInterface, Sequelize) {
    await queryInterface.addColumn("customers", "email", { type: Sequelize.STRING(200) });
  },
  async down(queryInterface) {
    await queryInterface.removeColumn("customers", "email");
  },
};
'''
WHY = f"{OUT_OF_ORDER} sorts before {APPLIED_LAST}, already applied"


@pytest.fixture(scope="module")
def invoicing(shared_registry):
    """The app's checkout (a copy, committed as its team would have it; its fixed
    container names made this run's own, as two runs may share the machine) and a
    sandbox brought up around it with `--app`."""
    def own_container_names(app: Path) -> None:
        compose = app / "docker-compose.prod.yml"
        compose.write_text(compose.read_text().replace("container_name: invoicing-", f"container_name: invoicing-{RUN_ID}-"))

    with app_checkout(APP, "invoicing", own_container_names) as app, \
            module_sandbox("smartrelease-invoicing-e2e", ENV, registry=shared_registry, app=app) as sb:
        yield sb


def ship(sb, version: str, broken: bool = False):
    """Commit `version` with the out-of-order migration (and, `broken`, a backend that
    reports another git SHA than its image's, which verify catches) and release it."""
    server = (sb.app_dir / "server" / "index.js").read_text()
    files = {f"database/migrations/{OUT_OF_ORDER}": EMAIL_MIGRATION}
    if broken:
        files["server/index.js"] = server.replace("gitSha: process.env.GIT_SHA", 'gitSha: "0".repeat(40)')
        assert files["server/index.js"] != server
    commit_version(sb.app_dir, version, files)
    state, report = run_swept(release, environment=ENV)
    if broken:  # the checkout goes on from its last good version
        commit_version(sb.app_dir, "1.0.0", {"server/index.js": server, f"database/migrations/{OUT_OF_ORDER}": None})
    return state, report


def test_a_broken_release_through_the_sandbox_is_restored_from_its_backup_as_its_plan_said(invoicing):
    sb = invoicing
    with connect(sb.env(), "test") as conn:
        conn.execute("INSERT INTO customers (name) VALUES ('Acme Ltd')")
        conn.execute("INSERT INTO invoices (customer_id, total_cents) SELECT id, 125000 FROM customers")
    before, before_images = sb.fingerprint(), sb.app_images()
    assert [m for (m,) in sb.schema()[1]] == ["20240105090000-create-customers.js", APPLIED_LAST]

    state, report = ship(sb, "1.1.0", broken=True)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert steps["build-pin"].status == Status.PASSED  # built from the compose file's recipe, then pinned
    assert f"a rollback would restore the backup, not undo ({WHY}" in steps["rollback-plan"].detail
    # Read through the client's nginx, under `metadata`: the version matched, the SHA did not.
    assert steps["verify"].status == Status.FAILED and "0000000000" in steps["verify"].detail
    assert steps["rollback: restore-database"].status == Status.PASSED
    assert "rollback: undo-migrations" not in steps
    assert rb.recovered and rb.db_strategy == "restore"
    assert sb.fingerprint() == before  # no email column, its migration unrecorded, every row kept
    assert sb.app_images() == before_images
    names = {c.name for c in docker.from_env().containers.list(
        filters={"label": f"com.docker.compose.project={sb.settings.project}"})}
    assert not any(n.startswith(f"invoicing-{RUN_ID}-") for n in names)  # the override took the fixed names away


def test_deployed_by_hand_then_adopted_released_and_rolled_back_to(invoicing):
    sb = invoicing
    client = docker.from_env()
    for service, (container, _) in sb.containers().items():
        if service in ("backend", "frontend"):
            client.containers.get(container).remove(force=True)
    built = release_by_hand(ENV, sb.app_dir, "1.0.1")  # the runbook: docker compose up -d --build
    hand = sb.app_images()
    assert hand == {role: client.images.get(tag).id for role, tag in built.items()}
    assert client.containers.get(f"invoicing-{RUN_ID}-backend").image.id == hand["backend"]  # its fixed name

    state, report = run_swept(adopt, environment=ENV)
    assert state.is_completed(), report.text()
    assert "1.0.1 (released by hand) taken over" in by_name(report)["adopt"].detail
    before = sb.fingerprint()

    state, report = ship(sb, "1.2.0")
    assert state.is_completed(), report.text()
    steps = by_name(report)
    assert steps["rollback-plan"].detail.startswith("back to 1.0.1 by digest")
    assert f"a rollback would restore the backup, not undo ({WHY}" in steps["rollback-plan"].detail
    assert "email" in {c for (_, c, _) in sb.schema()[0]}

    # By default a rollback undoes; here the undo command would revert create-invoices
    # (whose down does nothing) instead of the email column: refused, nothing changed.
    running, schema = sb.containers(), sb.fingerprint()
    state, report = run_swept(rollback, environment=ENV)
    assert state.is_failed()
    refused = by_name(report)["rollback-target"]
    assert refused.detail == (f"{OUT_OF_ORDER} sorts before {APPLIED_LAST}, which stays applied: the undo command "
                              f"reverts the highest-named migration first, so it would undo {APPLIED_LAST} instead; "
                              "nothing was changed. Run the rollback with --db-strategy restore: it restores the "
                              "backup taken before they were applied (every write since then is lost)")
    assert (sb.containers(), sb.fingerprint()) == (running, schema)

    state, report = run_swept(rollback, environment=ENV, db_strategy="restore")
    assert state.is_completed(), report.text()
    steps = by_name(report)
    assert report.facts.version == "1.0.1" and sb.app_images() == hand
    assert "adopted: built by hand" in steps["verify"].detail
    assert sb.fingerprint() == before  # restored: the out-of-order migration could not be undone exactly
    assert [(r["version"], r["result"]) for r in read_history(ENV)][-4:] == [
        ("1.0.1", "adopted"), ("1.2.0", "released"), ("(none decided)", "failed at rollback-target"),
        ("1.0.1", "rolled back")]
    assert load_environment(ENV).target.compose_file == str(sb.app_dir / "docker-compose.prod.yml")
