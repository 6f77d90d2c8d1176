"""Each preflight check against the real thing: PostgreSQL, HTTPS servers, pg_dump files."""

import gzip
import os
import re
import time
from pathlib import Path

import psycopg
import pytest
import trustme

from smartrelease.blocks.envfile import parse_env_file
from smartrelease.errors import StepFailed
from smartrelease.tasks.backup.dirs import check_backup_dirs
from smartrelease.tasks.backup.latest import check_backups
from smartrelease.tasks.database import check_database
from smartrelease.tasks.environment import check_app_env
from smartrelease.tasks.tls import check_tls
from smartrelease.tasks.wal_archive import check_wal_archive

from tests.conftest import DB_PASSWORD, fresh_backup


def env_of(path):
    return parse_env_file(path)


def failure(fn, *args) -> StepFailed:
    with pytest.raises(StepFailed) as exc:
        fn(*args)
    return exc.value


# --- environment --------------------------------------------------------------

def test_environment_passes(write_env):
    finding = check_app_env(env_of(write_env()))
    assert not finding.warning and "app version 1.2.3" in finding.detail


def test_environment_reports_every_missing_variable(write_env):
    err = failure(check_app_env, env_of(write_env(JWT_SECRET=None, CORS_ORIGIN=None, BACKUP_DIR="")))
    assert "missing or empty: JWT_SECRET, CORS_ORIGIN, BACKUP_DIR" in err.reason


def test_environment_production_rules(write_env):
    err = failure(check_app_env, env_of(write_env(NODE_ENV="development", CORS_ORIGIN="*", JWT_SECRET="short-jwt-secret-value")))
    assert "NODE_ENV is 'development', must be 'production'" in err.reason
    assert "CORS_ORIGIN is '*'" in err.reason
    assert "JWT_SECRET is 22 characters, needs at least 32" in err.reason
    assert "short-jwt-secret-value" not in err.reason


def test_environment_non_production_allows_development(write_env):
    assert check_app_env(env_of(write_env(NODE_ENV="development", CORS_ORIGIN="*", RELEASE_PRODUCTION="false")))


def test_environment_rejects_bad_urls_and_version(write_env, app_dir):
    (app_dir / "VERSION").write_text("1.2\n")
    err = failure(check_app_env, env_of(write_env(FRONTEND_URL="app.example.test", RELEASE_PUBLIC_URL="http://x.test",
                                                       DATABASE_URL="mysql://u:mysql-password@h/db", ALLOW_PROD_MIGRATIONS="yes")))
    for part in ("FRONTEND_URL must be an absolute http or https URL", "RELEASE_PUBLIC_URL must be an absolute https URL",
                 "DATABASE_URL scheme must be postgres", "ALLOW_PROD_MIGRATIONS must be 'true' or 'false'",
                 "app version '1.2' is not SemVer"):
        assert part in err.reason


def test_environment_version_parameter_wins(write_env):
    err = failure(check_app_env, env_of(write_env()), "2.0")
    assert "app version '2.0' is not SemVer" in err.reason


def test_environment_warns_on_readable_env_file(write_env):
    path = write_env()
    path.chmod(0o644)
    finding = check_app_env(env_of(path))
    assert finding.warning and "readable by group or others (mode 0644)" in finding.detail


# --- database -----------------------------------------------------------------

def test_database_passes(write_env):
    assert "PostgreSQL 15" in check_database(env_of(write_env())).detail


def test_database_stopped_fails_with_reason_and_no_password(write_env, own_pg):
    env = env_of(write_env(cluster=own_pg))
    own_pg.stop()
    err = failure(check_database, env)
    assert err.transient
    assert f"cannot connect to smartaccounting@127.0.0.1:{own_pg.port}/smartaccounting" in err.reason
    assert "Connection refused" in err.reason
    assert DB_PASSWORD not in str(err)


def test_database_wrong_password(write_env, pg):
    err = failure(check_database, env_of(write_env(DATABASE_URL=pg.dsn("smartaccounting", "wrong-password-x", "smartaccounting"))))
    assert "password authentication failed" in err.reason and "wrong-password-x" not in str(err)


def test_a_database_away_is_waited_for_until_it_accepts_sessions(write_env, own_pg):
    """A restart or a failover during a release: the automatic rollback needs the
    database to decide, so it waits for it (flows/release.py), bounded by the time given."""
    import threading

    from smartrelease.adapters.postgres import connect, database_answers_within

    env = env_of(write_env(cluster=own_pg))
    own_pg.stop()
    timer = threading.Timer(2.0, own_pg.start)
    timer.start()
    try:
        waited = database_answers_within(env, "rollback-target", timeout_s=60)
    finally:
        timer.join()
    assert waited >= 1.5  # it was away, and the wait lasted until it came back
    with connect(env, "rollback-target") as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_a_database_still_away_after_the_wait_names_why(write_env, own_pg):
    from smartrelease.adapters.postgres import database_answers_within

    env = env_of(write_env(cluster=own_pg))
    own_pg.stop()
    err = failure(database_answers_within, env, "rollback-target", 1.0)
    assert err.transient and "Connection refused" in err.reason and DB_PASSWORD not in str(err)


