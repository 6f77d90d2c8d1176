"""PostgreSQL's client programs against servers of another major version, for real:
the shared sandbox's database is PostgreSQL 17 in the Compose project, this host's
client is 15 (Debian bookworm), and the tests' host clusters are 15."""

import docker
import psycopg
import pytest

from smartrelease.blocks.envfile import parse_env_file
from smartrelease.errors import StepFailed
from smartrelease.tasks.backup.take import take_backup
from smartrelease.tasks.restore import restore_database
from smartrelease.adapters.running import service_address
from tests.conftest import DB_NAME, DB_PASSWORD, DB_USER

pytestmark = pytest.mark.e2e


def env_file_without_the_service(sandbox, tmp_path, name: str):
    """The sandbox's env file as if its database were not known to be the db service:
    this host reaches the same PostgreSQL 17 at the container's address."""
    address = service_address(docker.from_env(), sandbox.settings.project, "db")
    lines = [line for line in sandbox.settings.env_file.read_text().splitlines()
             if not line.startswith(("RELEASE_DATABASE_SERVICE=", "RELEASE_DATABASE_ADDRESS="))]
    path = tmp_path / f".env.{name}"
    path.write_text("\n".join(lines + [f"RELEASE_DATABASE_ADDRESS={address}:5432"]) + "\n")
    path.chmod(0o600)
    return parse_env_file(path)


def test_this_hosts_older_client_is_refused_before_anything_is_written(shared_sandbox, tmp_path):
    env = env_file_without_the_service(shared_sandbox, tmp_path, "host-client")
    before = sorted(p.name for p in shared_sandbox.settings.backup_dir.iterdir())
    with pytest.raises(StepFailed) as refused:
        take_backup(env, "refused", "backup")
    assert "this host's PostgreSQL client is 15, older than the server (17." in refused.value.reason
    assert "set RELEASE_DATABASE_SERVICE" in refused.value.reason
    assert sorted(p.name for p in shared_sandbox.settings.backup_dir.iterdir()) == before  # nothing written

    # The same database through its service: its own pg_dump 17 writes the backup.
    record = take_backup(shared_sandbox.env(), "through-the-service", "backup")
    assert record.taken_now and (shared_sandbox.settings.backup_dir / record.name).is_file()


def test_an_archive_too_new_for_pg_restore_leaves_the_database_as_it_was(shared_sandbox, own_pg, write_env):
    """A backup pg_dump 17 wrote, restored with this host's pg_restore 15, which cannot
    read it: the restore fails naming why, and the database keeps every table and row
    (a restore that emptied the schema first and committed anyway would lose them)."""
    backup = take_backup(shared_sandbox.env(), "from-17", "backup")
    with psycopg.connect(own_pg.dsn(DB_USER, DB_PASSWORD, DB_NAME), autocommit=True) as conn:
        conn.execute("CREATE TABLE ledgers (id SERIAL PRIMARY KEY, label TEXT)")
        conn.execute("INSERT INTO ledgers (label) VALUES ('kept'), ('also kept')")
    env = parse_env_file(write_env(name="old-client", cluster=own_pg))
    with pytest.raises(StepFailed) as failed:
        restore_database(env, backup.path, backup.sha256)
    assert "pg_restore failed" in failed.value.reason and "unsupported version" in failed.value.reason
    assert "the transaction was rolled back, the database is as it was" in failed.value.reason
    with psycopg.connect(own_pg.dsn(DB_USER, DB_PASSWORD, DB_NAME)) as conn:
        assert conn.execute("SELECT label FROM ledgers ORDER BY id").fetchall() == [("kept",), ("also kept",)]
