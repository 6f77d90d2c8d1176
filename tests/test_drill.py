"""The restore drill against a real PostgreSQL and Prefect server: the newest backup
restored into a scratch database and checked, and each way a backup fails named,
with the live database untouched and no scratch database left behind."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from smartrelease.record.lock import import_environment
from smartrelease.flows.drill import drill
from smartrelease.record.history import read_history
from smartrelease.report import Status
from smartrelease.tasks.backup.crypto import sha256_file
from smartrelease.tasks.backup.files import dump_database_encrypted
from smartrelease.tasks.drill import released_at
from smartrelease.tasks.schema import fingerprint, schema_of
from smartrelease.tasks.scratch_database import PREFIX, leftovers
from tests.conftest import (BACKUP_PASSPHRASE, DB_NAME, SENTINELS, assert_no_secret, by_name, host_tools, plain_dump,
                            stored)


def seed(cluster) -> None:
    """The app's tables, as migrations made them: accounts with three rows."""
    with cluster.admin(DB_NAME) as conn:
        conn.execute('SET ROLE smartaccounting')
        conn.execute('CREATE TABLE "SequelizeMeta" (name varchar(255) PRIMARY KEY)')
        conn.execute("""INSERT INTO "SequelizeMeta" VALUES ('20240101000000-create-accounts.js'),
                        ('20240201000000-add-currency.js')""")
        conn.execute("CREATE TABLE accounts (id serial PRIMARY KEY, name text NOT NULL, currency char(3))")
        conn.execute("INSERT INTO accounts (name, currency) VALUES ('cash', 'EUR'), ('bank', 'EUR'), ('card', 'USD')")


def live_state(cluster) -> tuple:
    with cluster.admin(DB_NAME) as conn:
        return fingerprint(schema_of(conn)), conn.execute("SELECT md5(string_agg(a::text, ',' ORDER BY id)) FROM accounts a").fetchone()[0]


def scratch_databases(cluster) -> list[str]:
    with cluster.admin() as conn:
        return leftovers(conn)


@pytest.fixture
def drilled(own_pg, write_env, tmp_path):
    """An environment on a cluster of its own, seeded, its newest backup encrypted."""
    seed(own_pg)
    path = write_env(name="drill", cluster=own_pg)
    env = import_environment(path, "drill")
    newest = Path(env.app.backup_dir) / "drill-1.1.0-20260101T000000Z.dump.enc"
    dump_database_encrypted(host_tools(own_pg), newest, BACKUP_PASSPHRASE)
    return own_pg, path, newest


def run_drill(name: str = "drill"):
    state = drill(environment=name, return_state=True)
    return state, state.result(raise_on_failure=False)