def test_a_database_refusing_the_password_is_not_waited_for(write_env, pg):
    from smartrelease.adapters.postgres import database_answers_within

    env = env_of(write_env(DATABASE_URL=pg.dsn("smartaccounting", "wrong-password-x", "smartaccounting")))
    started = time.monotonic()
    err = failure(database_answers_within, env, "rollback-target", 120)
    assert not err.transient and "password authentication failed" in err.reason
    assert time.monotonic() - started < 60  # raised at once, not after the 120 s wait


def test_database_url_that_does_not_parse_is_not_echoed(write_env):
    err = failure(check_database, env_of(write_env(DATABASE_URL="postgres://u:secret-in-url@host:badport/db")))
    assert "does not parse" in err.reason and "secret-in-url" not in str(err)


# --- backup-dirs --------------------------------------------------------------

def test_backup_dirs_pass_and_leave_nothing(write_env, tmp_path):
    env = env_of(write_env())
    before = set(os.listdir(env.app.backup_dir))
    assert "writable" in check_backup_dirs(env).detail
    assert set(os.listdir(env.app.backup_dir)) == before


def test_backup_dirs_missing_and_not_a_directory(write_env, tmp_path):
    (tmp_path / "a-file").write_text("x")
    err = failure(check_backup_dirs, env_of(write_env(BACKUP_DIR=str(tmp_path / "absent"), WAL_ARCHIVE_DIR=str(tmp_path / "a-file"))))
    assert f"BACKUP_DIR {tmp_path / 'absent'} does not exist" in err.reason
    assert f"WAL_ARCHIVE_DIR {tmp_path / 'a-file'} is not a directory" in err.reason


def test_backup_dirs_read_only_filesystem(write_env):
    # Root ignores permission bits; a read-only filesystem stops root too.
    err = failure(check_backup_dirs, env_of(write_env(BACKUP_DIR="/proc/self")))
    assert "BACKUP_DIR /proc/self is not writable" in err.reason


# --- tls ----------------------------------------------------------------------

def test_tls_trusted_chain_passes(write_env, https_server):
    finding = check_tls(env_of(write_env(public_url=https_server(days=90))))
    assert not finding.warning
    assert re.search(r"200 OK, trusted chain, certificate expires in (89\.9|90\.0) days", finding.detail)


def test_tls_expired(write_env, https_server):
    err = failure(check_tls, env_of(write_env(public_url=https_server(days=-2))))
    assert err.reason == "certificate of localhost has expired" and not err.transient


def test_tls_wrong_host(write_env, https_server):
    err = failure(check_tls, env_of(write_env(public_url=https_server(host="other.example.test"))))
    assert err.reason == "certificate does not match host name localhost"


def test_tls_untrusted_ca(write_env, https_server):
    err = failure(check_tls, env_of(write_env(public_url=https_server(issuer=trustme.CA()))))
    assert err.reason.startswith("untrusted certificate chain for localhost")


def test_tls_system_store_does_not_trust_a_private_ca(write_env, https_server):
    err = failure(check_tls, env_of(write_env(public_url=https_server(), RELEASE_CA_BUNDLE=None)))
    assert err.reason.startswith("untrusted certificate chain")


def test_tls_non_200(write_env, https_server):
    err = failure(check_tls, env_of(write_env(public_url=https_server(status=500))))
    assert "HEAD /api/health answered 500, expected 200" in err.reason


def test_tls_expiry_warning_and_failure_thresholds(write_env, https_server):
    warn = check_tls(env_of(write_env(public_url=https_server(days=10))))
    assert warn.warning and "under 14 days" in warn.detail
    err = failure(check_tls, env_of(write_env(public_url=https_server(days=2))))
    assert "under the 3-day limit" in err.reason
    custom = check_tls(env_of(write_env(public_url=https_server(days=10), RELEASE_TLS_WARN_DAYS="7")))
    assert not custom.warning


def test_tls_nothing_listening_is_transient(write_env):
    err = failure(check_tls, env_of(write_env(public_url="https://localhost:1")))
    assert err.transient and "cannot connect to localhost" in err.reason


def test_tls_before_a_first_release_nothing_serving_is_a_warning_checked_after_launch(write_env):
    found = check_tls(env_of(write_env(public_url="https://localhost:1")), first_release=True)
    assert found.warning and "first release: nothing serves localhost yet" in found.detail


