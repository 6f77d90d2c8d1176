"""Faults a release engineer fears, caused for real on the shared sandbox: the
registry going away as build-pin pushes, BACKUP_DIR filling up during the
pre-migration backup, PostgreSQL restarting during the new version's migration, the
Prefect server going away during the launch (Docker Engine restarting during the
cutover is in the cutover module, which runs alone). Each test asserts the report's reason, that what runs is
what ran before (same containers, verified), that the database is unchanged (schema
and row checksums), and that nothing is left behind (no container, no partial file)."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
import pytest
from prefect.client.orchestration import get_client

from smartrelease.record.history import last_release
from smartrelease.flows.verify import verify
from smartrelease.sandbox.app_changes import migration
from smartrelease.report import Report, Status
from smartrelease.adapters.images import ensure_local, remove_images
from smartrelease.tasks.rollback_plan import running_deployment
from tests.conftest import SHARED_ENV, by_name, free_port, stored
from tests.faults import Unchanged, release_with_fault

pytestmark = pytest.mark.e2e
ENV = SHARED_ENV


def test_the_registry_going_away_as_build_pin_pushes_is_retried_then_named_and_nothing_launches(
        shared_sandbox, tmp_path):
    from tests.forwarder import Forwarder

    sandbox = shared_sandbox
    # The registry as the sandbox's release reaches it, at an address of its own: the
    # run's registry is shared by every worker and stays up; this address goes away.
    shared = sandbox.env().target.registry
    host, port = shared.rsplit(":", 1)
    registry = Forwarder(free_port(), (host, int(port))).start()
    running = running_deployment(sandbox.env())
    sandbox.set_env("RELEASE_REGISTRY", registry.addr)
    client = docker.from_env()
    # What runs is in that registry too (the same one): pulled by digest at its new
    # address, Docker knows it there, as preflight's `running` check asks.
    for ref in running.images.values():
        ensure_local(client, registry.addr + ref.removeprefix(shared), sandbox.env().registry_credentials)
    before = Unchanged(sandbox)
    repository = f"{sandbox.env().target.registry}/{sandbox.env().target.backend_image}"
    try:
        # The registry goes away the moment the new backend image exists: its push is next.
        state, report, stopped = release_with_fault(sandbox, "8.3.0", lambda: client.images.get(f"{repository}:8.3.0"),
                                                    lambda: registry.stop() or True)
    finally:
        registry.stop()
        sandbox.set_env("RELEASE_REGISTRY", shared)
        remove_images(client, f"{registry.addr}/")
    assert stopped, "the image was never built: the fault was not caused"
    assert state.is_failed()
    pin = by_name(report)["build-pin"]
    assert pin.status == Status.FAILED, report.text()
    assert ("tried 3 times" in pin.detail and "nothing was launched" in pin.detail) or "unreachable" in pin.detail, pin.detail
    assert by_name(report)["launch"].status == Status.SKIPPED
    assert stored(state.state_details.flow_run_id)["task_run_counts"]["build-pin"] == 1  # retried inside, not rebuilt
    before.check()


@pytest.fixture
def small_backup_dir(shared_sandbox, tmp_path):
    """BACKUP_DIR on a tmpfs of 256 KiB holding the newest backup (preflight wants a
    fresh, readable one) and, beside it, a filler that leaves a few KiB free: room
    for preflight's write probe, not for a backup."""
    sandbox = shared_sandbox
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)], check=True)
    old_dir = Path(sandbox.env().app.backup_dir)
    try:
        newest = max((p for p in old_dir.glob("*.dump.enc")), key=lambda p: p.stat().st_mtime)
        for p in (newest, newest.with_name(newest.name + ".sha256")):
            shutil.copy2(p, mount / p.name)
        with (mount / ".filler").open("wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass  # full
        os.truncate(mount / ".filler", max(0, (mount / ".filler").stat().st_size - 8192))
        sandbox.set_env("BACKUP_DIR", str(mount))
        yield mount
    finally:
        sandbox.set_env("BACKUP_DIR", str(old_dir))
        subprocess.run(["umount", str(mount)], check=False)


def test_backup_dir_full_during_the_pre_migration_backup_stops_the_release_before_launch(shared_sandbox, small_backup_dir):
    sandbox = shared_sandbox
    # Rows enough that the backup outgrows the room left (random text does not compress).
    with sandbox_db(sandbox) as conn:
        conn.execute("CREATE TABLE fault_padding AS SELECT md5(random()::text) || md5(random()::text) AS x "
                     "FROM generate_series(1, 4000)")
    try:
        before = Unchanged(sandbox)
        files_before = sorted(p.name for p in small_backup_dir.iterdir())
        state, report, _ = sandbox.release("8.4.0", files={"migrations/20260103000000-add-fault-note.js": migration(
            "ALTER TABLE accounts ADD COLUMN fault_note text", "ALTER TABLE accounts DROP COLUMN fault_note")})
        assert state.is_failed()
        backup = by_name(report)["backup"]
        assert backup.status == Status.FAILED, report.text()
        assert backup.detail.startswith("disk full: no space left in BACKUP_DIR") and "partial file was removed" in backup.detail
        assert by_name(report)["launch"].status == Status.SKIPPED and report.facts.rollback is None
        assert sorted(p.name for p in small_backup_dir.iterdir()) == files_before  # no partial file, no checksum
        before.check()
    finally:
        with sandbox_db(sandbox) as conn:
            conn.execute("DROP TABLE IF EXISTS fault_padding")
        # The release's commit stays in the checkout: its migration must not reach later releases.
        drop_last_migration(sandbox)


def sandbox_db(sandbox):
    from smartrelease.adapters.postgres import connect

    return connect(sandbox.env(), "test")


def drop_last_migration(sandbox) -> None:
    from smartrelease.sandbox.app_changes import commit_version

    commit_version(sandbox.app_dir, "8.4.1", files={"migrations/20260103000000-add-fault-note.js": None})


PG_RESTART_MIGRATION = "migrations/20260104000000-add-account-restart-note.js"


def test_postgresql_restarting_during_the_new_versions_migration_ends_on_one_verified_version(shared_sandbox):
    """The db service restarts while the new backend's entrypoint migrates (the
    migration sleeps, then alters, as one that rewrites a big table would take a while).
    Either the new version's restarted container migrates again and is released, or
    the release rolls back; both end verified with the database as before or as the
    migration makes it, and one container per service."""
    sandbox = shared_sandbox
    before = Unchanged(sandbox)
    db = docker.from_env().containers.get(sandbox.db_container())

    def migrating() -> bool:
        with sandbox_db(sandbox) as conn:
            return bool(conn.execute("SELECT 1 FROM pg_stat_activity WHERE state = 'active' "
                                     "AND query LIKE 'SELECT pg_sleep(5)%'").fetchone())

    state, report, restarted = release_with_fault(
        sandbox, "8.5.0", migrating, lambda: db.restart(timeout=10) or True, files={PG_RESTART_MIGRATION: migration(
            ["SELECT pg_sleep(5)", "ALTER TABLE accounts ADD COLUMN restart_note text"],
            "ALTER TABLE accounts DROP COLUMN restart_note")})
    assert restarted, "the migration was never seen running: the fault was not caused"
    assert state.is_final()
    assert db.attrs["Id"] == sandbox.db_container()  # restarted, never recreated
    columns, meta = sandbox.schema()
    name = Path(PG_RESTART_MIGRATION).name
    if report.ok:
        assert sandbox.env_running_version() == "8.5.0" and (name,) in meta
        assert ("accounts", "restart_note", "text") in columns
        assert verify(environment=ENV, return_state=True).is_completed()
    else:
        rb = report.facts.rollback
        assert rb is not None and rb.recovered, report.text()
        assert report.failures()[0].name in ("launch", "wait-ready", "migrations"), report.text()
        before.check()
        sandbox_commit_without(sandbox, PG_RESTART_MIGRATION)
    services = [c.labels.get("com.docker.compose.service") for c in docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={sandbox.settings.project}"})]
    assert sorted(services) == sorted(set(services)), services  # one container per service: no orphan
    assert all(c.status == "running" for c in docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={sandbox.settings.project}"}))
    print(f"PostgreSQL restart during migrations: {'released' if report.ok else 'rolled back'}; "
          + "; ".join(f"{r.name} {r.status.value}" for r in report.results))


def sandbox_commit_without(sandbox, rel: str) -> None:
    from smartrelease.sandbox.app_changes import commit_version

    commit_version(sandbox.app_dir, "8.5.1", files={rel: None})


def test_the_prefect_server_going_away_during_the_launch_loses_nothing_and_names_the_gap(
        shared_sandbox, prefect_server, tmp_path, monkeypatch):
    """The Prefect server stops the moment the new backend container exists and stays
    away until the run has ended. The release needs only Docker Engine and the
    database from there: it finishes, keeps its report and history row in the local
    journal, and names the gap. Prefect then cannot tell the server the run's end
    (the flow call raises its ConnectError). Once the server is back, the next read of
    the history publishes the row and the report, marked late, and ends the run."""
    import httpx
    from prefect.artifacts import Artifact
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    from smartrelease.deployments import server
    from smartrelease.record.history import load_history
    from smartrelease.record.journal import Entry, kept
    from smartrelease.record.lock import held

    from smartrelease.record import journal

    sandbox = shared_sandbox
    monkeypatch.setenv("SMARTRELEASE_JOURNAL", str(tmp_path / "journal"))
    # The run's end waits this long for the server to answer before keeping its entry
    # (30 s in production): here the server stays away until the run has ended.
    monkeypatch.setattr(journal, "PUBLISH_WAIT_S", 2)
    if last_release(ENV) is None:
        state, first, _ = sandbox.release("8.0.0")
        assert state.is_completed(), first.text()
    before = Unchanged(sandbox)
    rows_before = len(load_history(ENV).rows)

    def new_container_started() -> bool:
        return bool(docker.from_env().containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={sandbox.settings.project}", "org.opencontainers.image.version=8.7.0"]}))

    def stop_the_server() -> float:
        server.down(prefect_server, keep_database=True)
        return time.monotonic()

    ended_with = None
    # Fewer of Prefect's retries on each call to the server while it is away (5 take
    # about a minute each): what is under test is what the run does, not how long.
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 1}):
        try:  # the server stays away until the run has ended
            state, report, stopped = release_with_fault(sandbox, "8.7.0", new_container_started, stop_the_server)
        except httpx.TransportError as exc:
            ended_with, state = exc, None
        finally:
            server.up(prefect_server)
    [path] = kept(ENV)
    entry = Entry.model_validate_json(path.read_text())
    if state is None:  # what a terminal gets: `smartrelease release` prints this report (test_cli)
        report = Report.model_validate(entry.report)
    # Production is released and verified; the run named what it could not publish.
    assert report.ok and report.facts.version == "8.7.0", report.text()
    assert ended_with is not None or state.is_completed()
    if state is not None:
        gap = by_name(report)["publish"]
        assert gap.status == Status.WARNING and "could not be reached" in gap.detail and str(path) in gap.detail
    assert sandbox.env_running_version() == "8.7.0"
    assert sandbox.fingerprint() == before.database  # no migration in 8.7.0: the data as it was
    services = [c.labels.get("com.docker.compose.service") for c in docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={sandbox.settings.project}"})]
    assert sorted(services) == sorted(set(services)), services  # one container per service: no orphan
    # The gap was real: the server has no row of this run yet.
    assert entry.flow_run_id not in [r.get("flow_run_id") for r in load_history(ENV).rows[rows_before:]]
    # Read once the server is back, the history is complete: the row, marked late, the report, the run's end.
    row = last_release(ENV)
    assert row["version"] == "8.7.0" and row["result"] == "released" and row["flow_run_id"] == entry.flow_run_id, row
    assert row["recorded_late"].startswith("published late: the Prefect server was unreachable"), row
    assert not path.exists() and kept(ENV) == []
    artifact = Artifact.get(f"release-{ENV}")
    assert artifact.data.startswith("> **published late") and "8.7.0" in artifact.data
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(entry.flow_run_id)
    assert run.state.is_completed(), run.state
    deadline = time.monotonic() + 150  # the lock: freed at the run's end, or by its lease
    while held(ENV) and time.monotonic() < deadline:
        time.sleep(1)  # (a lease lapses in tens of seconds: a second is fine-grained enough)
    assert not held(ENV)
    assert verify(environment=ENV, expect_version="8.7.0", return_state=True).is_completed()
    print(f"Prefect server away from the launch to the run's end: released; the run ended with "
          f"{type(ended_with).__name__ if ended_with else 'its state'}; its end on the server: {run.state.message}")