def test_the_cli_drill_restores_the_newest_backup_into_a_scratch_database_and_reports_it(drilled):
    cluster, path, newest = drilled
    before = live_state(cluster)
    out = subprocess.run([sys.executable, "-m", "smartrelease.cli", "drill", "--env-file", str(path), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    steps = {s["name"]: s for s in result["steps"]}
    assert list(steps) == ["backup", "wal-age", "scratch", "restore", "migrations", "tables", "drop-scratch"]
    assert all(s["status"] in ("passed", "warning") for s in steps.values()), steps
    # No release in this history: the migrations are listed, not compared, and it says so.
    assert steps["migrations"]["status"] == "warning" and "not compared" in steps["migrations"]["detail"]
    d = result["drill"]
    assert d["backup"] == newest.name and d["backup_format"] == "custom, encrypted"
    assert d["tables"] == {"public.SequelizeMeta": 2, "public.accounts": 3}
    assert d["migrations"] == ["20240101000000-create-accounts.js", "20240201000000-add-currency.js"]
    assert d["schema_fingerprint"] == before[0]  # the backup's schema is the live one's
    assert d["restore_s"] > 0 and 0 <= d["backup_age_s"] < 600
    assert d["wal_age_s"] is not None  # the cluster archives WAL
    assert "as the live database's" in steps["tables"]["detail"]
    assert live_state(cluster) == before and scratch_databases(cluster) == []
    rows = read_history("drill")
    assert rows[-1]["result"] == "drill passed" and rows[-1]["backup"] == newest.name
    assert float(rows[-1]["rto_s"]) >= 0 and rows[-1]["rpo_s"]
    assert re.search(r"^drill\s+PASSED\s+restore\s", out.stderr, re.M), out.stderr  # progress, as steps finish


def test_a_tampered_backup_fails_at_its_checksum_before_any_scratch_database(drilled):
    cluster, _, newest = drilled
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 1
    newest.write_bytes(bytes(data))
    state, report = run_drill()
    assert state.is_failed()
    steps = by_name(report)
    assert steps["backup"].status == Status.FAILED and steps["backup"].detail.startswith("checksum: ")
    assert "does not match its recorded SHA-256" in steps["backup"].detail
    assert steps["scratch"].status == Status.SKIPPED and steps["drop-scratch"].status == Status.SKIPPED
    assert scratch_databases(cluster) == []
    assert read_history("drill")[-1]["result"] == "drill failed at backup"
    assert "drill-drill" in stored(state.state_details.flow_run_id)["artifact_keys"]


def test_the_wrong_passphrase_fails_at_decryption_and_the_scratch_database_is_dropped(drilled, tmp_path):
    cluster, path, _ = drilled
    path.write_text(path.read_text().replace(BACKUP_PASSPHRASE, "not-the-backup-passphrase-SENTINEL"))
    import_environment(path, "drill")
    state, report = run_drill()
    steps = by_name(report)
    assert steps["restore"].status == Status.FAILED and steps["restore"].detail.startswith("decryption: ")
    assert "wrong BACKUP_PASSPHRASE" in steps["restore"].detail
    assert steps["drop-scratch"].status == Status.PASSED and scratch_databases(cluster) == []
    texts = stored(state.state_details.flow_run_id)
    texts["report"] = report.model_dump_json() + report.markdown() + report.text()
    assert_no_secret(texts, SENTINELS)


def test_a_truncated_archive_is_a_restore_error(drilled):
    cluster, path, newest = drilled
    plain = newest.with_name("drill-nightly.dump")
    plain_dump(host_tools(cluster), plain)
    plain.write_bytes(plain.read_bytes()[: plain.stat().st_size * 2 // 3])  # newest now, and cut short
    state, report = run_drill()
    steps = by_name(report)
    assert steps["backup"].status == Status.WARNING and "no checksum file" in steps["backup"].detail
    assert steps["restore"].status == Status.FAILED and steps["restore"].detail.startswith("restore error: pg_restore")
    assert scratch_databases(cluster) == [] and state.is_failed()


def test_a_backup_missing_a_table_the_live_database_has_is_named(drilled):
    cluster, _, newest = drilled
    partial = newest.with_name("drill-partial.dump")
    tools = host_tools(cluster)
    command = tools.command("pg_dump", "--format=custom", "--exclude-table=accounts", f"--file={partial}", timeout_s=60)
    subprocess.run(command.argv, env=dict(command.env), check=True, timeout=60)
    state, report = run_drill()
    steps = by_name(report)
    assert steps["tables"].status == Status.FAILED
    assert steps["tables"].detail.startswith("missing tables: public.accounts")
    assert steps["migrations"].status == Status.WARNING  # it still ran, and said its part
    assert report.facts.drill.tables == {}  # nothing claimed for a backup that failed
    assert scratch_databases(cluster) == [] and state.is_failed()


def test_a_scratch_database_left_by_a_killed_drill_is_dropped_by_the_next(drilled):
    cluster, _, _ = drilled
    with cluster.admin() as conn:
        conn.execute(f"CREATE DATABASE {PREFIX}deadbeef OWNER smartaccounting")
    state, report = run_drill()
    assert state.is_completed(), report.text()
    assert f"dropped 1 left by an earlier drill ({PREFIX}deadbeef)" in by_name(report)["scratch"].detail
    assert scratch_databases(cluster) == []


def test_a_user_who_may_not_create_databases_is_told_how_to_grant_it(drilled):
    cluster, _, _ = drilled
    before = live_state(cluster)
    with cluster.admin() as conn:
        conn.execute("ALTER ROLE smartaccounting NOCREATEDB")
    state, report = run_drill()
    steps = by_name(report)
    assert steps["scratch"].status == Status.FAILED
    assert "ALTER ROLE smartaccounting CREATEDB" in steps["scratch"].detail
    assert "The live database was not touched" in steps["scratch"].detail
    assert steps["restore"].status == Status.SKIPPED and live_state(cluster) == before


def test_what_ran_when_a_backup_was_taken_is_read_from_the_history():
    rows = [
        {"version": "1.0.0", "result": "released", "finished": "2026-01-01 10:00:00Z"},
        {"version": "1.1.0", "result": "released", "finished": "2026-01-02 10:00:00Z"},
        {"version": "1.1.0", "result": "verified", "finished": "2026-01-02 11:00:00Z"},
        {"version": "1.2.0", "result": "failed at wait-ready; rolled back to 1.1.0", "finished": "2026-01-03 10:00:00Z"},
        {"version": "1.0.0", "result": "rolled back", "finished": "2026-01-04 10:00:00Z"},
        {"version": "?", "result": "released", "finished": "not a time"},
    ]
    at = lambda text: __import__("datetime").datetime.strptime(text, "%Y-%m-%d %H:%M:%S%z").timestamp()  # noqa: E731
    assert released_at(rows, at("2026-01-01 09:59:59+0000")) is None
    assert released_at(rows, at("2026-01-01 10:00:00+0000"))["version"] == "1.0.0"
    assert released_at(rows, at("2026-01-03 12:00:00+0000"))["version"] == "1.1.0"  # the failed 1.2.0 changed nothing
    assert released_at(rows, at("2026-01-05 00:00:00+0000"))["version"] == "1.0.0"  # rolled back to it


def test_the_checksum_file_is_what_the_drill_checks(drilled):
    _, _, newest = drilled
    sidecar = newest.with_name(newest.name + ".sha256")
    assert sidecar.read_text().split()[0] == sha256_file(newest)
    sidecar.unlink()  # an encrypted backup must have one
    _, report = run_drill()
    detail = by_name(report)["backup"].detail
    assert detail.startswith("checksum: ") and "has no .sha256 file" in detail


def _plain_dump(cluster, target: Path) -> bytes:
    command = host_tools(cluster).command("pg_dump", "--format=plain", timeout_s=60)
    dumped = subprocess.run(command.argv, env=dict(command.env), check=True, timeout=60, capture_output=True).stdout
    target.write_bytes(dumped)
    return dumped


def test_a_plain_sql_dump_is_drilled_with_pg_dumps_own_restrict_lines(drilled):
    cluster, _, newest = drilled
    dumped = _plain_dump(cluster, newest.with_name("drill-nightly.sql"))
    assert b"\\restrict " in dumped  # pg_dump 15.14 and later
    state, report = run_drill()
    assert state.is_completed(), report.markdown()
    assert by_name(report)["restore"].detail.startswith("drill-nightly.sql restored into")
    assert report.facts.drill.tables["public.accounts"] == 3


@pytest.mark.parametrize("planted", ["\\! touch {marker}", "\\c {live}\nDROP TABLE accounts;",
                                     "SELECT 1; \\! touch {marker}", "\\unrestrict {key}\n\\! touch {marker}"])
def test_a_plain_sql_file_planted_in_the_backup_dir_runs_no_meta_command(drilled, tmp_path, planted):
    """Issue 31: the drill fed any file in BACKUP_DIR to psql: `\\!` ran a shell on the
    worker's host, `\\c` reached the live database. Now every meta-command is refused."""
    cluster, _, newest = drilled
    before, marker = live_state(cluster), tmp_path / "owned"
    dumped = _plain_dump(cluster, tmp_path / "genuine.sql")
    key = re.search(rb"\\restrict (\w+)", dumped).group(1).decode()
    evil = planted.format(marker=marker, live=DB_NAME, key=key).encode()
    head, _, tail = dumped.partition(b"SET statement_timeout")
    newest.with_name("drill-nightly.sql").write_bytes(head + evil + b"\nSET statement_timeout" + tail)
    state, report = run_drill()
    restore = by_name(report)["restore"]
    assert restore.status == Status.FAILED and "restrict" in restore.detail, restore.detail
    assert not marker.exists()
    assert live_state(cluster) == before and scratch_databases(cluster) == [] and state.is_failed()
