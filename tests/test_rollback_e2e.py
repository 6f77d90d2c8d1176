"""Rollback and data safety end to end, on the shared sandbox: faults are shipped in
real images (sandbox/app/standin-faults) and real Sequelize migrations, run by
sequelize-cli outside any transaction as in production; the database is compared
before and after by schema and by every row."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import docker
import httpx
import psycopg
import pytest
from prefect.settings import PREFECT_API_URL

from smartrelease.record.history import last_release, read_history
from smartrelease.record.lock import holder
from smartrelease.flows.rollback import rollback
from smartrelease.flows.verify import verify
from smartrelease.sandbox.app_changes import STYLES, commit_version, migration
from smartrelease.report import Status
from smartrelease.tasks.backup.crypto import sha256_file, verify_checksum
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.rollback_plan import running_deployment
from smartrelease.process import run
from smartrelease.tasks.launch import project_compose
from smartrelease.tasks.readiness import wait_ready
from tests.conftest import SENTINELS, SHARED_ENV, assert_no_secret, by_name, stored

pytestmark = pytest.mark.e2e
ENV = SHARED_ENV
BASE = "2.0.0"  # what each test goes back to
ROLLBACK_STEPS = ("relaunch", "wait-ready", "safety-backup", "undo-migrations", "schema", "verify")


@pytest.fixture(scope="module")
def sandbox(shared_sandbox):
    state, report, _ = shared_sandbox.release(BASE)
    assert state.is_completed(), report.text()
    yield shared_sandbox


def accounts(sandbox) -> list[tuple]:
    with connect(sandbox.env(), "test") as conn:
        return conn.execute("SELECT id, name, created_at FROM accounts ORDER BY id").fetchall()


class Writer(threading.Thread):
    """Inserts accounts every 20 ms while a release runs, keeping what was committed."""

    def __init__(self, sandbox):
        super().__init__(daemon=True)
        self.env, self.written, self.stopping = sandbox.env(), [], threading.Event()

    def run(self):
        with connect(self.env, "writer") as conn:
            while not self.stopping.is_set():
                try:
                    self.written.append(conn.execute(
                        "INSERT INTO accounts (name) VALUES (%s) RETURNING id, name, created_at",
                        (f"written-during-release-{len(self.written)}",)).fetchone())
                except psycopg.Error:
                    pass  # e.g. a lock timeout while a migration runs: not committed, not expected back
                time.sleep(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.join(timeout=10)


def assert_back_on(sandbox, version: str) -> None:
    """The version runs by the history's digests, and the verify flow passes."""
    row = last_release(ENV)
    assert row["version"] == version
    running = running_deployment(sandbox.env())
    assert running.version == version and running.images == {"backend": row["backend"], "frontend": row["frontend"]}
    check = verify(environment=ENV, return_state=True)
    assert check.is_completed(), check.result(raise_on_failure=False).text()


def drop_from_checkout(sandbox, *names: str) -> None:
    """Remove this test's migration files so that later versions do not ship them."""
    commit_version(sandbox.app_dir, "0.0.0", {f"migrations/{n}": None for n in names})


def test_a_failing_health_check_rolls_back_and_keeps_every_row(sandbox):
    name = "20261110000000-add-account-vat-rate.js"
    before_rows, before_schema, db = accounts(sandbox), sandbox.schema(), sandbox.db_container()
    with Writer(sandbox) as writer:
        state, report, _ = sandbox.release("2.1.0", faults=["health-fails"], files={f"migrations/{name}": migration(
            "ALTER TABLE accounts ADD COLUMN vat_rate NUMERIC NOT NULL DEFAULT 0.19",
            "ALTER TABLE accounts DROP COLUMN vat_rate")})
    drop_from_checkout(sandbox, name)
    assert state.is_failed()
    steps = by_name(report)
    # It answers /ready while its health check fails: no grace (30 s here) for a slow start.
    assert steps["launch"].status == Status.FAILED, report.text()
    assert ("backend container unhealthy: its health check failed (exit 22) after it answered GET :8080/ready with 200 "
            "on its own address") in steps["launch"].detail, steps["launch"].detail
    assert all(steps[f"rollback: {n}"].status == Status.PASSED for n in ROLLBACK_STEPS), report.text()
    rb = report.facts.rollback
    assert rb.recovered and rb.to_version == BASE and rb.migrations_undone == [name]
    assert rb.time_to_recover_s > 0 and rb.instructions == [] and rb.schema_left == []

    # Back on the base version, by digest, verified; the schema as before; every row kept.
    assert_back_on(sandbox, BASE)
    assert sandbox.schema() == before_schema
    assert len(writer.written) > 10
    assert accounts(sandbox) == sorted(before_rows + writer.written)
    assert sandbox.db_container() == db  # the database was never recreated

    # The pre-release and safety backups exist with their checksums; the plan was published first.
    backup_dir = sandbox.env().app.backup_dir
    verify_checksum(Path(backup_dir) / report.facts.backup)
    verify_checksum(Path(backup_dir) / rb.backup)
    assert report.facts.backup.startswith(f"{ENV}-2.1.0-") and rb.backup.startswith(f"{ENV}-2.1.0-before-undo-")
    texts = stored(state.state_details.flow_run_id)
    assert f"rollback-plan-{ENV}" in texts["artifact_keys"] and f"| {name} | yes |" in texts["artifacts"]
    # The release's own row (verify, run by assert_back_on, adds a row of its own after it).
    row = next(r for r in reversed(read_history(ENV)) if r.get("flow_run_id") == str(state.state_details.flow_run_id))
    assert row["result"] == f"failed at launch; rolled back to {BASE}"
    texts["report"] = report.model_dump_json() + report.markdown() + report.text()
    assert_no_secret(texts, SENTINELS, "of a release that rolled back")