def test_tls_before_a_first_release_checks_what_answers(write_env, https_server, ca):
    found = check_tls(env_of(write_env(public_url=https_server(status=502))), first_release=True)
    assert found.warning and "HEAD /api/health answered 502; the certificate and the health check are checked after launch" \
        in found.detail
    # A bad certificate is as wrong before a first release as after it.
    err = failure(check_tls, env_of(write_env(public_url=https_server(days=-1))), True)
    assert "has expired" in err.reason


def test_tls_before_a_first_release_the_host_must_resolve(write_env):
    err = failure(check_tls, env_of(write_env(public_url="https://no-such-host.invalid")), True)
    assert err.reason == "no-such-host.invalid does not resolve (DNS): the first release could not be reached"


# --- backups ------------------------------------------------------------------

def test_backups_fresh_custom_dump_passes(write_env):
    assert "custom" in check_backups(env_of(write_env())).detail


def test_backups_stale(write_env):
    env = env_of(write_env())
    dump = next(p for p in os.scandir(env.app.backup_dir))
    old = time.time() - 30 * 3600
    os.utime(dump.path, (old, old))
    err = failure(check_backups, env)
    assert "is 30.0 h old, older than 26 h" in err.reason


def test_backups_truncated_dump_is_caught(write_env, pg):
    env = env_of(write_env())
    with psycopg.connect(env.app.database_url.get_secret_value(), autocommit=True) as conn:  # enough data that truncation cuts a data block
        conn.execute("CREATE TABLE IF NOT EXISTS ledger AS SELECT g AS id, repeat('x', 200) AS memo FROM generate_series(1, 20000) g")
    dump = fresh_backup(pg, Path(env.app.backup_dir), "newer.dump")
    data = dump.read_bytes()
    dump.write_bytes(data[: len(data) * 2 // 3])
    err = failure(check_backups, env)
    assert "newest backup newer.dump is unreadable: pg_restore failed (exit 1): pg_restore: error: could not read" in err.reason


def test_backups_empty_and_missing(write_env, tmp_path):
    empty = tmp_path / "empty-backups"
    empty.mkdir()
    assert "no backup in" in failure(check_backups, env_of(write_env(BACKUP_DIR=str(empty)))).reason
    (empty / "zero.dump").write_bytes(b"")
    assert "newest backup zero.dump is empty" in failure(check_backups, env_of(write_env(BACKUP_DIR=str(empty)))).reason


def test_backups_plain_sql_and_gzip(write_env, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    sql = b"-- dump\nCREATE TABLE t();\n--\n-- PostgreSQL database dump complete\n--\n"
    with gzip.open(d / "a.sql.gz", "wb") as f:
        f.write(sql)
    assert "plain SQL, gzip" in check_backups(env_of(write_env(BACKUP_DIR=str(d)))).detail
    full = (d / "a.sql.gz").read_bytes()
    (d / "b.sql.gz").write_bytes(full[:-6])
    assert "gzip stream is damaged or truncated" in failure(check_backups, env_of(write_env(BACKUP_DIR=str(d)))).reason
    (d / "c.sql").write_bytes(sql[:20])
    assert "lacks pg_dump's closing line" in failure(check_backups, env_of(write_env(BACKUP_DIR=str(d)))).reason


# --- wal-archive --------------------------------------------------------------

def test_wal_archive_healthy(write_env):
    finding = check_wal_archive(env_of(write_env()))
    assert not finding.warning and "archive_mode=on" in finding.detail


def test_wal_archive_failing_archiver(write_env, own_pg):
    env = env_of(write_env(cluster=own_pg))
    with own_pg.admin() as conn:
        conn.execute("ALTER SYSTEM SET archive_command = 'false'")
        conn.execute("SELECT pg_reload_conf()")
        conn.execute("CREATE TABLE churn AS SELECT 1")
        conn.execute("SELECT pg_switch_wal()")
        deadline = time.monotonic() + 30
        while not conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] and time.monotonic() < deadline:
            time.sleep(0.1)
    err = failure(check_wal_archive, env)
    assert "archiver is failing" in err.reason and "since the last success" in err.reason


def test_wal_archive_shipping_elsewhere(write_env, own_pg, tmp_path):
    elsewhere = tmp_path / "other-wal"
    elsewhere.mkdir()
    (elsewhere / "000000010000000000000099").write_bytes(b"x")
    err = failure(check_wal_archive, env_of(write_env(cluster=own_pg, WAL_ARCHIVE_DIR=str(elsewhere))))
    assert "is not in WAL_ARCHIVE_DIR" in err.reason


def test_wal_archive_off_is_a_warning(write_env, make_pg, tmp_path):
    cluster = make_pg(archive=False)
    finding = check_wal_archive(env_of(write_env(name="noarch", cluster=cluster, WAL_ARCHIVE_DIR=str(tmp_path))))
    assert finding.warning and "archive_mode is off" in finding.detail
