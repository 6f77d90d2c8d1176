"""Preflight `backups`: the latest logical backup exists, is fresh, and reads whole."""

import time
from pathlib import Path

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.backup_files import BackupUnreadable, backup_size, newest_backup, read_whole
from tasks.pg_client import pg_tools
from tasks.runbook_task import runbook_task

STEP = "backups"


def check_backups(env: Environment, now: float | None = None) -> Finding:
    if not env.app.backup_dir:
        raise StepFailed(STEP, "BACKUP_DIR is not set")
    directory = Path(env.app.backup_dir)
    if not directory.is_dir():
        raise StepFailed(STEP, f"BACKUP_DIR {directory} is not a directory")
    latest = newest_backup(directory)
    if latest is None:
        raise StepFailed(STEP, f"no backup in {directory}")
    size = backup_size(latest)
    if size == 0:
        raise StepFailed(STEP, f"newest backup {latest.name} is empty")
    age_h = ((now if now is not None else time.time()) - latest.stat().st_mtime) / 3600
    limit = env.target.backup_max_age_hours
    if age_h > limit:
        raise StepFailed(STEP, f"newest backup {latest.name} is {age_h:.1f} h old, older than {limit:g} h")
    try:
        passphrase = env.app.backup_passphrase.get_secret_value() if env.app.backup_passphrase else None
        fmt = read_whole(latest, passphrase, env.target.backup_timeout_s, pg_tools(env, STEP, server=False))
    except BackupUnreadable as exc:
        raise StepFailed(STEP, f"newest backup {latest.name} is unreadable: {exc}") from None
    return Finding(detail=f"{latest.name}: {fmt}, {size} bytes, {age_h:.1f} h old, read whole")


# No task time limit of its own: pg_restore is stopped after RELEASE_BACKUP_TIMEOUT_S.
backups_task = runbook_task(STEP, timeout_s=None)(check_backups)
