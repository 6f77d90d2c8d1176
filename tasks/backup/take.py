"""Runbook, "Rollback plan (code + DB)": a logical backup before the schema changes.

A release with pending migrations takes its own backup: pg_dump (custom format)
encrypted with BACKUP_PASSPHRASE into BACKUP_DIR as `<env>-<version>-<UTC>.dump.enc`,
its SHA-256 beside it, then read whole before anything is launched. A release with
nothing to migrate relies on the newest backup, which must be fresh.
"""

import errno
import re
import time
from datetime import datetime, timezone
from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks.backup.crypto import recorded_checksum, sha256_file
from smartrelease.tasks.backup.files import BackupError, BackupUnreadable, dump_database_encrypted, newest_backup, read_whole
from smartrelease.tasks.pg_client import pg_tools
from smartrelease.tasks.runbook_task import runbook_task

STEP = "backup"
SAFETY_STEP = "safety-backup"


class BackupRecord(Finding):
    name: str
    path: str
    sha256: str
    taken_at: float  # epoch seconds (the file's mtime)
    taken_now: bool  # taken by this run, not found

    def age_s(self, now: float | None = None) -> float:
        return (now if now is not None else time.time()) - self.taken_at


def backup_name(environment: str, label: str, now: datetime | None = None) -> str:
    """`label` is a version, and for a safety backup the running image's version label,
    which whoever built the image chose: only letters, digits, `.`, `_` and `-` of it
    are kept, so the name stays a file of BACKUP_DIR."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    label = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:64].lstrip(".") or "unknown"
    return f"{environment}-{label}-{stamp}.dump.enc"


def _passphrase(env: Environment, step: str) -> str:
    if not env.app.backup_passphrase or not env.app.backup_passphrase.get_secret_value():
        raise StepFailed(step, "BACKUP_PASSPHRASE is not set: backups are encrypted at rest with it")
    return env.app.backup_passphrase.get_secret_value()


def _directory(env: Environment, step: str) -> Path:
    if not env.app.backup_dir or not Path(env.app.backup_dir).is_dir():
        raise StepFailed(step, f"BACKUP_DIR {env.app.backup_dir or '(unset)'} is not a directory")
    return Path(env.app.backup_dir)


def take_backup(env: Environment, label: str, step: str) -> BackupRecord:
    """Dump, encrypt, checksum, then read the result whole; the record names it."""
    directory, passphrase = _directory(env, step), _passphrase(env, step)
    tools = pg_tools(env, step)
    target = directory / backup_name(env.name, label)
    try:
        digest = dump_database_encrypted(tools, target, passphrase, env.target.backup_timeout_s)
        read_whole(target, passphrase, env.target.backup_timeout_s, tools)
    except BackupUnreadable as exc:
        raise StepFailed(step, f"backup {target.name} was written but does not read back: {exc}") from None
    except BackupError as exc:
        raise StepFailed(step, f"backup failed: {exc}", transient=True) from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StepFailed(step, f"disk full: no space left in BACKUP_DIR {directory} for {target.name} "
                                   f"({exc.strerror}); the partial file was removed") from None
        raise StepFailed(step, f"backup failed: cannot write {target.name} in BACKUP_DIR {directory}: "
                               f"{exc.strerror or exc}", transient=True) from None
    size = target.stat().st_size
    return BackupRecord(detail=f"{target.name}: {size} bytes, sha256 {digest[:12]}…, read whole",
                        name=target.name, path=str(target), sha256=digest, taken_at=target.stat().st_mtime, taken_now=True)


def fresh_backup(env: Environment) -> BackupRecord:
    """The newest backup in BACKUP_DIR, when it is younger than backup_max_age_hours
    (the preflight `backups` check has read it whole)."""
    directory = _directory(env, STEP)
    latest = newest_backup(directory)
    if latest is None or not latest.is_file():
        raise StepFailed(STEP, f"no backup file in {directory}: the rollback plan has no backup")
    age_h = (time.time() - latest.stat().st_mtime) / 3600
    if age_h > env.target.backup_max_age_hours:
        raise StepFailed(STEP, f"newest backup {latest.name} is {age_h:.1f} h old: the rollback plan has no fresh backup")
    digest = recorded_checksum(latest) or sha256_file(latest)
    return BackupRecord(detail=f"nothing to migrate; newest backup {latest.name} ({age_h:.1f} h old)",
                        name=latest.name, path=str(latest), sha256=digest, taken_at=latest.stat().st_mtime, taken_now=False)


def release_backup(env: Environment, version: str, pending: list[str]) -> BackupRecord:
    return take_backup(env, version, STEP) if pending else fresh_backup(env)


def safety_backup(env: Environment, version: str) -> BackupRecord:
    """Before undoing migrations: the database as it is now, rows written since the deploy included."""
    return take_backup(env, f"{version}-before-undo", SAFETY_STEP)


# No task time limit of their own: pg_dump and pg_restore are stopped after RELEASE_BACKUP_TIMEOUT_S.
release_backup_task = runbook_task(STEP, timeout_s=None, retries=1, retry_delay_s=5)(release_backup)
safety_backup_task = runbook_task(SAFETY_STEP, timeout_s=None, retries=1, retry_delay_s=5)(safety_backup)
