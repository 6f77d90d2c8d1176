"""A restore drill's checks: nobody's backup is proven until it has been restored.

backup (the newest in BACKUP_DIR, its checksum) -> wal-age -> scratch -> restore
(into the scratch database: the RTO) -> migrations (the backup's migrations table
against the migration files of the version the history says ran when it was taken)
-> tables (each read, its rows counted; the schema's fingerprint; against the live
database when both are at the same migrations) -> drop-scratch.

Everything reads the live database or writes the scratch one (tasks/scratch_database.py).
"""

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import docker
import psycopg
from psycopg import sql

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks.backup.crypto import BackupIntegrityError, recorded_checksum, verify_checksum
from smartrelease.tasks.backup.files import (BackupError, ChecksumFailed, DecryptionFailed, backup_size, dump_format, newest_backup,
                                restore_into)
from smartrelease.adapters.images import engine, ensure_local
from smartrelease.tasks.migrations import migration_files, migrations_in
from smartrelease.tasks.pg_client import on_database, pg_tools
from smartrelease.adapters.postgres import connect, connect_url
from smartrelease.record.history import deployed
from smartrelease.tasks.runbook_task import runbook_task
from smartrelease.tasks.scratch_database import scratch_url
from smartrelease.tasks.schema import describe, differences, fingerprint, schema_of

BACKUP_STEP, WAL_STEP, RESTORE_STEP = "backup", "wal-age", "restore"
MIGRATIONS_STEP, TABLES_STEP = "migrations", "tables"


class DrillBackup(Finding):
    name: str
    path: str
    format: str
    size: int
    taken_at: float  # the file's mtime, epoch seconds
    age_s: float  # at the drill: the RPO of a restore from this backup alone
    sha256: str | None  # None: no checksum file beside it (a plain dump another tool wrote)


def pick_backup(env: Environment, now: float | None = None) -> DrillBackup:
    """The newest backup, its checksum checked when it has one (an encrypted one must)."""
    if not env.app.backup_dir or not Path(env.app.backup_dir).is_dir():
        raise StepFailed(BACKUP_STEP, f"BACKUP_DIR {env.app.backup_dir or '(unset)'} is not a directory")
    directory = Path(env.app.backup_dir)
    latest = newest_backup(directory)
    if latest is None:
        raise StepFailed(BACKUP_STEP, f"no backup in {directory}: there is nothing to restore")
    fmt = dump_format(latest)
    sha = None
    if latest.is_file() and (fmt == "encrypted" or recorded_checksum(latest) is not None):
        try:
            sha = verify_checksum(latest)
        except BackupIntegrityError as exc:
            raise StepFailed(BACKUP_STEP, f"checksum: {exc}") from None
    taken_at = latest.stat().st_mtime
    age_s = (now if now is not None else time.time()) - taken_at
    size = backup_size(latest)
    checked = f"sha256 {sha[:12]}… matches" if sha else "no checksum file to check it against"
    return DrillBackup(detail=f"{latest.name}: {fmt}, {size} bytes, {age_s / 3600:.1f} h old, {checked}",
                       warning=sha is None, name=latest.name, path=str(latest), format=fmt, size=size,
                       taken_at=taken_at, age_s=age_s, sha256=sha)


class WalAge(Finding):
    age_s: float | None = None


_ARCHIVER = """SELECT current_setting('archive_mode'), last_archived_wal,
                      extract(epoch FROM now() - last_archived_time)::float8 FROM pg_stat_archiver"""


def wal_age(env: Environment) -> WalAge:
    """The age of the newest WAL segment the live server archived: with WAL replay, at
    most that much would be lost."""
    try:
        with connect(env, WAL_STEP) as conn:
            mode, last, age = conn.execute(_ARCHIVER).fetchone()
    except psycopg.Error as exc:
        raise StepFailed(WAL_STEP, f"cannot read pg_stat_archiver: {type(exc).__name__}", transient=True) from None
    if mode == "off":
        return WalAge(detail="archive_mode is off: a restore loses everything since the backup", warning=True)
    if last is None:
        return WalAge(detail=f"archive_mode={mode}, but no WAL segment archived yet", warning=True)
    return WalAge(detail=f"newest archived segment {last} is {age:.0f} s old", age_s=age)