def test_a_broken_backend_released_stop_first_fails_wait_ready_without_the_grace_and_rolls_back(sandbox):
    """Stop-first: `compose up` replaces the containers, and wait-ready judges them.
    The backend answers /ready with 200 and then fails its health check (/health
    500): it is not starting but broken, so it fails as soon as Docker calls it
    unhealthy, not after RELEASE_UNHEALTHY_GRACE_S (30 s in the tests)."""
    before = sandbox.fingerprint()
    state, report, _ = sandbox.release("2.9.0", faults=["health-fails"], stop_first=True)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert steps["launch"].status == Status.WARNING and "stop-first" in steps["launch"].detail
    assert steps["wait-ready"].status == Status.FAILED, report.text()
    assert ("backend container unhealthy: its health check failed (exit 22) after it answered GET :8080/ready with 200 "
            "on its own address") in steps["wait-ready"].detail, steps["wait-ready"].detail
    assert "GET /health -> 500" in steps["wait-ready"].detail  # its last log lines: the health check's requests
    assert rb.recovered and rb.to_version == BASE, report.text()
    assert sandbox.fingerprint() == before
    assert_back_on(sandbox, BASE)


def test_a_version_deployed_by_hand_by_its_tag_keeps_its_containers_through_a_rollback(sandbox):
    """The runbook's `docker compose up -d` runs BASE from its tags, not its digests. A
    broken release over it fails and rolls back to BASE: the containers that kept
    serving run BASE's very images, so the rollback keeps them (before, it replaced
    them by new ones from the digests, which took 6.6 s of an 8.4 s recovery)."""
    env, t = sandbox.env(), sandbox.env().target
    tags = {t.image_variable(role): f"{t.registry}/{image}:{BASE}"
            for role, image in (("backend", t.backend_image), ("frontend", t.frontend_image))}
    run(project_compose(env).with_variables(tags).up(["backend", "frontend"], no_deps=True))
    wait_ready(env)
    by_hand = sandbox.containers()
    created_from = docker.from_env().containers.get(by_hand["backend"][0]).attrs["Config"]["Image"]
    assert created_from == tags[t.image_variable("backend")]  # a tag, as by hand
    state, report, _ = sandbox.release("2.9.2", faults=["health-fails"])
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert rb.recovered and rb.to_version == BASE, report.text()
    assert steps["rollback: relaunch"].detail.startswith("already running backend, frontend"), report.text()
    assert sandbox.containers() == by_hand  # the same containers, on the same images
    assert "digests match for backend, frontend" in steps["rollback: verify"].detail


def test_every_down_step_style_is_recognised_and_undone_across_five_migrations(sandbox):
    """Sequelize migrations written every usual way (module.exports object, exports.down,
    module.exports.down, ESM `export const`, TypeScript's CommonJS output): the image's
    Node.js says each has a down step, and `npm run db:rollback` undoes all five,
    newest first."""
    names = [f"2026111600000{i}-{style}.js" for i, style in enumerate(STYLES)]
    files = {f"migrations/{n}": migration(f"CREATE TABLE t_{i} (id INT)", f"DROP TABLE t_{i}", style=style)
             for i, (n, style) in enumerate(zip(names, STYLES))}
    before = sandbox.fingerprint()
    state, report, _ = sandbox.release("2.2.0", faults=["health-fails"], files=files)
    drop_from_checkout(sandbox, *names)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert steps["migration-guard"].detail == f"5 pending: {', '.join(names)}", steps["migration-guard"].detail
    assert rb.recovered and rb.migrations_undone == names[::-1], report.text()
    assert steps["rollback: schema"].status == Status.PASSED
    assert sandbox.fingerprint() == before
    assert_back_on(sandbox, BASE)


def test_the_second_of_three_migrations_failing_at_its_first_statement_leaves_the_database_as_before(sandbox):
    names = ["20261111000001-create-ledgers.js", "20261111000002-broken.js", "20261111000003-add-note.js"]
    before = sandbox.fingerprint()
    state, report, _ = sandbox.release("2.3.0", files={
        f"migrations/{names[0]}": migration("CREATE TABLE ledgers (id SERIAL PRIMARY KEY, label TEXT)", "DROP TABLE ledgers"),
        f"migrations/{names[1]}": migration("ALTER TABLE no_such_table ADD COLUMN x INT", "SELECT 1"),
        f"migrations/{names[2]}": migration("ALTER TABLE accounts ADD COLUMN note TEXT", "ALTER TABLE accounts DROP COLUMN note"),
    })
    drop_from_checkout(sandbox, *names)
    assert state.is_failed()
    rb = report.facts.rollback
    assert rb.recovered and report.failures()[0].name == "launch", report.text()
    assert rb.migrations_undone == [names[0]]  # exactly what this release applied
    assert by_name(report)["rollback: schema"].status == Status.PASSED and rb.schema_left == []
    assert sandbox.fingerprint() == before  # schema and every row
    assert any(f"guard off --name {ENV}" in i and f"{names[1]}; {names[2]} never ran" in i for i in rb.instructions)
    assert_back_on(sandbox, BASE)


def test_a_migration_failing_half_way_is_named_with_what_it_left_and_restore_takes_it_back(sandbox):
    """Sequelize runs a migration outside a transaction: the second statement failing
    leaves the first one's table, unrecorded. The undo of the release's other migration
    cannot remove it; the schema check names it, the previous version is relaunched
    (it runs on that schema), and the advice to restore brings back the database."""
    names = ["20261117000001-create-budgets.js", "20261117000002-half-applied.js"]
    before = sandbox.fingerprint()
    state, report, _ = sandbox.release("2.4.0", files={
        f"migrations/{names[0]}": migration("CREATE TABLE budgets (id SERIAL PRIMARY KEY)", "DROP TABLE budgets"),
        f"migrations/{names[1]}": migration(["CREATE TABLE budget_lines (id SERIAL PRIMARY KEY, amount NUMERIC)",
                                             "ALTER TABLE no_such_table ADD COLUMN x INT"], "DROP TABLE budget_lines"),
    })
    drop_from_checkout(sandbox, *names)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert rb.migrations_undone == [names[0]]
    schema = steps["rollback: schema"]
    assert schema.status == Status.FAILED and "+ relation public.budget_lines (r)" in schema.detail
    assert "+ column public.budget_lines.amount numeric" in schema.detail
    # The code is rolled back all the same: the previous version runs on that schema.
    assert rb.recovered and steps["rollback: verify"].status == Status.PASSED
    advice = next(i for i in rb.instructions if "not as it was" in i)
    assert f"{names[1]} failed half-way" in advice and "outside a transaction" in advice
    assert report.facts.backup in advice and "--db-strategy restore" in advice
    assert read_history(ENV)[-1]["schema_left"].endswith("difference(s)")

    state = rollback(environment=ENV, to_version=BASE, db_strategy="restore", return_state=True)
    restored = state.result(raise_on_failure=False)
    assert state.is_completed(), restored.text()
    assert restored.facts.rollback.backup == report.facts.backup
    assert sandbox.fingerprint() == before
    assert_back_on(sandbox, BASE)


def test_restore_strategy_makes_the_database_equal_the_backup(sandbox):
    name = "20261112000000-ledgers-and-code.js"
    before = sandbox.fingerprint()  # nothing writes between this and the release's backup
    state, report, _ = sandbox.release("2.5.0", faults=["health-fails"], db_strategy="restore",
                                       files={f"migrations/{name}": migration(
                                           ["CREATE TABLE ledgers (id SERIAL PRIMARY KEY)", "ALTER TABLE accounts ADD COLUMN code TEXT"],
                                           ["DROP TABLE ledgers", "ALTER TABLE accounts DROP COLUMN code"])})
    drop_from_checkout(sandbox, name)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    assert steps["rollback: restore-database"].status == Status.PASSED, report.text()
    assert "pg_restore and psql of the db service's container" in steps["rollback: restore-database"].detail
    assert "rollback: undo-migrations" not in steps and steps["rollback: schema"].status == Status.PASSED
    assert rb.recovered and rb.db_strategy == "restore" and rb.backup == report.facts.backup
    assert "every write since then is lost" in rb.warnings[0]
    assert sandbox.fingerprint() == before  # the new table is gone too
    assert_back_on(sandbox, BASE)