class Restored(Finding):
    seconds: float
    format: str


def restore_backup(env: Environment, backup: DrillBackup, scratch: str) -> Restored:
    """Restore `backup` into the scratch database; its time is the RTO."""
    tools = on_database(pg_tools(env, RESTORE_STEP), scratch_url(env, scratch, RESTORE_STEP).dbname)
    passphrase = env.app.backup_passphrase.get_secret_value() if env.app.backup_passphrase else None
    started = time.monotonic()
    try:
        fmt = restore_into(Path(backup.path), passphrase, tools, env.target.backup_timeout_s)
    except ChecksumFailed as exc:
        raise StepFailed(RESTORE_STEP, f"checksum: {exc}") from None
    except DecryptionFailed as exc:
        raise StepFailed(RESTORE_STEP, f"decryption: {exc}") from None
    except BackupError as exc:
        raise StepFailed(RESTORE_STEP, f"restore error: {exc}") from None
    seconds = time.monotonic() - started
    return Restored(detail=f"{backup.name} restored into {scratch} in {seconds:.1f} s (pg_restore of {tools.where})",
                    seconds=seconds, format=fmt)


class BackupMigrations(Finding):
    applied: list[str]
    released_version: str | None = None


def _finished_at(row: dict) -> float | None:
    try:
        return datetime.strptime(row.get("finished", ""), "%Y-%m-%d %H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def released_at(rows: list[dict], when: float) -> dict | None:
    """The history's row of what ran at `when`: the top of the deployment stack made
    of the rows finished by then."""
    before = [r for r in rows if (t := _finished_at(r)) is not None and t <= when]
    stack = deployed(before)
    return stack[-1] if stack else None


def in_progress_at(rows: list[dict], when: float) -> dict | None:
    """The first run to finish after `when`: one that may have been under way then (a
    release applying its migrations when a backup of its own rollback was taken)."""
    return next((r for r in rows if (t := _finished_at(r)) is not None and t > when), None)


def _scratch_conn(env: Environment, scratch: str, step: str) -> psycopg.Connection:
    conn = connect_url(scratch_url(env, scratch, step), step)
    # Counting a large table may take longer than the tool's usual 60 s per statement.
    conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(f"{int(env.target.backup_timeout_s)}s")))
    return conn


def check_migrations(env: Environment, scratch: str, taken_at: float, rows: list[dict]) -> BackupMigrations:
    table = env.target.migrations_table
    with _scratch_conn(env, scratch, MIGRATIONS_STEP) as conn:
        applied = migrations_in(conn, table)
    if applied is None:
        raise StepFailed(MIGRATIONS_STEP, f'missing tables: the backup has no "{table}" (the migrations table): '
                                          "it is not a backup of the app's database")
    row = released_at(rows, taken_at)
    if row is None or not row.get("backend"):
        return BackupMigrations(detail=f"{len(applied)} migration(s); the history names no release before the "
                                       "backup was taken: not compared", warning=True, applied=applied)
    version, image = row["version"], row["backend"]
    client = engine()
    try:
        ensure_local(client, image, env.registry_credentials)
        expected = sorted(migration_files(client, image, env.target.migrations_dir))
    except (docker.errors.DockerException, StepFailed) as exc:
        raise StepFailed(MIGRATIONS_STEP, f"cannot read {version}'s migrations from {image}: "
                                          f"{getattr(exc, 'reason', exc)}", transient=True) from None
    missing = [m for m in expected if m not in applied]
    extra = [m for m in applied if m not in expected]
    # Migrations of a run under way when the backup was taken (its safety backup before
    # an undo) are accounted for by that run's row.
    under_way = in_progress_at(rows, taken_at) or {}
    its = {n.strip() for c in ("migrations", "migrations_undone", "migrations_left") for n in (under_way.get(c) or "").split(",")}
    explained = [m for m in extra if m in its]
    extra = [m for m in extra if m not in explained]
    if missing or extra:
        said = [f"missing {', '.join(missing)}" if missing else "", f"not in its image: {', '.join(extra)}" if extra else ""]
        raise StepFailed(MIGRATIONS_STEP, f'"{table}" in the backup does not match {version}, which ran when it was '
                                          f"taken ({row.get('finished')}): {'; '.join(s for s in said if s)}")
    also = (f", and {', '.join(explained)} of the run under way then ({under_way.get('flow_run') or under_way['version']})"
            if explained else "")
    return BackupMigrations(detail=f"{len(applied)} migration(s): those of {version}, which ran when it was taken "
                                   f"(released {row.get('finished')}){also}", applied=applied, released_version=version)