@pytest.mark.parametrize("version, name, down, why", [
    ("2.6.0", "20261113000000-add-account-tag.js", False, "no down step: 20261113000000-add-account-tag.js"),
    # Added out of order: named before the base's own migration, already applied.
    ("2.6.1", "20251231000000-add-account-tag.js", True,
     "20251231000000-add-account-tag.js sorts before 20260101000000-create-accounts.js, already applied"),
], ids=["no-down-step", "out-of-order"])
def test_a_release_with_no_exact_undo_is_restored_from_its_backup_as_its_plan_said(sandbox, version, name, down, why):
    """The rollback plan decides before launch that no exact undo can be had, says so,
    and the automatic rollback restores the backup the release took instead of undoing."""
    before_rows, before = accounts(sandbox), sandbox.fingerprint()
    up = "ALTER TABLE accounts ADD COLUMN tag TEXT"
    # Without a down step, its comment still mentions down(): what the image's Node.js says counts, not the text.
    state, report, _ = sandbox.release(version, faults=["report-sha " + "0" * 40], files={
        f"migrations/{name}": migration(up, "ALTER TABLE accounts DROP COLUMN tag" if down else None)})
    drop_from_checkout(sandbox, name)
    assert state.is_failed()
    steps, rb = by_name(report), report.facts.rollback
    if not down:
        assert "no down step: " + name in steps["migration-guard"].detail
    plan = steps["rollback-plan"]
    assert plan.status == Status.WARNING and f"a rollback would restore the backup, not undo ({why}" in plan.detail
    assert f"database: restore, as the rollback plan decided ({why}" in steps["rollback: rollback-target"].detail
    assert steps["verify"].status == Status.FAILED
    assert steps["rollback: restore-database"].status == Status.PASSED
    assert "rollback: undo-migrations" not in steps and "rollback: safety-backup" not in steps
    assert rb.recovered and rb.db_strategy == "restore" and rb.migrations_left == [] and not rb.instructions
    assert rb.backup == report.facts.backup and any("every write since then is lost" in w for w in rb.warnings)
    # The database is exactly as it was before the release: its column and record gone, every row kept.
    assert sandbox.fingerprint() == before and accounts(sandbox) == before_rows
    assert_back_on(sandbox, BASE)


def test_a_tampered_backup_is_refused_before_any_restore_and_undo_rolls_back(sandbox):
    name = "20261114000000-create-budgets.js"
    state, report, _ = sandbox.release("2.7.0", files={f"migrations/{name}": migration(
        "CREATE TABLE budgets (id SERIAL PRIMARY KEY, amount NUMERIC)", "DROP TABLE budgets")})
    drop_from_checkout(sandbox, name)
    assert state.is_completed(), report.text()
    backup = Path(sandbox.env().app.backup_dir) / report.facts.backup
    original = backup.read_bytes()
    sums = backup.with_name(backup.name + ".sha256")
    original_sums = sums.read_text()
    data = bytearray(original)
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data))
    # Its checksum file forged to match, as whoever can write BACKUP_DIR can: the
    # digest the history recorded when it was taken still tells.
    sums.write_text(f"{sha256_file(backup)}  {backup.name}\n")
    try:
        before = sandbox.containers(), sandbox.fingerprint()
        state = rollback(environment=ENV, db_strategy="restore", return_state=True)
        refused = state.result(raise_on_failure=False)
        assert state.is_failed()
        assert [r.name for r in refused.results] == ["lock", "rollback-target"]
        assert "is not the one the history recorded" in refused.results[1].detail, refused.results[1].detail
        assert (sandbox.containers(), sandbox.fingerprint()) == before  # nothing touched
    finally:
        # Whatever happened above, the sandbox's next tests find the backup whole
        # (the undo below takes a backup of its own).
        backup.write_bytes(original)
        sums.write_text(original_sums)

    # The default strategy undoes 1.5.0's migration and goes back to the release before it.
    state = rollback(environment=ENV, return_state=True)
    back = state.result(raise_on_failure=False)
    assert state.is_completed(), back.text()
    assert_no_secret({**stored(state.state_details.flow_run_id), "report": back.model_dump_json()}, SENTINELS,
                     "of a passing rollback")
    assert back.facts.rollback.to_version == BASE and back.facts.rollback.migrations_undone == [name]
    assert ("budgets",) not in [(c[0],) for c in sandbox.schema()[0]]
    assert read_history(ENV)[-1]["result"] == "rolled back"
    assert_back_on(sandbox, BASE)


def test_a_release_killed_during_launch_is_rolled_back_by_the_rollback_command(sandbox):
    name = "20261115000000-add-account-region.js"
    commit_version(sandbox.app_dir, "2.8.0", {f"migrations/{name}": migration(
        "ALTER TABLE accounts ADD COLUMN region TEXT", "ALTER TABLE accounts DROP COLUMN region")})
    before = sandbox.fingerprint()
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cli = [sys.executable, "-m", "smartrelease.cli"]
    client = docker.from_env()
    events = client.events(decode=True, filters={"type": "container", "event": "start",
                                                 "label": f"com.docker.compose.project={sandbox.settings.project}"})
    proc = subprocess.Popen([*cli, "release", "--env-file", str(sandbox.settings.env_file)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    give_up = threading.Timer(600, events.close)  # a release that never launches fails the test, not hangs it
    give_up.start()
    # Nor does one that ended before launching: the wait ends with the process.
    threading.Thread(target=lambda: (proc.wait(), events.close()), daemon=True).start()
    try:
        for event in events:  # compose up has started the new backend: kill the whole release
            if event.get("Actor", {}).get("Attributes", {}).get("com.docker.compose.service") == "backend":
                break
    finally:
        give_up.cancel()
        events.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    drop_from_checkout(sandbox, name)
    assert proc.returncode == -signal.SIGKILL, f"the release ended before its launch: {proc.stdout.read().decode()}"

    # The killed release still holds the environment (until its lease runs out, about
    # a minute): the operator who knows it is dead frees it.
    assert "release-e2e" in str(holder(ENV))
    freed = subprocess.run([*cli, "unlock", "--env", ENV, "--reason", "release killed during launch"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert freed.returncode == 0 and "unlocked (it was held by release-e2e" in freed.stdout, freed.stderr
    done = subprocess.run([*cli, "rollback", "--env-file", str(sandbox.settings.env_file), "--json"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] and result["rollback"]["to_version"] == BASE and result["rollback"]["recovered"]
    # The new backend kept running after the kill and applied its migration; the rollback undid it.
    assert result["rollback"]["migrations_undone"] == [name]
    assert_no_secret({"stdout": done.stdout, "stderr": done.stderr}, SENTINELS, "of the rollback command")
    assert sandbox.fingerprint() == before
    assert_back_on(sandbox, BASE)


def test_rollback_refuses_a_target_whose_images_are_gone(sandbox):
    target = last_release(ENV)  # the base version, running: `--to` it re-deploys it, if its images still exist
    repository, digest = target["backend"].split("@")
    registry, path = repository.split("/", 1)
    url = f"http://{registry}/v2/{path}/manifests/{digest}"
    # Its exact bytes, put back afterwards: the sandbox is shared with the next module,
    # which must find what runs in the registry (a module after this one once did not).
    kept = httpx.get(url, headers={"Accept": MANIFEST_TYPES})
    assert kept.status_code == 200, kept.text
    deleted = httpx.delete(url)  # delete is enabled in the sandbox
    assert deleted.status_code == 202, deleted.text
    try:
        before = sandbox.containers(), sandbox.fingerprint()
        state = rollback(environment=ENV, to_version=target["version"], return_state=True)
        refused = state.result(raise_on_failure=False)
        assert state.is_failed() and [r.name for r in refused.results] == ["lock", "rollback-target"]
        assert_no_secret({**stored(state.state_details.flow_run_id), "report": refused.model_dump_json()}, SENTINELS,
                         "of a refused rollback")
        assert "no longer in the registry" in refused.results[1].detail and digest in refused.results[1].detail
        assert (sandbox.containers(), sandbox.fingerprint()) == before  # nothing touched
    finally:
        put = httpx.put(url, content=kept.content, headers={"Content-Type": kept.headers["content-type"]})
        assert put.status_code == 201 and put.headers["docker-content-digest"] == digest, put.text


MANIFEST_TYPES = ", ".join(("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json",
                            "application/vnd.docker.distribution.manifest.list.v2+json"))