class BackupTables(Finding):
    rows: dict[str, int]
    schema_fingerprint: str


_TABLES = """SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg\\_toast%' AND NOT c.relispartition ORDER BY 1, 2"""


@dataclass(frozen=True)
class _Database:
    tables: list[tuple[str, str]]
    schema: list[str]
    migrations: list[str] | None


def _read(conn: psycopg.Connection, table: str) -> _Database:
    return _Database([tuple(r) for r in conn.execute(_TABLES)], schema_of(conn), migrations_in(conn, table))


def check_tables(env: Environment, scratch: str) -> BackupTables:
    """Every table of the restored backup is read and its rows counted. When the live
    database is at the same migrations it must have no table the backup lacks, and a
    schema that differs is named (a change made by hand)."""
    table = env.target.migrations_table
    counts: dict[str, int] = {}
    with _scratch_conn(env, scratch, TABLES_STEP) as conn:
        restored = _read(conn, table)
        if not restored.tables:
            raise StepFailed(TABLES_STEP, "missing tables: the restored backup holds no table at all")
        for schema, name in restored.tables:
            try:
                counts[f"{schema}.{name}"] = conn.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))).fetchone()[0]
            except psycopg.Error as exc:
                raise StepFailed(TABLES_STEP, f"table {schema}.{name} is not readable: {type(exc).__name__}") from None
    try:
        with connect(env, TABLES_STEP) as live_conn:
            live = _read(live_conn, table)
    except psycopg.Error as exc:
        raise StepFailed(TABLES_STEP, f"cannot read the live database's tables: {type(exc).__name__}",
                         transient=True) from None
    print_ = fingerprint(restored.schema)
    detail = f"{len(counts)} tables read, {sum(counts.values())} rows; schema {print_} ({len(restored.schema)} objects)"
    if live.migrations != restored.migrations:
        return BackupTables(detail=detail + "; the live database is at other migrations: not compared with it",
                            rows=counts, schema_fingerprint=print_)
    missing = [f"{s}.{n}" for s, n in live.tables if (s, n) not in restored.tables]
    if missing:
        raise StepFailed(TABLES_STEP, f"missing tables: {', '.join(missing)} (the live database, at the same "
                                      "migrations, has them; the backup does not)")
    diff = differences(restored.schema, live.schema)
    if diff:
        return BackupTables(detail=detail + f"; the live schema ({fingerprint(live.schema)}) differs at the same "
                                            f"migrations, by {len(diff)}: {describe(diff)}",
                            warning=True, rows=counts, schema_fingerprint=print_)
    return BackupTables(detail=detail + ", as the live database's", rows=counts, schema_fingerprint=print_)


pick_backup_task = runbook_task(BACKUP_STEP, timeout_s=None)(pick_backup)  # checksumming is bounded by the file
wal_age_task = runbook_task(WAL_STEP, timeout_s=30, retries=2, retry_delay_s=2)(wal_age)
# No time limit of its own: pg_restore and psql are stopped after RELEASE_BACKUP_TIMEOUT_S.
restore_backup_task = runbook_task(RESTORE_STEP, timeout_s=None)(restore_backup)
check_migrations_task = runbook_task(MIGRATIONS_STEP, timeout_s=300, retries=1, retry_delay_s=2)(check_migrations)
check_tables_task = runbook_task(TABLES_STEP, timeout_s=None)(check_tables)
